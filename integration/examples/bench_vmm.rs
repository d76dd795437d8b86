//! Benchmark: vessel-vmm against the QEMU microvm reference, same guest,
//! and vessel-vmm jailed (its default) against `--jail off`: the jail's
//! cost.
//!
//! `cargo run --release -p vessel-integration --example bench_vmm [-- --rounds N]`
//!
//! Each round boots the test guest (1 vCPU, 128 MiB) once under each VMM,
//! alternating vessel, vessel unjailed, qemu, vessel... so host load hits
//! all alike. It
//! measures the wall time from spawning the VMM to the console line with
//! `VESSEL-TEST-INIT-START`, and at that moment reads the VMM's
//! `/proc/<pid>/status` and `/proc/<pid>/smaps`: the VMM's overhead is its
//! VmRSS less the resident part of the guest-RAM mapping (plus the PSS of
//! a jailed vessel-vmm's monitor process). Then it waits for
//! the guest's reboot to end the VMM with status 0.
//!
//! The harness builds the release vessel-vmm it runs (`target/harness/`).

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use vessel_integration::report::START_MARKER;
use vessel_integration::{guest_kernel, positive_flag, test_initramfs, BootSpec, Runner};
use vessel_vmm_client::HostProfile;

/// Longest a VMM may take from spawn to exit.
const TIMEOUT: Duration = Duration::from_secs(300);
/// Guest memory for both VMMs.
const MEMORY_MIB: u32 = 128;
/// The guest-RAM mapping may be this much larger than the guest memory.
const RAM_SLACK_KIB: u64 = 8 * 1024;
/// Firecracker's published per-VM memory overhead target.
const FIRECRACKER_TARGET_MIB: f64 = 5.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Vmm {
    Vessel,
    VesselUnjailed,
    Qemu,
}

impl Vmm {
    fn name(self) -> &'static str {
        match self {
            Vmm::Vessel => "vessel-vmm",
            Vmm::VesselUnjailed => "vessel-nojail",
            Vmm::Qemu => "qemu-microvm",
        }
    }
}

/// What one boot measured.
#[derive(Debug, Clone)]
struct Sample {
    to_init: Duration,
    /// VmRSS of the VMM process, KiB.
    rss_kib: u64,
    /// Rss of the guest-RAM mapping, KiB.
    guest_rss_kib: u64,
    /// VmHWM of the VMM process, KiB.
    hwm_kib: u64,
    status: ExitStatus,
}

impl Sample {
    fn overhead_kib(&self) -> u64 {
        self.rss_kib.saturating_sub(self.guest_rss_kib)
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn main() -> Result<()> {
    let rounds = positive_flag("--rounds", 3, "bench_vmm [--rounds N]")? as usize;
    let profile = HostProfile::detect()?;
    eprintln!("bench_vmm: building (or reusing) the guest kernel and initramfs");
    let mut spec = BootSpec::new(guest_kernel()?, test_initramfs()?);
    spec.vcpus = 1;
    spec.memory_mib = MEMORY_MIB;

    let memory_kib = u64::from(MEMORY_MIB) * 1024;
    let mut samples: Vec<(usize, Vmm, Sample)> = Vec::new();
    println!(
        "host profile {profile}; {rounds} rounds; guest 1 vCPU, {MEMORY_MIB} MiB; kernel {}",
        spec.kernel.display()
    );
    println!(
        "{:>5}  {:<12} {:>10} {:>10} {:>13} {:>13} {:>10}  exit",
        "round", "vmm", "to-init s", "VmRSS MiB", "guest-RAM MiB", "overhead MiB", "VmHWM MiB"
    );
    for round in 1..=rounds {
        for vmm in [Vmm::Vessel, Vmm::VesselUnjailed, Vmm::Qemu] {
            let runner = match vmm {
                Vmm::Vessel => Runner::VesselVmm,
                Vmm::VesselUnjailed => Runner::VesselVmmUnjailed,
                Vmm::Qemu => Runner::QemuMicrovm,
            };
            let sample = measure(runner, &spec, memory_kib)
                .with_context(|| format!("round {round}, {}", vmm.name()))?;
            println!(
                "{round:>5}  {:<12} {:>10.2} {:>10.1} {:>13.1} {:>13.1} {:>10.1}  {}",
                vmm.name(),
                sample.to_init.as_secs_f64(),
                mib(sample.rss_kib),
                mib(sample.guest_rss_kib),
                mib(sample.overhead_kib()),
                mib(sample.hwm_kib),
                sample.status
            );
            samples.push((round, vmm, sample));
        }
    }

    let of = |vmm: Vmm| {
        samples
            .iter()
            .filter(move |(_, v, _)| *v == vmm)
            .map(|(_, _, s)| s)
    };
    let time = |vmm: Vmm| median(of(vmm).map(|s| s.to_init.as_secs_f64()).collect());
    let overhead = |vmm: Vmm| median(of(vmm).map(|s| mib(s.overhead_kib())).collect());
    let (tv, tq) = (time(Vmm::Vessel), time(Vmm::Qemu));
    let (ov, oq) = (overhead(Vmm::Vessel), overhead(Vmm::Qemu));
    let (tu, ou) = (time(Vmm::VesselUnjailed), overhead(Vmm::VesselUnjailed));
    println!();
    println!("summary (medians over {rounds} rounds):");
    println!(
        "  time to init:  vessel-vmm {tv:.2} s, qemu-microvm {tq:.2} s, vessel/qemu {:.2}",
        tv / tq
    );
    println!(
        "  RSS overhead:  vessel-vmm {ov:.1} MiB, qemu-microvm {oq:.1} MiB, vessel/qemu {:.2}",
        ov / oq
    );
    println!(
        "  the jail:      time to init {tv:.2} s jailed, {tu:.2} s not, jailed/not {:.3}; \
         RSS overhead {ov:.1} MiB jailed, {ou:.1} MiB not (+{:.2} MiB)",
        tv / tu,
        ov - ou
    );
    let verdict = if ov < FIRECRACKER_TARGET_MIB {
        "met"
    } else {
        "NOT met"
    };
    println!(
        "  target (Firecracker): overhead < {FIRECRACKER_TARGET_MIB} MiB per VM; vessel-vmm {ov:.1} MiB: {verdict}"
    );

    let failed: Vec<_> = samples
        .iter()
        .filter(|(_, _, s)| !s.status.success())
        .map(|(round, vmm, s)| format!("round {round} {}: {}", vmm.name(), s.status))
        .collect();
    ensure!(
        failed.is_empty(),
        "VMMs exited unsuccessfully: {}",
        failed.join("; ")
    );
    Ok(())
}

/// The median; the mean of the middle two for an even count.
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => values[n / 2],
        _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// Boots one guest with `cmd` and measures it.
fn measure(runner: Runner, spec: &BootSpec, memory_kib: u64) -> Result<Sample> {
    let guest = runner.spawn(spec)?;
    let pid = guest.pid();
    let deadline = Instant::now() + TIMEOUT;
    let to_init = loop {
        if let Some(t) = guest.to_init_marker() {
            break t;
        }
        if Instant::now() >= deadline {
            let out = guest.wait(Duration::ZERO);
            bail!("no {START_MARKER} within {TIMEOUT:?}: {:?}", out.err());
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    // A jailed vessel-vmm runs the VM in its monitor's child.
    let vm_pid = vessel_vmm_client::jail::vmm_pid(pid);
    // The monitor, a fork of the VMM before any VM existed, shares most of
    // its pages with it: what it adds is its PSS.
    let monitor_rss_kib = if vm_pid == pid {
        0
    } else {
        let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
        status_kib(&rollup, "Pss").context("no Pss in the monitor's smaps_rollup")?
    };
    let pid = vm_pid;
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    let read = |name: &str| {
        std::fs::read_to_string(proc_dir.join(name))
            .with_context(|| format!("read /proc/{pid}/{name} (did the VMM exit at once?)"))
    };
    let (smaps, status) = (read("smaps")?, read("status")?);
    let rss_kib =
        status_kib(&status, "VmRSS").context("no VmRSS in /proc/<pid>/status")? + monitor_rss_kib;
    let hwm_kib = status_kib(&status, "VmHWM").context("no VmHWM in /proc/<pid>/status")?;
    let Some(guest_rss_kib) = guest_ram_rss_kib(&smaps, memory_kib) else {
        bail!(
            "no mapping of {memory_kib}..={} KiB (the guest RAM) in /proc/{pid}/smaps",
            memory_kib + RAM_SLACK_KIB
        );
    };
    let out = guest.wait(TIMEOUT)?;
    if !out.status.success() {
        eprintln!(
            "bench_vmm: the VMM exited with {}\n{}",
            out.status, out.stderr
        );
    }
    Ok(Sample {
        to_init,
        rss_kib,
        guest_rss_kib,
        hwm_kib,
        status: out.status,
    })
}

/// A `Key:   N kB` value of `/proc/<pid>/status`.
fn status_kib(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Rss of the guest-RAM mapping in `/proc/<pid>/smaps`: the largest mapping
/// whose size is within `[memory, memory + RAM_SLACK]`.
fn guest_ram_rss_kib(smaps: &str, memory_kib: u64) -> Option<u64> {
    // (Size, Rss) of each mapping, in KiB.
    let mut mappings: Vec<(u64, u64)> = Vec::new();
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let Some(first) = fields.next() else { continue };
        let value = fields.next().and_then(|v| v.parse::<u64>().ok());
        match (first, value) {
            (key, _) if !key.ends_with(':') => mappings.push((0, 0)),
            ("Size:", Some(v)) => {
                if let Some(m) = mappings.last_mut() {
                    m.0 = v;
                }
            }
            ("Rss:", Some(v)) => {
                if let Some(m) = mappings.last_mut() {
                    m.1 = v;
                }
            }
            _ => {}
        }
    }
    mappings
        .into_iter()
        .filter(|(size, _)| (memory_kib..=memory_kib + RAM_SLACK_KIB).contains(size))
        .max()
        .map(|(_, rss)| rss)
}

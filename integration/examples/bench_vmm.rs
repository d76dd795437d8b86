//! Benchmark: vessel-vmm against the QEMU microvm reference, same guest.
//!
//! `cargo run --release -p vessel-integration --example bench_vmm [-- --rounds N]`
//!
//! Each round boots the test guest (1 vCPU, 128 MiB) once under each VMM,
//! alternating vessel, qemu, vessel, qemu... so host load hits both alike. It
//! measures the wall time from spawning the VMM to the console line with
//! `VESSEL-TEST-INIT-START`, and at that moment reads the VMM's
//! `/proc/<pid>/status` and `/proc/<pid>/smaps`: the VMM's overhead is its
//! VmRSS less the resident part of the guest-RAM mapping. Then it waits for
//! the guest's reboot to end the VMM with status 0.
//!
//! The vessel-vmm binary is `cargo build --release`d into the target
//! directory this example runs from; `VESSEL_VMM_BIN=PATH` skips the build.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use vessel_integration::report::START_MARKER;
use vessel_integration::{guest_kernel, test_initramfs, GuestSpec, Runner};
use vessel_vmm::profile::HostProfile;

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
    Qemu,
}

impl Vmm {
    fn name(self) -> &'static str {
        match self {
            Vmm::Vessel => "vessel-vmm",
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
    let rounds = parse_rounds()?;
    let profile = HostProfile::detect()?;
    let vessel_bin = vessel_vmm_binary()?;
    eprintln!("bench_vmm: vessel-vmm is {}", vessel_bin.display());
    eprintln!("bench_vmm: building (or reusing) the guest kernel and initramfs");
    let mut spec = GuestSpec::new(guest_kernel()?, test_initramfs()?);
    spec.vcpus = 1;
    spec.memory_mib = MEMORY_MIB;

    // The harness's vessel-vmm command line, run with the binary built above.
    let vessel_cmd = Runner::VesselVmm.command(&spec, profile)?;
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
        for vmm in [Vmm::Vessel, Vmm::Qemu] {
            let cmd = match vmm {
                Vmm::Vessel => with_program(&vessel_cmd, &vessel_bin),
                Vmm::Qemu => Runner::QemuMicrovm.command(&spec, profile)?,
            };
            let sample = measure(cmd, memory_kib)
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

fn parse_rounds() -> Result<usize> {
    let mut rounds = 3;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--rounds" => {
                let value = args.next().context("--rounds: missing value")?;
                rounds = value
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .with_context(|| format!("--rounds: {value:?} is not a positive number"))?;
            }
            other => bail!("unknown option {other}; usage: bench_vmm [--rounds N]"),
        }
    }
    Ok(rounds)
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

/// `cmd` with its program replaced by `program` (same args, env and dir), so
/// the benchmark runs the vessel-vmm it just built.
fn with_program(cmd: &Command, program: &Path) -> Command {
    let mut out = Command::new(program);
    out.args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(value) => out.env(key, value),
            None => out.env_remove(key),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        out.current_dir(dir);
    }
    out
}

/// The release vessel-vmm binary, built into the target directory this
/// example was built in (`<target>/release/examples/bench_vmm` ->
/// `<target>/release/vessel-vmm`).
fn vessel_vmm_binary() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("VESSEL_VMM_BIN") {
        return Ok(bin.into());
    }
    let exe = std::env::current_exe().context("locate this example")?;
    let target_dir = exe
        .parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .with_context(|| format!("{} is not in <target>/<profile>/examples", exe.display()))?
        .to_path_buf();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("integration/ has a parent")?;
    eprintln!(
        "bench_vmm: cargo build --release -p vessel-vmm into {}",
        target_dir.display()
    );
    let status = Command::new(cargo)
        .current_dir(root)
        .args([
            "build",
            "--release",
            "-p",
            "vessel-vmm",
            "--bin",
            "vessel-vmm",
        ])
        .env("CARGO_TARGET_DIR", &target_dir)
        .status()
        .context("run cargo build for vessel-vmm")?;
    ensure!(
        status.success(),
        "cargo build of vessel-vmm failed with {status}"
    );
    let bin = target_dir.join("release").join("vessel-vmm");
    ensure!(bin.is_file(), "the build left no {}", bin.display());
    Ok(bin)
}

/// A VMM process; dropping it kills the process if it is still running.
struct Vm {
    child: Child,
    readers: Vec<JoinHandle<String>>,
}

impl Drop for Vm {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Vm {
    /// Kills the VMM and returns what it printed, for an error message.
    fn kill_and_output(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let outputs: Vec<String> = self
            .readers
            .drain(..)
            .map(|r| r.join().unwrap_or_default())
            .collect();
        let tail = |s: &str| {
            let lines: Vec<&str> = s.lines().collect();
            lines[lines.len().saturating_sub(20)..].join("\n")
        };
        format!(
            "console tail:\n{}\nstderr tail:\n{}",
            tail(&outputs[0]),
            tail(&outputs[1])
        )
    }
}

/// Boots one guest with `cmd` and measures it.
fn measure(mut cmd: Command, memory_kib: u64) -> Result<Sample> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("start {:?}", cmd.get_program()))?;
    let pid = child.id();
    let (marker_tx, marker_rx) = mpsc::channel();
    let stdout = child.stdout.take().context("no stdout pipe")?;
    let stderr = child.stderr.take().context("no stderr pipe")?;
    let console = std::thread::spawn(move || {
        let mut console = String::new();
        let mut sent = false;
        for line in BufReader::new(stdout).split(b'\n').map_while(Result::ok) {
            let line = String::from_utf8_lossy(&line);
            if !sent && line.contains(START_MARKER) {
                let _ = marker_tx.send(start.elapsed());
                sent = true;
            }
            console.push_str(&line);
            console.push('\n');
        }
        console
    });
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = BufReader::new(stderr).read_to_string(&mut text);
        text
    });
    let mut vm = Vm {
        child,
        readers: vec![console, errors],
    };

    let to_init = match marker_rx.recv_timeout(TIMEOUT) {
        Ok(t) => t,
        Err(_) => bail!(
            "no {START_MARKER} within {TIMEOUT:?}\n{}",
            vm.kill_and_output()
        ),
    };
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    let smaps = std::fs::read_to_string(proc_dir.join("smaps"));
    let status = std::fs::read_to_string(proc_dir.join("status"));
    let (smaps, status) = match (smaps, status) {
        (Ok(smaps), Ok(status)) => (smaps, status),
        (Err(e), _) | (_, Err(e)) => {
            bail!(
                "read /proc/{pid}: {e} (did the VMM exit at once?)\n{}",
                vm.kill_and_output()
            )
        }
    };
    let rss_kib = status_kib(&status, "VmRSS").context("no VmRSS in /proc/<pid>/status")?;
    let hwm_kib = status_kib(&status, "VmHWM").context("no VmHWM in /proc/<pid>/status")?;
    let Some(guest_rss_kib) = guest_ram_rss_kib(&smaps, memory_kib) else {
        bail!(
            "no mapping of {memory_kib}..={} KiB (the guest RAM) in /proc/{pid}/smaps",
            memory_kib + RAM_SLACK_KIB
        );
    };

    let status = loop {
        if let Some(status) = vm.child.try_wait().context("wait for the VMM")? {
            break status;
        }
        if start.elapsed() >= TIMEOUT {
            bail!(
                "the VMM did not exit within {TIMEOUT:?}\n{}",
                vm.kill_and_output()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if !status.success() {
        eprintln!(
            "bench_vmm: the VMM exited with {status}\n{}",
            vm.kill_and_output()
        );
    }
    Ok(Sample {
        to_init,
        rss_kib,
        guest_rss_kib,
        hwm_kib,
        status,
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

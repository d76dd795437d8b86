//! Benchmark: a cold boot against a restore from a snapshot, and the memory
//! of N restored VMs against N booted ones.
//!
//! `cargo run --release -p vessel-integration --example bench_snapshot [-- --vms N]`
//!
//! 1. Boots N agent VMs (2 vCPUs, 256 MiB; default 3) one after the other,
//!    each timed from spawning the VMM to the agent's first Check answer.
//!    With all N up and idle, it sums their VMMs' PSS
//!    (`/proc/<pid>/smaps_rollup`).
//! 2. Pauses the first, snapshots it through the API (timed), and shuts all
//!    N down. The first has been idle while the others booted (or for
//!    `BENCH_IDLE_SECS` seconds more): an idle guest gets no interrupt but
//!    the ones the restore raises, which once went missing.
//! 3. Restores N VMs from that one snapshot, one after the other, each
//!    timed from spawning the VMM to the agent's first Check answer (and
//!    the VMM's own figure for reading, checking and building, from its
//!    log); with all N up, sums their PSS. Restored VMs share the memory
//!    file's pages until they write them, so their PSS splits those pages.
//!
//! The harness builds the release vessel-vmm it runs (`target/harness/`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use tempfile::TempDir;
use vessel_agent_protocol::AgentClient;
use vessel_integration::agent::BOOT_TIMEOUT;
use vessel_integration::{
    agent_initramfs, connect_while_running, guest_kernel, positive_flag, vessel_vmm, ApiClient,
    BootSpec, Endpoints, RestoreSpec, RunningGuest,
};
use vessel_vmm_client::{JailSpec, Launch, VmmCommand};

const MEMORY_MIB: u32 = 256;
const EXIT_TIMEOUT: Duration = Duration::from_secs(120);
/// A first call may wait on the agent setting the connection up, which
/// takes seconds on a loaded emulated-CPL0 host.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// One running VM: its VMM, agent connection and socket directory.
struct Vm {
    guest: RunningGuest,
    client: AgentClient,
    dir: TempDir,
    /// Spawn to the first Check answer.
    to_answer: Duration,
}

impl Vm {
    fn api(&self) -> Result<ApiClient> {
        Ok(ApiClient::connect(
            &self.dir.path().join("api.sock"),
            Duration::from_secs(60),
        )?)
    }

    /// PSS of the VMM and its monitor.
    fn pss_kib(&self) -> Result<u64> {
        let processes = vessel_vmm_client::jail::vmm_processes(self.guest.pid());
        processes.into_iter().try_fold(0, |sum, pid| {
            let path = format!("/proc/{pid}/smaps_rollup");
            let text = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
            let pss: u64 = text
                .lines()
                .find_map(|l| l.strip_prefix("Pss:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .with_context(|| format!("no Pss in {path}"))?;
            Ok(sum + pss)
        })
    }

    fn shutdown(self) -> Result<()> {
        self.client.shutdown().context("Shutdown")?;
        let out = self.guest.wait(EXIT_TIMEOUT)?;
        ensure!(out.status.success(), "the VMM exited with {}", out.status);
        Ok(())
    }
}

/// The sockets of a VM in `dir`, its console on the VMM's stdout.
fn endpoints(dir: &TempDir) -> Endpoints {
    Endpoints {
        serial: None,
        ..Endpoints::in_dir(dir.path())
    }
}

/// Starts `launch`, whose sockets are in `dir`, and waits for the agent's
/// first answer.
fn start(launch: Launch, dir: TempDir, jail: JailSpec) -> Result<Vm> {
    let uds = dir.path().join("vsock.sock");
    let mut cmd = VmmCommand::new(vessel_vmm()?)
        .with_jail(jail)
        .command(&launch);
    cmd.env("RUST_LOG", "vessel_vmm=info");
    let spawned = Instant::now();
    let mut guest = RunningGuest::spawn(&mut cmd)?;
    let client = match connect_while_running(&mut guest, &uds, BOOT_TIMEOUT, CALL_TIMEOUT) {
        Ok(client) => client,
        Err(err) => anyhow::bail!("{err:#}\nVMM log:\n{}", guest.vmm_log()),
    };
    let to_answer = spawned.elapsed();
    Ok(Vm {
        guest,
        client,
        dir,
        to_answer,
    })
}

fn boot() -> Result<Vm> {
    let dir = tempfile::tempdir()?;
    let mut spec = BootSpec::new(guest_kernel()?, agent_initramfs()?);
    spec.vcpus = 2;
    spec.memory_mib = MEMORY_MIB;
    spec.endpoints = endpoints(&dir);
    start(Launch::Boot(spec), dir, JailSpec::default())
}

/// Restores the snapshot, jailed (the default) or with `--jail off`.
fn restore(state: &Path, memory: &Path, jailed: bool) -> Result<Vm> {
    let dir = tempfile::tempdir()?;
    let mut spec = RestoreSpec::new(state, memory);
    spec.endpoints = endpoints(&dir);
    let jail = JailSpec {
        disabled: !jailed,
        ..JailSpec::default()
    };
    start(Launch::Restore(spec), dir, jail)
}

/// The VMM's own restore time, from its "snapshot restored" log line.
fn vmm_restore_millis(vm: &Vm) -> Option<u64> {
    let log = strip_ansi(&vm.guest.vmm_log());
    let line = log.lines().find(|l| l.contains("snapshot restored"))?;
    let at = line.find("millis=")? + "millis=".len();
    line[at..].split_whitespace().next()?.parse().ok()
}

/// `text` without its terminal colour sequences (`ESC [ ... m`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The median (the upper one of an even count); zero of none.
fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values.get(values.len() / 2).copied().unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn main() -> Result<()> {
    let n = positive_flag("--vms", 3, "bench_snapshot [--vms N]")? as usize;
    let snapshot_dir = tempfile::tempdir()?;
    let (state, memory): (PathBuf, PathBuf) = (
        snapshot_dir.path().join("state"),
        snapshot_dir.path().join("memory"),
    );

    println!("booting {n} VMs (2 vCPUs, {MEMORY_MIB} MiB, agent) one after the other");
    let mut booted = Vec::with_capacity(n);
    for i in 0..n {
        let vm = boot()?;
        println!("  boot {i}: spawn to agent answer {}", ms(vm.to_answer));
        booted.push(vm);
    }
    let booted_pss: u64 = booted.iter().map(Vm::pss_kib).sum::<Result<u64>>()?;

    if let Ok(idle) = std::env::var("BENCH_IDLE_SECS") {
        std::thread::sleep(Duration::from_secs(idle.parse()?));
    }
    let mut api = booted[0].api()?;
    api.pause()?;
    let info = api.snapshot(&state, &memory)?;
    println!(
        "snapshot: {} ms in the VMM; state {} bytes, memory file {} MiB ({} MiB on disk)",
        info.millis,
        info.state_bytes,
        info.memory_bytes >> 20,
        std::fs::metadata(&memory)
            .map(|m| (std::os::unix::fs::MetadataExt::blocks(&m) * 512) >> 20)
            .unwrap_or(0)
    );
    api.resume()?;
    drop(api);
    let boot_times: Vec<Duration> = booted.iter().map(|vm| vm.to_answer).collect();
    for vm in booted {
        vm.shutdown()?;
    }

    println!(
        "restoring {n} VMs from the snapshot one after the other, each jailed and then \
         with --jail off"
    );
    let mut restored = Vec::with_capacity(n);
    let mut unjailed = Vec::with_capacity(n);
    for i in 0..n {
        for jailed in [true, false] {
            let vm = restore(&state, &memory, jailed)?;
            println!(
                "  restore {i}{}: spawn to agent answer {} (VMM restore {} ms)",
                if jailed { "" } else { " --jail off" },
                ms(vm.to_answer),
                vmm_restore_millis(&vm).map_or("?".into(), |m| m.to_string())
            );
            if jailed {
                restored.push(vm);
            } else {
                unjailed.push(vm);
            }
        }
    }
    let restored_pss: u64 = restored.iter().map(Vm::pss_kib).sum::<Result<u64>>()?;
    let unjailed_pss: u64 = unjailed.iter().map(Vm::pss_kib).sum::<Result<u64>>()?;
    let restore_times: Vec<Duration> = restored.iter().map(|vm| vm.to_answer).collect();
    let unjailed_times: Vec<Duration> = unjailed.iter().map(|vm| vm.to_answer).collect();
    let millis = |vms: &[Vm]| -> Vec<Duration> {
        vms.iter()
            .filter_map(vmm_restore_millis)
            .map(Duration::from_millis)
            .collect()
    };
    let (own_jailed, own_unjailed) = (median(millis(&restored)), median(millis(&unjailed)));
    for vm in restored.into_iter().chain(unjailed) {
        vm.shutdown()?;
    }
    println!();
    println!(
        "the jail, median of {n}: spawn to agent answer {} jailed, {} not; the VMM's own \
         restore {} jailed, {} not; PSS of {n} VMMs {:.1} MiB jailed, {:.1} MiB not",
        ms(median(restore_times.clone())),
        ms(median(unjailed_times)),
        ms(own_jailed),
        ms(own_unjailed),
        restored_pss as f64 / 1024.0,
        unjailed_pss as f64 / 1024.0,
    );
    let (boot_median, restore_median) = (median(boot_times), median(restore_times));
    println!();
    println!(
        "spawn to agent answer, median: boot {}, restore {} (boot/restore {:.0}x)",
        ms(boot_median),
        ms(restore_median),
        boot_median.as_secs_f64() / restore_median.as_secs_f64()
    );
    println!(
        "PSS of {n} VMMs: booted {:.1} MiB, restored {:.1} MiB (restored/booted {:.2})",
        booted_pss as f64 / 1024.0,
        restored_pss as f64 / 1024.0,
        restored_pss as f64 / booted_pss as f64
    );
    Ok(())
}

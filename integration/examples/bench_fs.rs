//! Benchmark: the same file workloads on a virtio-fs share inside the guest
//! and directly on the host, side by side in one run.
//!
//! `cargo run --release -p vessel-integration --example bench_fs
//! [-- --mib N] [--reads N] [--files N]`
//!
//! `vessel-fsprobe bench` runs, in order: a sequential write of N MiB
//! (default 256, 1 MiB writes, fsync), a sequential read of it (page cache
//! dropped first), N random 4 KiB reads of it (default 2000) and a
//! metadata workload: N files (default 10000) created, stat'ed and
//! unlinked. It runs once on the host in a directory next to the share
//! (same file system), then in a container of a VM (vessel-vmm, 2 vCPUs,
//! 512 MiB) whose volume is that share. Printed: each workload's time and
//! rate on both sides and the guest/host time ratio.
//!
//! On an emulated-CPL0 host guest-kernel copies run at about 0.6 MB/s, so
//! the default sizes take most of an hour there; smaller flags give a
//! quick look.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use serde_json::json;
use vessel_integration::agent::container_spec;
use vessel_integration::{positive_flags, static_binary, AgentVm, Container};

const USAGE: &str = "bench_fs [--mib N] [--reads N] [--files N]";
/// A whole workload runs inside one container call.
const CALL_TIMEOUT: Duration = Duration::from_secs(4 * 3600);

/// `bench NAME SECONDS AMOUNT` lines: name → (seconds, amount).
fn parse(text: &str) -> Result<BTreeMap<String, (f64, u64)>> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("bench ")) {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [_, name, secs, amount] = parts.as_slice() else {
            bail!("bad line {line:?}");
        };
        out.insert(name.to_string(), (secs.parse()?, amount.parse()?));
    }
    ensure!(out.len() == 4, "expected 4 workloads in {text:?}");
    Ok(out)
}

fn rate(name: &str, secs: f64, amount: u64) -> String {
    if name.starts_with("seq") {
        format!("{:>10.2} MB/s", amount as f64 / secs / 1e6)
    } else {
        format!("{:>10.0} op/s", amount as f64 / secs)
    }
}

fn main() -> Result<()> {
    let flags = positive_flags(
        &[("--mib", 256), ("--reads", 2000), ("--files", 10000)],
        USAGE,
    )?;
    let (mib, reads, files) = (flags[0], flags[1], flags[2]);
    let probe = static_binary("vessel-test-init", "vessel-fsprobe")?;
    let tmp = tempfile::tempdir()?;
    let (share, host_dir) = (tmp.path().join("share"), tmp.path().join("host"));
    std::fs::create_dir_all(share.join("vol"))?;
    std::fs::create_dir_all(&host_dir)?;
    let args = [mib.to_string(), reads.to_string(), files.to_string()];

    println!("bench_fs: {mib} MiB sequential, {reads} random 4 KiB reads, {files} files");
    let out = Command::new(&probe)
        .arg("bench")
        .arg(&host_dir)
        .args(&args)
        .output()
        .context("run vessel-fsprobe on the host")?;
    ensure!(out.status.success(), "host run: {out:?}");
    let host = parse(&String::from_utf8_lossy(&out.stdout))?;

    let vm = AgentVm::boot_with_share(CALL_TIMEOUT, &share)?;
    let mut spec = container_spec(&[
        "/bin/fsprobe",
        "bench",
        "/vol",
        &args[0],
        &args[1],
        &args[2],
    ]);
    if let Some(mounts) = spec["mounts"].as_array_mut() {
        mounts.push(json!({
            "destination": "/vol", "type": "bind", "source": "vol", "options": ["rbind", "rw"],
        }));
    }
    let run = Container::run(vm.client(), "bench-fs", &spec)?;
    ensure!(run.status == 0, "guest run: {run:?}");
    let guest = parse(&run.stdout_text())?;

    println!(
        "{:<14} {:>10} {:>15} {:>10} {:>15} {:>12}",
        "workload", "host s", "host rate", "guest s", "guest rate", "guest/host"
    );
    for (name, &(host_s, amount)) in &host {
        let (guest_s, _) = guest[name];
        println!(
            "{name:<14} {host_s:>10.3} {} {guest_s:>10.3} {} {:>12.1}",
            rate(name, host_s, amount),
            rate(name, guest_s, amount),
            guest_s / host_s
        );
    }
    Ok(())
}

//! Benchmark: `ctr run --rm IMAGE ID true` through a private containerd,
//! with io.containerd.vessel.v2 against io.containerd.runc.v2, on the same
//! image in one run; where a Vessel start's time goes; and the memory a pod
//! costs on the host (the shim's RSS, the VMM's RSS and PSS). A first
//! Vessel run, timed apart, makes the shim's VM template (or finds it in
//! the cache); the rounds restore their VMs from it.
//!
//! `cargo run --release -p vessel-integration --example bench_shim [-- --rounds N]`

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use vessel_integration::containerd::{Containerd, RUNTIME};
use vessel_integration::positive_flag;

const RUNC: &str = "io.containerd.runc.v2";

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time_run(c: &Containerd, runtime: &str, image: &str, id: &str) -> Result<Duration> {
    let start = Instant::now();
    c.ctr_ok(&["run", "--rm", "--runtime", runtime, image, id, "true"])?;
    Ok(start.elapsed())
}

/// The last `key=N` value in containerd's log.
fn last_logged(log: &str, key: &str) -> Option<u64> {
    log.lines().rev().find_map(|l| {
        let at = l.find(&format!("{key}="))?;
        let digits: String = l[at + key.len() + 1..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    })
}

/// `VmRSS` or `Pss` (kB) from a proc file.
fn kb(path: &str, key: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.lines().find_map(|l| {
        l.strip_prefix(key)?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    })
}

fn main() -> Result<()> {
    let rounds = positive_flag("--rounds", 3, "bench_shim [--rounds N]")? as usize;
    let c = Containerd::start()?;
    let image = c.import_demo_image()?;
    let first = time_run(&c, RUNTIME, image, "vessel-first")?;
    println!(
        "first vessel run (makes or checks the VM template): {:.1} s",
        first.as_secs_f64()
    );
    let mut runc = Vec::new();
    let mut vessel = Vec::new();
    let mut parts = Vec::new();
    for i in 0..rounds {
        runc.push(time_run(&c, RUNC, image, &format!("runc-{i}"))?);
        vessel.push(time_run(&c, RUNTIME, image, &format!("vessel-{i}"))?);
        let log = c.log();
        parts.push((last_logged(&log, "boot_ms"), last_logged(&log, "create_ms")));
        eprintln!("round {i}: runc {:?}, vessel {:?}", runc[i], vessel[i]);
    }
    let (r, v) = (median(runc), median(vessel));
    println!("ctr run --rm {image} true, median of {rounds}:");
    println!("  runc    {:>9.1} ms", r.as_secs_f64() * 1e3);
    println!("  vessel  {:>9.1} ms", v.as_secs_f64() * 1e3);
    println!("  ratio   {:>9.1}x", v.as_secs_f64() / r.as_secs_f64());
    if let Some((Some(boot), Some(create))) = parts.last() {
        let total = v.as_millis() as u64;
        let restored = c.log().lines().rev().find_map(|l| {
            l.contains("the agent answered")
                .then(|| l.contains("restored=true"))
        });
        let how = match restored {
            Some(true) => "restore + agent up + clock, entropy, share",
            _ => "kernel boot + agent up",
        };
        println!("where a vessel start goes (last round):");
        println!("  VMM start + {how}  {boot:>7} ms");
        println!("  CreateContainer in the guest        {create:>7} ms");
        println!(
            "  the rest (containerd, shim, run, exit, teardown) {:>7} ms",
            total.saturating_sub(boot + create)
        );
    }

    // Memory of one idle pod.
    c.run_detached(image, "mem", &["sleep", "1000"])?;
    std::thread::sleep(Duration::from_secs(2));
    let ls = String::from_utf8_lossy(&c.ctr_ok(&["task", "ls"])?.stdout).into_owned();
    let vmm: u32 = ls
        .lines()
        .find(|l| l.starts_with("mem "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|p| p.parse().ok())
        .context("the mem task's pid")?;
    let shim = c
        .leftover_processes()
        .into_iter()
        .find(|(_, cmd)| cmd.contains("containerd-shim-vessel-v2"))
        .map(|(pid, _)| pid)
        .context("the shim process")?;
    let shim_rss = kb(&format!("/proc/{shim}/status"), "VmRSS:").unwrap_or(0);
    // The task's pid is the VMM's monitor; the VM runs in its child.
    let processes = vessel_vmm_client::jail::vmm_processes(vmm);
    let sum = |file: &str, key: &str| -> u64 {
        processes
            .iter()
            .map(|pid| kb(&format!("/proc/{pid}/{file}"), key).unwrap_or(0))
            .sum()
    };
    let vmm_rss = sum("status", "VmRSS:");
    let vmm_pss = sum("smaps_rollup", "Pss:");
    println!("one idle pod (512 MiB guest): shim RSS {shim_rss} kB; VMM (with its monitor) RSS {vmm_rss} kB, PSS {vmm_pss} kB");
    let _ = c
        .ctr(&["task", "kill", "--signal", "SIGKILL", "mem"])
        .output();
    std::thread::sleep(Duration::from_secs(2));
    let _ = c.ctr(&["task", "delete", "--force", "mem"]).output();
    let _ = c.ctr(&["containers", "delete", "mem"]).output();
    ensure!(
        shim_rss > 0 && vmm_rss > 0,
        "could not read the pod's memory"
    );
    Ok(())
}

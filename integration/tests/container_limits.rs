//! Container resource limits in the guest (cgroup v2 through the agent):
//! a memory limit that OOM-kills the container and reaches GetOOMEvent, a
//! pids limit that stops forks, pause and resume (the frozen container's
//! CPU time stands still, then moves again), StatsContainer under load
//! with the spec's limits, and UpdateContainer changing the pids limit.
//!
//! One VM restored from the agent VM template (2 vCPUs, one on an
//! emulated-CPL0 host; 512 MiB) serves every case. Sizes are shrunk for this machine, where every page the guest kernel
//! zeroes or copies is emulated (about 0.6 MB/s): the memory limit is 6 MiB (dd fills the container's
//! /dev/shm tmpfs, whose pages are charged to it and cannot be reclaimed
//! without swap, so the kill comes after about 6 MiB), and the pids case
//! forks at most 20 sleeps. No time is asserted.

use std::sync::mpsc;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use serde_json::json;
use vessel_agent_protocol::AgentClient;
use vessel_integration::agent::{container_spec, poll_until, read_until, Stream};
use vessel_integration::{AgentVm, Cases, Container};

/// Per call; WaitProcess and reads of a live process block up to this.
/// The OOM case's allocation runs into memory reclaim, which takes a minute
/// or more of emulated guest kernel here: reads of its output wait that long.
const CALL_TIMEOUT: Duration = Duration::from_secs(180);
/// How long GetOOMEvent may wait for the OOM kill.
const OOM_TIMEOUT: Duration = Duration::from_secs(180);
const MIB: u64 = 1024 * 1024;
/// The OOM case's memory limit.
const MEMORY_LIMIT: u64 = 6 * MIB;

#[test]
fn container_limits() -> Result<()> {
    let vm = AgentVm::restore(CALL_TIMEOUT)?;
    let client = vm.client();
    let mut cases = Cases::new().retry_host_crashes(|| vm.crashes());
    cases.run("memory limit and OOM event", || oom(&vm));
    cases.run("pids limit", || pids_limit(client));
    cases.run("pause and resume", || pause_resume(client));
    cases.run("stats under load", || stats_under_load(client));
    cases.run("UpdateContainer pids limit", || update_pids(client));
    cases.finish(&vm)
}

fn oom(vm: &AgentVm) -> Result<()> {
    let client = vm.client();
    // tmpfs pages, charged to the container's cgroup. (awk doubling a
    // string in anonymous memory was the first choice; on the emulated-CPL0
    // host it sometimes spins in page faults for minutes without growing.)
    let fill = [
        "dd",
        "if=/dev/zero",
        "of=/dev/shm/fill",
        "bs=1M",
        "count=64",
    ];
    let mut spec = container_spec(&fill);
    spec["linux"]["resources"] = json!({ "memory": { "limit": MEMORY_LIMIT } });
    let c = Container::create(client, "oom", &spec)?;
    let limit = c.stats()?.memory.limit_bytes;
    ensure!(
        limit == MEMORY_LIMIT,
        "memory limit_bytes {limit} (want {MEMORY_LIMIT})"
    );

    // GetOOMEvent blocks: on its own connection, in a thread, bounded.
    let watcher = vm.connect(OOM_TIMEOUT)?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(watcher.get_oom_event());
    });
    // Let the call reach the agent before there is anything to report.
    std::thread::sleep(Duration::from_secs(1));

    c.start()?;
    let out = c.output("")?;
    ensure!(
        out.status == 137,
        "dd beyond a {MEMORY_LIMIT}-byte limit ended with {} (want 137, OOM-killed); \
         stdout {:?} stderr {:?}",
        out.status,
        out.stdout_text(),
        out.stderr_text()
    );
    let event = rx
        .recv_timeout(OOM_TIMEOUT + Duration::from_secs(5))
        .context("GetOOMEvent did not return")?
        .context("GetOOMEvent")?;
    ensure!(event == "oom", "GetOOMEvent named {event:?} (want \"oom\")");
    let oom_kills = c.stats()?.memory.oom_kills;
    ensure!(
        oom_kills >= 1,
        "memory oom_kills {oom_kills} after the kill"
    );
    c.remove()
}

fn pids_limit(client: &AgentClient) -> Result<()> {
    let script = "for i in $(seq 1 20); do sleep 5 & done; wait";
    let mut spec = container_spec(&["sh", "-c", script]);
    spec["linux"]["resources"] = json!({ "pids": { "limit": 8 } });
    let c = Container::create(client, "pids", &spec)?;
    let limit = c.stats()?.pids.limit;
    ensure!(limit == 8, "pids limit {limit} (want 8)");
    c.start()?;
    let out = c.output("")?;
    let stderr = out.stderr_text();
    ensure!(
        out.status != 0
            || stderr.contains("can't fork")
            || stderr.contains("Resource temporarily unavailable"),
        "20 background sleeps under pids.max 8 all started: {out:?}"
    );
    c.remove()
}

/// The container's CPU time so far.
fn cpu_ns(c: &Container) -> Result<u64> {
    Ok(c.stats()?.cpu.usage_total_ns)
}

fn pause_resume(client: &AgentClient) -> Result<()> {
    // An echo loop of shell builtins, fed on stdin and read back on
    // stdout: nothing forks in the container and nothing is spawned beside
    // it, since on the emulated-CPL0 host an exec joining a container next
    // to its starting process is what crashed that process most often
    // (kernel-config/README.md, "Lost user-mode writes").
    let script = "while read line; do echo \"got $line\"; done";
    let c = Container::create(client, "pause", &container_spec(&["sh", "-c", script]))?;
    c.start()?;
    let echo = |line: &str| -> Result<()> {
        read_until(
            client,
            c.id(),
            "",
            Stream::Stdout,
            format!("got {line}\n").as_bytes(),
        )?;
        Ok(())
    };
    client
        .write_stdin(c.id(), "", b"before\n")
        .context("WriteStdin")?;
    echo("before")?;
    // No limits in the spec: both read as unlimited.
    let stats = c.stats()?;
    ensure!(
        stats.memory.limit_bytes == 0 && stats.pids.limit == 0,
        "limits of a container without any: memory {} pids {}",
        stats.memory.limit_bytes,
        stats.pids.limit
    );

    client.pause_container(c.id()).context("PauseContainer")?;
    // Freezing takes effect asynchronously; let it settle. A line waits on
    // stdin meanwhile: a running loop would take it and use CPU time.
    std::thread::sleep(Duration::from_secs(2));
    client
        .write_stdin(c.id(), "", b"paused\n")
        .context("WriteStdin while paused")?;
    let frozen = cpu_ns(&c)?;
    std::thread::sleep(Duration::from_secs(1));
    let still = cpu_ns(&c)?;
    ensure!(
        still == frozen,
        "CPU time moved while paused: {frozen} ns, then {still} ns"
    );

    client.resume_container(c.id()).context("ResumeContainer")?;
    // The line written while paused is echoed once the loop runs again.
    echo("paused")?;
    poll_until(
        "CPU time to move after resume",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || Ok((cpu_ns(&c)? > still).then_some(())),
    )?;
    c.remove()
}

fn stats_under_load(client: &AgentClient) -> Result<()> {
    let mut spec = container_spec(&["sh", "-c", "while true; do :; done"]);
    spec["linux"]["resources"] = json!({
        "memory": { "limit": 64 * MIB },
        "pids": { "limit": 32 },
    });
    let c = Container::create(client, "load", &spec)?;
    c.start()?;
    let first = cpu_ns(&c)?;
    poll_until(
        "CPU time to grow under a busy loop",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || Ok((cpu_ns(&c)? > first).then_some(())),
    )?;
    let stats = c.stats()?;
    let (memory, pids) = (&stats.memory, &stats.pids);
    ensure!(memory.usage_bytes > 0, "memory usage_bytes 0");
    ensure!(pids.current >= 1, "pids current {}", pids.current);
    ensure!(
        memory.limit_bytes == 64 * MIB,
        "memory limit_bytes {} (want 64 MiB)",
        memory.limit_bytes
    );
    ensure!(pids.limit == 32, "pids limit {} (want 32)", pids.limit);
    c.remove()
}

fn update_pids(client: &AgentClient) -> Result<()> {
    let mut spec = container_spec(&["sleep", "1000"]);
    spec["linux"]["resources"] = json!({ "pids": { "limit": 16 } });
    let c = Container::create(client, "update", &spec)?;
    c.start()?;
    let limit = c.stats()?.pids.limit;
    ensure!(limit == 16, "pids limit {limit} (want 16)");
    let resources = json!({ "pids": { "limit": 4 } }).to_string();
    client
        .update_container(c.id(), resources.as_bytes())
        .context("UpdateContainer")?;
    let limit = c.stats()?.pids.limit;
    ensure!(
        limit == 4,
        "pids limit after UpdateContainer {limit} (want 4)"
    );
    c.remove()
}

//! Benchmark: starting a container in a Vessel guest against runc on the
//! host, and a byte stream through a container's stdio.
//!
//! `cargo run --release -p vessel-integration --example bench_container
//! [-- --rounds N] [--stdin-mib N]`
//!
//! Same busybox rootfs, spec and command (`echo hi`) on both sides, N rounds
//! each (default 5):
//!
//! - **runc** on the host: `runc run`, from the spawn to the first byte of
//!   its stdout; then `runc delete -f` (not timed). These rounds need no
//!   VM and run first, so their figures stand even if the guest half fails.
//! - **vessel**: one VM (vessel-vmm, 2 vCPUs, 512 MiB, the agent as PID 1,
//!   the rootfs in its initramfs) stays up for every round; each times
//!   CreateContainer + StartContainer + ReadStdout from the create call to
//!   the first byte of output; then RemoveContainer (not timed). So this
//!   measures the agent's container path, not a boot.
//!
//! It prints the medians and their ratio, then streams N MiB (default 10)
//! through `cat` in a container (WriteStdin in chunks while another
//! connection reads stdout) and prints the rate.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context, Result};
use vessel_agent_protocol::AgentClient;
use vessel_integration::agent::{
    container_spec, create_request, read_to_eof, write_stdin_all, Stream, STDIN_CHUNK,
};
use vessel_integration::{positive_flags, runc_bundle, AgentVm, Container};

const USAGE: &str = "bench_container [--rounds N] [--stdin-mib N]";
/// Per agent call; each WriteStdin/ReadStdout moves at most a chunk.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);
const MIB: usize = 1024 * 1024;

fn main() -> Result<()> {
    let flags = positive_flags(&[("--rounds", 5), ("--stdin-mib", 10)], USAGE)?;
    let (rounds, stdin_mib) = (flags[0] as usize, flags[1] as usize);

    let dir = tempfile::tempdir()?;
    let bundle = dir.path().join("bundle");
    let runc_root = dir.path().join("runc");
    let spec = container_spec(&["echo", "hi"]);
    runc_bundle(&bundle, &spec)?;

    // The host half first: it needs no VM, so its figures stand even if
    // the guest half fails.
    println!("container start to first output byte, `echo hi`, {rounds} rounds:");
    let mut runc = Vec::new();
    for round in 1..=rounds {
        let took = runc_first_byte(&runc_root, &bundle, &format!("bench-{round}"))
            .with_context(|| format!("runc, round {round}"))?;
        println!("  runc    round {round}: {:>8.1} ms", ms(took));
        runc.push(took);
    }

    eprintln!("bench_container: booting the guest (30-40 s on an emulated-CPL0 host)");
    let vm = AgentVm::boot(CALL_TIMEOUT)?;
    let mut vessel = Vec::new();
    for round in 1..=rounds {
        let took = vessel_first_byte(vm.client(), &format!("bench-{round}"), &spec)
            .with_context(|| format!("vessel, round {round}"))?;
        println!("  vessel  round {round}: {:>8.1} ms", ms(took));
        vessel.push(took);
    }

    let (v, r) = (median(&vessel), median(&runc));
    println!("summary (medians over {rounds} rounds):");
    println!(
        "  start to first byte: vessel {:.1} ms, runc {:.1} ms, vessel/runc {:.2}",
        ms(v),
        ms(r),
        v.as_secs_f64() / r.as_secs_f64()
    );

    let took = stdin_stream(&vm, stdin_mib * MIB).context("the stdin stream")?;
    println!(
        "  stdin -> cat -> stdout, {stdin_mib} MiB: {:.2} MB/s ({:.1} s)",
        (stdin_mib * MIB) as f64 / 1e6 / took.as_secs_f64(),
        took.as_secs_f64()
    );
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The median; the lower middle one for an even count.
fn median(values: &[Duration]) -> Duration {
    let mut values = values.to_vec();
    values.sort();
    values
        .get(values.len().saturating_sub(1) / 2)
        .copied()
        .unwrap_or_default()
}

/// CreateContainer + StartContainer + the first byte of stdout, timed.
fn vessel_first_byte(client: &AgentClient, id: &str, spec: &serde_json::Value) -> Result<Duration> {
    let req = create_request(id, spec);
    let start = Instant::now();
    let c = Container::create_with(client, &req).context("CreateContainer")?;
    c.start()?;
    let first = client.read_stdout(id, "", 1).context("ReadStdout")?;
    let took = start.elapsed();
    ensure!(
        first == b"h",
        "the container's first byte was {first:?}, not 'h'"
    );
    c.remove()?;
    Ok(took)
}

/// `runc run` of the bundle, timed from the spawn to its first stdout byte.
fn runc_first_byte(root: &Path, bundle: &Path, id: &str) -> Result<Duration> {
    let start = Instant::now();
    let mut child = Command::new("runc")
        .arg("--root")
        .arg(root)
        .args(["run", "--bundle"])
        .arg(bundle)
        .arg(id)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("run runc (.ci/install-deps installs it)")?;
    let mut stdout = child.stdout.take().context("runc's stdout")?;
    let mut first = [0u8; 1];
    let read = stdout.read_exact(&mut first);
    let took = start.elapsed();
    let mut rest = Vec::new();
    let _ = stdout.read_to_end(&mut rest);
    let status = child.wait()?;
    let _ = Command::new("runc")
        .arg("--root")
        .arg(root)
        .args(["delete", "-f", id])
        .stderr(Stdio::null())
        .status();
    read.with_context(|| format!("runc printed nothing (exit {status})"))?;
    ensure!(
        status.success() && first == *b"h",
        "runc run: {status}, output starting {first:?}"
    );
    Ok(took)
}

/// `total` bytes through `cat`: written by this connection, read by another.
fn stdin_stream(vm: &AgentVm, total: usize) -> Result<Duration> {
    let client = vm.client();
    let c = Container::create(client, "bench-cat", &container_spec(&["cat"]))?;
    c.start()?;
    let reader_client = vm.connect(CALL_TIMEOUT)?;
    let data: Vec<u8> = (0..total).map(|i| (i % 251) as u8).collect();
    let start = Instant::now();
    let reader = std::thread::spawn(move || {
        read_to_eof(&reader_client, "bench-cat", "", Stream::Stdout, total)
    });
    let written = write_stdin_all(client, c.id(), "", &data, STDIN_CHUNK)
        .and_then(|()| Ok(client.close_stdin(c.id(), "")?));
    let read = reader
        .join()
        .map_err(|_| anyhow!("the reader thread panicked"))?;
    let took = start.elapsed();
    written?;
    let got = read?;
    ensure!(
        got == data,
        "cat returned {} of {total} bytes, or other bytes",
        got.len()
    );
    ensure!(c.wait("")? == 0, "cat failed");
    c.remove()?;
    Ok(took)
}

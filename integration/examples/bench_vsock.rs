//! Benchmark: vsock throughput between the host and a guest, through
//! vessel-vmm's hybrid vsock (a unix socket on the host, virtio-vsock in the
//! guest), served in user space by the VMM.
//!
//! `cargo run --release -p vessel-integration --example bench_vsock [-- --mib N]`
//!
//! The guest runs the test init in `vessel.test=vsock-sink` mode: the host
//! sends N MiB (default 4), the guest counts them and sends N MiB back. Each
//! direction is timed on the host. Every byte crosses the guest kernel, whose
//! copies are emulated on emulated-CPL0 hosts, so expect well under 1 MB/s
//! there; on VT-x/AMD-V hosts the VMM's own copy path is what is measured.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use vessel_integration::{guest_kernel, positive_flag, test_initramfs, GuestSpec, Runner};

const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

fn main() -> Result<()> {
    let mib = positive_flag("--mib", 4, "bench_vsock [--mib N]")?;
    let dir = tempfile::tempdir()?;
    let uds = dir.path().join("vsock.sock");
    let mut spec = GuestSpec::new(guest_kernel()?, test_initramfs()?);
    spec.vcpus = 2;
    spec.memory_mib = 256;
    spec.extra_cmdline = "vessel.test=vsock-sink".into();
    spec.vsock_uds = Some(uds.clone());
    eprintln!("bench_vsock: booting the guest (about 30 s on an emulated-CPL0 host)");
    let mut guest = Runner::VesselVmm.spawn(&spec)?;
    guest.wait_for_console("VESSEL-VSOCK-SINK-READY", BOOT_TIMEOUT)?;

    let mut stream = UnixStream::connect(&uds).context("connect to the VMM's vsock socket")?;
    stream.write_all(b"CONNECT 5000\n")?;
    let mut reply = String::new();
    BufReader::new(stream.try_clone()?).read_line(&mut reply)?;
    ensure!(reply.starts_with("OK "), "CONNECT 5000 got {reply:?}");
    stream.set_read_timeout(Some(BOOT_TIMEOUT))?;

    let total = mib * 1024 * 1024;
    let chunk = vec![0xa5u8; 64 * 1024];
    let start = Instant::now();
    stream.write_all(&total.to_le_bytes())?;
    let mut sent = 0u64;
    while sent < total {
        let n = (total - sent).min(chunk.len() as u64) as usize;
        stream.write_all(&chunk[..n])?;
        sent += n as u64;
    }
    let mut count = [0u8; 8];
    stream
        .read_exact(&mut count)
        .context("read the guest's byte count")?;
    let up = start.elapsed();
    ensure!(
        u64::from_le_bytes(count) == total,
        "the guest counted {} of {total} bytes",
        u64::from_le_bytes(count)
    );

    let start = Instant::now();
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0u64;
    while got < total {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            bail!("the guest closed after {got} of {total} bytes");
        }
        got += n as u64;
    }
    let down = start.elapsed();
    let rate = |d: Duration| total as f64 / 1e6 / d.as_secs_f64();
    println!("vsock throughput, {mib} MiB each way (host <-> guest via vessel-vmm hybrid vsock):");
    println!(
        "  host -> guest: {:.2} MB/s ({:.1} s)",
        rate(up),
        up.as_secs_f64()
    );
    println!(
        "  guest -> host: {:.2} MB/s ({:.1} s)",
        rate(down),
        down.as_secs_f64()
    );
    let out = guest.wait(BOOT_TIMEOUT)?;
    ensure!(
        out.status.success(),
        "vessel-vmm exited with {}",
        out.status
    );
    Ok(())
}

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

/// FNV-1a (64-bit), as the guest's sink computes it.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

fn fnv1a(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}
use vessel_integration::{guest_kernel, positive_flag, test_initramfs, BootSpec, Runner};
use vessel_vmm_client::HostProfile;

const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

fn main() -> Result<()> {
    let mib = positive_flag("--mib", 4, "bench_vsock [--mib N]")?;
    let dir = tempfile::tempdir()?;
    let uds = dir.path().join("vsock.sock");
    let mut spec = BootSpec::new(guest_kernel()?, test_initramfs()?);
    // Two, or one where the host loses writes with more.
    spec.vcpus = HostProfile::detect()?.workload_vcpus(2);
    spec.memory_mib = 256;
    spec.cmdline = "vessel.test=vsock-sink".into();
    spec.endpoints.vsock_uds = Some(uds.clone());
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
    // A pattern that shifts from chunk to chunk, so a lost, repeated or
    // reordered chunk changes the hash.
    let pattern: Vec<u8> = (0..64 * 1024 + 251).map(|i| (i % 251) as u8).collect();
    let start = Instant::now();
    stream.write_all(&total.to_le_bytes())?;
    let mut sent = 0u64;
    let mut hash = FNV_OFFSET;
    while sent < total {
        let n = (total - sent).min(64 * 1024) as usize;
        let skew = (sent % 251) as usize;
        let chunk = &pattern[skew..skew + n];
        stream.write_all(chunk)?;
        hash = fnv1a(hash, chunk);
        sent += n as u64;
    }
    let mut count = [0u8; 8];
    stream
        .read_exact(&mut count)
        .context("read the guest's byte count")?;
    let mut guest_hash = [0u8; 8];
    stream
        .read_exact(&mut guest_hash)
        .context("read the guest's hash")?;
    let up = start.elapsed();
    ensure!(
        u64::from_le_bytes(count) == total,
        "the guest counted {} of {total} bytes",
        u64::from_le_bytes(count)
    );

    ensure!(
        u64::from_le_bytes(guest_hash) == hash,
        "the guest received different bytes than were sent (FNV-1a {:#x}, sent {hash:#x})",
        u64::from_le_bytes(guest_hash)
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

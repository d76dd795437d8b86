//! The guest kernel from `kernel-config/` boots the static test init under
//! the QEMU microvm reference runner, and every kernel feature Vessel relies
//! on works in it (on this host: with the emulated-CPL0 cures).

use std::time::Duration;

use anyhow::{ensure, Result};
use vessel_integration::{guest_kernel, test_initramfs, GuestSpec, Report, Runner};

/// A boot reaches /init in about 25 s here; leave room for a slower CI host.
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

#[test]
fn kernel_boots_test_init_under_qemu_microvm() -> Result<()> {
    let mut spec = GuestSpec::new(guest_kernel()?, test_initramfs()?);
    spec.vcpus = 2;
    spec.memory_mib = 256;
    let out = Runner::QemuMicrovm.run(&spec, BOOT_TIMEOUT)?;
    let report = Report::parse(&out.console)
        .map_err(|e| anyhow::anyhow!("{e}\nconsole:\n{}\nstderr:\n{}", out.console, out.stderr))?;
    ensure!(
        report.errors().is_empty(),
        "probes failed: {:#?}\nconsole:\n{}",
        report.errors(),
        out.console
    );

    // The guest's `reboot -f` is the VMM's clean exit.
    ensure!(out.status.success(), "qemu exited with {}", out.status);
    ensure!(
        report.ok("cpus")? == "2",
        "guest sees {} CPUs",
        report.ok("cpus")?
    );
    let mem_kib: u64 = report.ok("mem_kib")?.parse()?;
    ensure!(
        (200 * 1024..256 * 1024).contains(&mem_kib),
        "guest MemTotal {mem_kib} kB for 256 MiB"
    );
    ensure!(
        report.ok("kernel")?.starts_with("6.12."),
        "kernel {}",
        report.ok("kernel")?
    );
    for fs in ["overlay", "virtiofs", "cgroup2", "fuse", "erofs", "ext4"] {
        ensure!(
            report.ok("filesystems")?.split(',').any(|f| f == fs),
            "{fs} missing"
        );
    }
    for controller in ["cpu", "memory", "pids", "io", "cpuset"] {
        ensure!(
            report.ok("cgroup2")?.split(' ').any(|c| c == controller),
            "cgroup2 lacks {controller}"
        );
    }
    ensure!(report.ok("vsock")?.contains("1024"));
    ensure!(report.ok("fuse")? == "FUSE_INIT received");
    ensure!(report.ok("namespaces")?.contains("pivot_root"));
    ensure!(report.ok("hwrng")?.starts_with("virtio_rng"));
    eprintln!(
        "guest reached /init marker after {:?}, exited after {:?}",
        out.to_init_marker, out.elapsed
    );
    Ok(())
}

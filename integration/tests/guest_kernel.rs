//! The guest kernel from `kernel-config/` boots the static test init under
//! the QEMU microvm reference runner, and every kernel feature Vessel relies
//! on works in it (on this host: with the emulated-CPL0 cures).

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use vessel_integration::{guest_kernel, test_initramfs, BootSpec, Report, Runner};

/// A boot reaches /init in about 30 s here; leave room for a slower CI host.
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

#[test]
fn kernel_boots_test_init_under_qemu_microvm() -> Result<()> {
    let mut spec = BootSpec::new(guest_kernel()?, test_initramfs()?);
    spec.vcpus = 2;
    spec.memory_mib = 256;
    let out = Runner::QemuMicrovm.run(&spec, BOOT_TIMEOUT)?;
    let context = || format!("console:\n{}\nstderr:\n{}", out.console, out.stderr);
    Report::parse(&out.console)
        .and_then(|report| report.check_guest(spec.vcpus, spec.memory_mib))
        .with_context(context)?;
    // The guest's `reboot -f` is the VMM's clean exit.
    ensure!(out.status.success(), "qemu exited with {}", out.status);
    eprintln!(
        "init marker after {:?}, exit after {:?}",
        out.to_init_marker, out.elapsed
    );
    Ok(())
}

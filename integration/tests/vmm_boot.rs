//! vessel-vmm boots the guest kernel with the test init: 1 vCPU with
//! 128 MiB from flags, 2 vCPUs with 512 MiB from a JSON config file. The
//! guest must see its CPUs and memory, every probe (virtio-rng through our
//! virtio-mmio transport included) must pass, and the guest's reboot must
//! end the VMM with status 0.

use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use vessel_integration::{
    guest_kernel, test_initramfs, vessel_vmm, BootSpec, GuestOutput, Report, Runner, RunningGuest,
};

const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

fn check(out: &GuestOutput, vcpus: u8, memory_mib: u32) -> Result<()> {
    let context = || format!("console:\n{}\nstderr:\n{}", out.console, out.stderr);
    Report::parse(&out.console)
        .and_then(|report| report.check_guest(vcpus, memory_mib))
        .with_context(context)?;
    ensure!(
        out.status.success(),
        "vessel-vmm exited with {}\n{}",
        out.status,
        out.stderr
    );
    eprintln!(
        "init marker after {:?}, exit after {:?}",
        out.to_init_marker, out.elapsed
    );
    Ok(())
}

#[test]
fn boots_one_vcpu_with_128_mib_from_flags() -> Result<()> {
    let spec = BootSpec::new(guest_kernel()?, test_initramfs()?);
    let out = Runner::VesselVmm.run(&spec, BOOT_TIMEOUT)?;
    check(&out, 1, 128)
}

#[test]
fn boots_two_vcpus_with_512_mib_from_a_config_file() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("vm.json");
    let json = serde_json::json!({
        "kernel": guest_kernel()?,
        "initrd": test_initramfs()?,
        "vcpus": 2,
        "memory_mib": 512,
    });
    std::fs::write(&config, serde_json::to_vec_pretty(&json)?)?;
    let mut cmd = Command::new(vessel_vmm()?);
    cmd.arg("--config").arg(&config);
    let out = RunningGuest::spawn(&mut cmd)?.wait(BOOT_TIMEOUT)?;
    check(&out, 2, 512)
}

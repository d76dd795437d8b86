//! The README's main job, as far as Vessel goes today: boot the guest kernel
//! with the static test init in a microVM under our own vessel-vmm and print
//! its feature report. It will run a container through containerd once the
//! shim exists.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use vessel_integration::{guest_kernel, test_initramfs, GuestSpec, Report, Runner};
use vessel_vmm::profile::HostProfile;

fn main() -> Result<()> {
    let profile = HostProfile::detect()?;
    eprintln!("demo: host profile {profile}; building (or reusing) the guest kernel and initramfs");
    let mut spec = GuestSpec::new(guest_kernel()?, test_initramfs()?);
    spec.vcpus = 2;
    spec.memory_mib = 256;
    eprintln!("demo: booting {} under vessel-vmm", spec.kernel.display());
    let out = Runner::VesselVmm.run(&spec, Duration::from_secs(300))?;
    let report =
        Report::parse(&out.console).with_context(|| format!("console:\n{}", out.console))?;
    println!(
        "guest report ({} vCPUs, {} MiB):",
        spec.vcpus, spec.memory_mib
    );
    for (key, value) in &report.values {
        println!("  {key:<12} {value}");
    }
    let host_release = std::fs::read_to_string("/proc/sys/kernel/osrelease")?;
    println!("  host kernel  {}", host_release.trim());
    if let Some(t) = out.to_init_marker {
        println!(
            "time to /init: {:.1} s; guest reboot ended the VM after {:.1} s with {}",
            t.as_secs_f64(),
            out.elapsed.as_secs_f64(),
            out.status
        );
    }
    ensure!(
        report.errors().is_empty(),
        "probes failed: {:?}",
        report.errors()
    );
    ensure!(out.status.success(), "the VM exited with {}", out.status);
    Ok(())
}

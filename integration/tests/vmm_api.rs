//! The API socket pauses, resumes and shuts down a running vessel-vmm, which
//! then exits 0 and removes its socket.

use std::time::Duration;

use anyhow::{ensure, Result};
use vessel_integration::vmm_api::VmmApi as Api;
use vessel_integration::{guest_kernel, test_initramfs, GuestSpec, Runner};

const TIMEOUT: Duration = Duration::from_secs(60);

#[test]
fn api_pauses_resumes_and_shuts_down_the_vm() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let sock = dir.path().join("api.sock");
    let mut spec = GuestSpec::new(guest_kernel()?, test_initramfs()?);
    spec.vcpus = 2;
    spec.api_sock = Some(sock.clone());
    let guest = Runner::VesselVmm.spawn(&spec)?;
    let mut api = Api::connect(&sock)?;

    ensure!(api.call("status")?["state"] == "running");
    ensure!(api.call("pause")?["state"] == "paused");
    ensure!(api.call("status")?["state"] == "paused");
    ensure!(api.call("resume")?["state"] == "running");
    ensure!(api.call("pause")?["state"] == "paused");
    ensure!(api.call("shutdown")?["state"] == "stopping");

    let out = guest.wait(TIMEOUT)?;
    ensure!(
        out.status.success(),
        "vessel-vmm exited with {}: {}",
        out.status,
        out.stderr
    );
    ensure!(!sock.exists(), "the API socket was left behind");
    Ok(())
}

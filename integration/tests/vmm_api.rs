//! The API socket pauses, resumes and shuts down a running vessel-vmm, which
//! then exits 0 and removes its socket.

use std::time::Duration;

use anyhow::{ensure, Result};
use vessel_integration::{guest_kernel, test_initramfs, ApiClient, BootSpec, Runner, VmState};

const TIMEOUT: Duration = Duration::from_secs(60);

#[test]
fn api_pauses_resumes_and_shuts_down_the_vm() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let sock = dir.path().join("api.sock");
    let mut spec = BootSpec::new(guest_kernel()?, test_initramfs()?);
    spec.vcpus = 2;
    spec.endpoints.api_sock = Some(sock.clone());
    let guest = Runner::VesselVmm.spawn(&spec)?;
    let mut api = ApiClient::connect(&sock, TIMEOUT)?;

    ensure!(api.status()? == VmState::Running);
    ensure!(api.pause()? == VmState::Paused);
    ensure!(api.status()? == VmState::Paused);
    ensure!(api.resume()? == VmState::Running);
    ensure!(api.pause()? == VmState::Paused);
    ensure!(api.shutdown()? == VmState::Stopping);

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

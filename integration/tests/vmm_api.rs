//! The API socket pauses, resumes and shuts down a running vessel-vmm, which
//! then exits 0 and removes its socket.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;
use vessel_integration::{guest_kernel, test_initramfs, GuestSpec, Runner};

const TIMEOUT: Duration = Duration::from_secs(60);

struct Api {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Api {
    fn connect(path: &std::path::Path) -> Result<Self> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            match UnixStream::connect(path) {
                Ok(stream) => {
                    stream.set_read_timeout(Some(TIMEOUT))?;
                    let reader = BufReader::new(stream.try_clone()?);
                    return Ok(Self { stream, reader });
                }
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(err) => return Err(err).context("connect to the API socket"),
            }
        }
    }

    fn call(&mut self, action: &str) -> Result<Value> {
        writeln!(self.stream, "{{\"action\":\"{action}\"}}")?;
        let mut line = String::new();
        self.reader
            .read_line(&mut line)
            .with_context(|| format!("reply to {action}"))?;
        let reply: Value =
            serde_json::from_str(&line).with_context(|| format!("reply {line:?}"))?;
        if reply["ok"] != true {
            bail!("{action} failed: {reply}");
        }
        Ok(reply)
    }
}

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

//! The agent as the guest's PID 1, reached from the host through
//! vessel-vmm's hybrid vsock: health and version, many calls in flight on
//! several connections, the guest calls, protocol errors (a connection
//! before the agent is up, a bad port, half-closed streams), and a shutdown
//! that ends the VMM with status 0. One VM serves every step.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, ensure, Context, Result};
use vessel_agent_protocol::client::{handshake, AgentClient, ClientError, DEFAULT_CALL_TIMEOUT};
use vessel_agent_protocol::AGENT_VSOCK_PORT;
use vessel_integration::agent::BOOT_TIMEOUT;
use vessel_integration::{agent_initramfs, connect_while_running, guest_kernel, BootSpec, Runner};
use vessel_vmm_client::HostProfile;

const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// The guest contract's agent port.
const AGENT_PORT: u32 = AGENT_VSOCK_PORT;

fn raw_connect(uds: &Path) -> Result<UnixStream> {
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        match UnixStream::connect(uds) {
            Ok(s) => {
                s.set_read_timeout(Some(STEP_TIMEOUT))?;
                return Ok(s);
            }
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(e).context("connect to the VMM's vsock socket"),
        }
    }
}

/// The VMM must close `stream`: a read sees EOF (or a reset), not a hang.
fn expect_closed(mut stream: UnixStream, what: &str) -> Result<()> {
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(0) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(()),
        Ok(n) => bail!("{what}: expected the stream closed, read {:?}", &buf[..n]),
        Err(e) => Err(e).with_context(|| format!("{what}: the stream was not closed")),
    }
}

#[test]
fn agent_answers_over_hybrid_vsock() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let uds = dir.path().join("vsock.sock");
    let mut spec = BootSpec::new(guest_kernel()?, agent_initramfs()?);
    // Two, or one where the host loses writes with more.
    spec.vcpus = HostProfile::detect()?.workload_vcpus(2);
    spec.memory_mib = 256;
    spec.endpoints.vsock_uds = Some(uds.clone());
    let mut guest = Runner::VesselVmm.spawn(&spec)?;

    // A connection before the agent is up is refused, not hung.
    let mut early = raw_connect(&uds)?;
    match handshake(&mut early, AGENT_PORT) {
        Err(ClientError::Handshake { .. }) => {}
        other => bail!(
            "CONNECT before the agent is up: {other:?}\n{}",
            guest.console()
        ),
    }

    // The client retries until the agent listens.
    let client = connect_while_running(&mut guest, &uds, BOOT_TIMEOUT, DEFAULT_CALL_TIMEOUT)?;
    client.check().context("Check")?;
    let version = client.version().context("Version")?;
    ensure!(version.api_version == "vessel.agent.v1", "{version:?}");
    ensure!(version.kernel_release.starts_with("6.12."), "{version:?}");

    // Many calls in flight on several connections at once. Each new
    // connection first makes one round trip alone, as every client of ours
    // does (agent/README.md: on an emulated-CPL0 host a request arriving
    // while the agent starts a connection's threads can be lost).
    let clients: Vec<AgentClient> = (0..3)
        .map(|_| -> Result<AgentClient> {
            let c = AgentClient::connect(&uds, AGENT_PORT, STEP_TIMEOUT)?;
            c.check().context("Check on a new connection")?;
            Ok(c)
        })
        .collect::<Result<_>>()?;
    std::thread::scope(|scope| -> Result<()> {
        let workers: Vec<_> = clients
            .iter()
            .chain(std::iter::once(&client))
            .flat_map(|c| [c.clone(), c.clone()])
            .map(|c| {
                scope.spawn(move || -> Result<()> {
                    for _ in 0..4 {
                        c.check()?;
                        c.version()?;
                    }
                    Ok(())
                })
            })
            .collect();
        for w in workers {
            w.join()
                .map_err(|_| anyhow::anyhow!("a caller panicked"))??;
        }
        Ok(())
    })?;

    // The guest calls.
    client
        .set_guest_time(SystemTime::now())
        .context("SetGuestTime")?;
    client.set_hostname("vessel-test").context("SetHostname")?;
    client.reseed_random(&[0x42; 64]).context("ReseedRandom")?;

    // A port nobody listens on: the guest resets, the VMM closes.
    let mut bad = raw_connect(&uds)?;
    match handshake(&mut bad, 4242) {
        Err(ClientError::Handshake { .. }) => {}
        other => bail!("CONNECT 4242: {other:?}"),
    }
    // Half a CONNECT line, then the write side closed: the VMM drops it.
    let mut half = raw_connect(&uds)?;
    half.write_all(b"CONNECT 10")?;
    half.shutdown(Shutdown::Write)?;
    expect_closed(half, "half-closed CONNECT")?;
    // A connected stream whose host side stops writing: the agent sees EOF
    // and closes its end, which reaches the host as EOF.
    let mut idle = raw_connect(&uds)?;
    handshake(&mut idle, AGENT_PORT)?;
    idle.shutdown(Shutdown::Write)?;
    expect_closed(idle, "half-closed agent connection")?;
    // None of that disturbed the agent.
    client.check().context("Check after the protocol errors")?;

    client.shutdown().context("Shutdown")?;
    let out = guest.wait(STEP_TIMEOUT)?;
    ensure!(
        out.status.success(),
        "vessel-vmm exited with {}\n{}",
        out.status,
        out.stderr
    );
    ensure!(!uds.exists(), "the vsock socket was left behind");
    Ok(())
}

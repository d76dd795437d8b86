//! Driving the agent's container API from tests and benchmarks: a VM with
//! the agent and the busybox rootfs, specs for containers that share that
//! rootfs, a container handle removed on drop, reading streams to EOF,
//! expecting error codes, and a runner that collects each case's failure.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};
use tempfile::TempDir;
use vessel_agent_protocol::agent::CreateContainerRequest;
use vessel_agent_protocol::contract::{self, SHARE_TAG};
use vessel_agent_protocol::{AgentClient, ClientError};
use vessel_vmm_client::{connect_agent, BootSpec, FsSpec};

use crate::build::guest_kernel;
use crate::guest::{Runner, RunningGuest};
use crate::rootfs::{agent_initramfs_with_rootfs, oci_spec, GUEST_BUSYBOX_ROOTFS};
use crate::template;

/// Where the agent mounts a virtio-fs share (the guest contract's).
pub use vessel_agent_protocol::contract::SHARED_DIR;

pub use crate::guest::BOOT_TIMEOUT;
/// What one ReadStdout/ReadStderr asks for.
pub const READ_CHUNK: u32 = 64 * 1024;

/// Bytes per WriteStdin. On an emulated-CPL0 host, a guest-kernel copy of a
/// large vsock receive into the agent can come out corrupt once the agent
/// has forked (see agent/src/emulated.rs): requests that fit one vsock
/// packet (3,732 payload bytes here) have not shown it. Real hosts can use
/// far larger chunks.
pub const STDIN_CHUNK: usize = 3000;

/// Connects to the agent through the VMM's hybrid vsock socket `uds`
/// (`vessel_vmm_client::connect_agent`: retrying while the VMM runs, at most
/// `timeout`, then one Check); a VMM that exits first fails at once. The
/// error shows the console. Calls, the first Check included, time out after
/// `call_timeout`.
pub fn connect_while_running(
    guest: &mut RunningGuest,
    uds: &Path,
    timeout: Duration,
    call_timeout: Duration,
) -> Result<AgentClient> {
    guest
        .process()
        .connect_agent(uds, timeout, call_timeout)
        .with_context(|| format!("console:\n{}", guest.console()))
}

/// A running VM (vessel-vmm, 512 MiB, 2 vCPUs or 1 on an emulated-CPL0 host) whose PID 1 is the agent and
/// whose initramfs holds the busybox rootfs at [`GUEST_BUSYBOX_ROOTFS`].
/// Dropping it kills the VMM and removes its socket directory.
pub struct AgentVm {
    // Dropped in this order: the VMM first, then its socket directory.
    guest: RunningGuest,
    client: AgentClient,
    uds: PathBuf,
    _dir: TempDir,
}

impl AgentVm {
    /// Boots the VM and connects; every call of [`AgentVm::client`] times
    /// out after `call_timeout`.
    pub fn boot(call_timeout: Duration) -> Result<AgentVm> {
        AgentVm::boot_with(call_timeout, None)
    }

    /// [`AgentVm::boot`] with the host directory `share` served by the
    /// VMM's virtio-fs device (tag `vessel`), which the agent mounts at
    /// [`SHARED_DIR`], and the VMM's API socket at [`AgentVm::api_sock`].
    pub fn boot_with_share(call_timeout: Duration, share: &Path) -> Result<AgentVm> {
        AgentVm::boot_with(call_timeout, Some(share))
    }

    /// Restores the VM from the agent VM template (made on first use)
    /// and gives it a clock and entropy of its own. The debugging
    /// variables that change the guest's command line or vCPUs
    /// (`VESSEL_GUEST_LOG`, `VESSEL_GUEST_CMDLINE`, `VESSEL_GUEST_VCPUS`) or
    /// `VESSEL_NO_TEMPLATE=1` make it boot instead.
    pub fn restore(call_timeout: Duration) -> Result<AgentVm> {
        AgentVm::restore_with(call_timeout, None)
    }

    /// [`AgentVm::restore`] from the template with a virtio-fs device,
    /// serving `share`, which the agent mounts at [`SHARED_DIR`] on
    /// MountShare (or [`AgentVm::boot_with_share`] where `restore` boots).
    pub fn restore_with_share(call_timeout: Duration, share: &Path) -> Result<AgentVm> {
        AgentVm::restore_with(call_timeout, Some(share))
    }

    fn restore_with(call_timeout: Duration, share: Option<&Path>) -> Result<AgentVm> {
        let debugging = [
            "VESSEL_GUEST_LOG",
            "VESSEL_GUEST_CMDLINE",
            "VESSEL_GUEST_VCPUS",
        ]
        .iter()
        .any(|var| std::env::var_os(var).is_some());
        if debugging || std::env::var_os("VESSEL_NO_TEMPLATE").is_some() {
            return AgentVm::boot_with(call_timeout, share);
        }
        let template = match share {
            Some(_) => template::agent_share_template()?,
            None => template::agent_template()?,
        };
        let dir = tempfile::tempdir()?;
        let uds = dir.path().join("vsock.sock");
        let api_sock = dir.path().join("api.sock");
        let mut guest = template::restore(&template, &uds, &api_sock, share)?;
        let client = connect_while_running(&mut guest, &uds, BOOT_TIMEOUT, call_timeout)?;
        vessel_vmm_client::template::adopt(&client, share.map(|_| SHARE_TAG))
            .context("SetGuestTime, ReseedRandom and MountShare")?;
        Ok(AgentVm {
            guest,
            client,
            uds,
            _dir: dir,
        })
    }

    fn boot_with(call_timeout: Duration, share: Option<&Path>) -> Result<AgentVm> {
        let dir = tempfile::tempdir()?;
        let uds = dir.path().join("vsock.sock");
        let mut spec = BootSpec::new(guest_kernel()?, agent_initramfs_with_rootfs()?);
        spec.vcpus = template::agent_vm_vcpus()?;
        // VESSEL_GUEST_VCPUS=N: that many anyway, to study the host.
        if let Some(n) = std::env::var("VESSEL_GUEST_VCPUS")
            .ok()
            .and_then(|n| n.parse().ok())
        {
            spec.vcpus = n;
        }
        spec.memory_mib = template::AGENT_VM_MEMORY_MIB;
        spec.endpoints.vsock_uds = Some(uds.clone());
        spec.endpoints.api_sock = Some(dir.path().join("api.sock"));
        // VESSEL_GUEST_LOG=debug: the agent's log level, for debugging.
        if let Ok(level) = std::env::var("VESSEL_GUEST_LOG") {
            spec.cmdline = contract::log_arg(&level);
        }
        // VESSEL_GUEST_CMDLINE="loglevel=7 print-fatal-signals=1": more
        // kernel arguments, for debugging.
        if let Ok(extra) = std::env::var("VESSEL_GUEST_CMDLINE") {
            spec.cmdline.push_str(&format!(" {extra}"));
        }
        if let Some(share) = share {
            spec.fs = Some(FsSpec::new(share, SHARE_TAG));
            spec.cmdline
                .push_str(&format!(" {}", contract::share_arg(SHARE_TAG)));
        }
        let mut guest = Runner::VesselVmm.spawn(&spec)?;
        let client = connect_while_running(&mut guest, &uds, BOOT_TIMEOUT, call_timeout)?;
        Ok(AgentVm {
            guest,
            client,
            uds,
            _dir: dir,
        })
    }

    /// The connection made at boot.
    pub fn client(&self) -> &AgentClient {
        &self.client
    }

    /// A further connection, for calls that block (a reader thread,
    /// GetOOMEvent) so they never hold up the agent's workers of the others.
    ///
    /// It makes one round trip before handing the connection out: by its
    /// answer the agent has set the connection up (started its threads). On
    /// an emulated-CPL0 host a large request arriving while it does so can
    /// be spoiled (agent/README.md).
    pub fn connect(&self, call_timeout: Duration) -> Result<AgentClient> {
        connect_agent(&self.uds, Duration::from_secs(30), call_timeout, || false)
            .context("a further connection")
    }

    /// The VMM's API socket.
    pub fn api_sock(&self) -> PathBuf {
        self._dir.path().join("api.sock")
    }

    /// The VMM's pid.
    pub fn vmm_pid(&self) -> u32 {
        self.guest.pid()
    }

    /// Asks the agent to shut the guest down and waits for the VMM to exit.
    pub fn shutdown(mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        self.client.shutdown().context("Shutdown")?;
        let status = self.guest.process().wait_timeout(timeout)?;
        status.with_context(|| format!("the VMM still runs {timeout:?} after Shutdown"))
    }

    /// The VMM's log (warnings of its devices).
    pub fn vmm_log(&self) -> String {
        self.guest.vmm_log()
    }

    /// How many of the agent's processes crashed (SIGSEGV, SIGBUS, SIGILL
    /// or SIGFPE) so far, by the agent's warnings on the console.
    pub fn crashes(&self) -> usize {
        self.guest
            .console()
            .lines()
            .filter(|l| l.contains("a watched process crashed"))
            .count()
    }

    /// The last `lines` lines of the guest console.
    pub fn console_tail(&self, lines: usize) -> String {
        let console = self.guest.console();
        let tail: Vec<&str> = console.lines().rev().take(lines).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }
}

/// [`oci_spec`] for a container that shares the busybox rootfs with
/// others: the root is read-only and `/tmp` a private tmpfs.
pub fn container_spec(args: &[&str]) -> Value {
    let mut spec = oci_spec(args);
    spec["root"]["readonly"] = json!(true);
    if let Some(mounts) = spec["mounts"].as_array_mut() {
        mounts.push(json!({
            "destination": "/tmp",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "nodev", "mode=1777", "size=16m"],
        }));
    }
    spec
}

/// An OCI Process for ExecProcess: `args` as root in `/`, no terminal.
pub fn process_spec(args: &[&str]) -> Value {
    json!({
        "terminal": false,
        "user": { "uid": 0, "gid": 0 },
        "args": args,
        "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
        "cwd": "/",
    })
}

/// A CreateContainer request for `spec` on the busybox rootfs, the
/// container its own pod (sandbox id = container id), a terminal if
/// `process.terminal` says so.
pub fn create_request(id: &str, spec: &Value) -> CreateContainerRequest {
    let mut req = CreateContainerRequest::new();
    req.container_id = id.to_owned();
    req.sandbox_id = id.to_owned();
    req.oci_spec = spec.to_string().into_bytes();
    req.rootfs_path = GUEST_BUSYBOX_ROOTFS.to_owned();
    req.terminal = spec["process"]["terminal"].as_bool().unwrap_or(false);
    req
}

/// Which output stream of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Reads `stream` of the process until EOF (an empty read). Each read
/// times out with the client's call timeout; more than `max` bytes fail.
pub fn read_to_eof(
    client: &AgentClient,
    id: &str,
    exec_id: &str,
    stream: Stream,
    max: usize,
) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let data = read_once(client, id, exec_id, stream)?;
        if data.is_empty() {
            return Ok(out);
        }
        out.extend_from_slice(&data);
        ensure!(
            out.len() <= max,
            "{stream:?} of {id}/{exec_id:?}: more than {max} bytes"
        );
    }
}

/// Reads `stream` until what was read contains `needle`; returns it all.
/// EOF first, or more than [`READ_CHUNK`] bytes without it, is an error.
pub fn read_until(
    client: &AgentClient,
    id: &str,
    exec_id: &str,
    stream: Stream,
    needle: &[u8],
) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    while !out.windows(needle.len()).any(|w| w == needle) {
        let data = read_once(client, id, exec_id, stream)?;
        ensure!(
            !data.is_empty(),
            "{stream:?} of {id}/{exec_id:?} ended before {:?}; got {:?}",
            String::from_utf8_lossy(needle),
            String::from_utf8_lossy(&out)
        );
        out.extend_from_slice(&data);
        ensure!(
            out.len() <= READ_CHUNK as usize,
            "{stream:?} of {id}/{exec_id:?}: no {:?} in {} bytes",
            String::from_utf8_lossy(needle),
            out.len()
        );
    }
    Ok(out)
}

fn read_once(client: &AgentClient, id: &str, exec_id: &str, stream: Stream) -> Result<Vec<u8>> {
    let data = match stream {
        Stream::Stdout => client.read_stdout(id, exec_id, READ_CHUNK),
        Stream::Stderr => client.read_stderr(id, exec_id, READ_CHUNK),
    };
    data.with_context(|| format!("{stream:?} of {id}/{exec_id:?}"))
}

/// `result` must be an agent error with `code`; returns the error (for a
/// look at its message).
pub fn expect_code<T: std::fmt::Debug>(
    what: &str,
    result: Result<T, ClientError>,
    code: ttrpc::Code,
) -> Result<ClientError> {
    match result {
        Ok(value) => bail!("{what}: expected {code:?}, got Ok({value:?})"),
        Err(err) if err.code() == Some(code) => Ok(err),
        Err(err) => bail!(
            "{what}: expected {code:?}, got {:?}: {err:#}",
            err.code(),
            err = anyhow::Error::from(err)
        ),
    }
}

/// `result` must be a refusal by the agent (not UNIMPLEMENTED, not a
/// transport failure) whose message names `needle`.
pub fn expect_refusal<T: std::fmt::Debug>(
    what: &str,
    result: Result<T, ClientError>,
    needle: &str,
) -> Result<ClientError> {
    match result {
        Ok(value) => bail!("{what}: expected an error naming {needle:?}, got Ok({value:?})"),
        Err(err) => {
            let code = err.code();
            ensure!(
                code.is_some() && code != Some(ttrpc::Code::UNIMPLEMENTED),
                "{what}: expected the agent to refuse, got {code:?}: {:#}",
                anyhow::Error::from(err)
            );
            let message = err.status_message().unwrap_or_default();
            ensure!(
                message.contains(needle),
                "{what}: the error ({code:?}) does not name {needle:?}: {message:?}"
            );
            Ok(err)
        }
    }
}

/// Writes all of `data` to the process's stdin, `chunk` bytes per
/// WriteStdin, again from where a short write stopped.
pub fn write_stdin_all(
    client: &AgentClient,
    id: &str,
    exec_id: &str,
    data: &[u8],
    chunk: usize,
) -> Result<()> {
    let mut done = 0;
    while done < data.len() {
        let end = (done + chunk).min(data.len());
        let n = client
            .write_stdin(id, exec_id, &data[done..end])
            .with_context(|| format!("WriteStdin to {id}/{exec_id:?} at byte {done}"))?;
        let n = n as usize;
        ensure!(
            n > 0 && n <= end - done,
            "WriteStdin to {id}/{exec_id:?} took {n} of {} bytes",
            end - done
        );
        done += n;
    }
    Ok(())
}

/// Calls `poll` every `every` until it returns `Some`, at most `timeout`.
pub fn poll_until<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut poll: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = poll()? {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            bail!("{what}: not within {timeout:?}");
        }
        std::thread::sleep(every);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_request_follows_the_spec() {
        let mut spec = container_spec(&["sh"]);
        assert_eq!(spec["root"]["readonly"], true);
        assert!(spec["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["destination"] == "/tmp"));
        spec["process"]["terminal"] = json!(true);
        let req = create_request("c1", &spec);
        assert_eq!(req.sandbox_id, "c1");
        assert_eq!(req.rootfs_path, GUEST_BUSYBOX_ROOTFS);
        assert!(req.terminal);
        let back: Value = serde_json::from_slice(&req.oci_spec).unwrap();
        assert_eq!(back, spec);
    }

    #[test]
    fn expect_code_checks_the_code() {
        let status = ttrpc::get_status(ttrpc::Code::NOT_FOUND, "no such container");
        let err = || ClientError::Rpc {
            method: "StartContainer",
            source: ttrpc::Error::RpcStatus(status.clone()),
        };
        let got = expect_code::<()>("start", Err(err()), ttrpc::Code::NOT_FOUND).unwrap();
        assert_eq!(got.status_message(), Some("no such container"));
        assert!(expect_code::<()>("start", Err(err()), ttrpc::Code::ALREADY_EXISTS).is_err());
        assert!(expect_code("start", Ok(()), ttrpc::Code::NOT_FOUND).is_err());
    }
}

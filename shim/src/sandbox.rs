//! One pod's VM: the VMM process, its sockets, its console log and the
//! shared directory, under a state directory of its own.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::watch;
use vessel_agent_protocol::{AgentClient, AGENT_VSOCK_PORT};

use crate::config::VesselConfig;
use crate::error::ShimError;
use crate::mounts::SharedDir;
use crate::template::{self, SHARE_TAG};

/// Agent calls that return at once; long polls use their own connections.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a guest may take to leave after the agent's Shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The state directory of sandbox `id` in `namespace`: short, so socket
/// paths fit `sun_path`.
pub fn state_dir(root: &Path, namespace: &str, id: &str) -> PathBuf {
    let digest = Sha256::digest(format!("{namespace}/{id}").as_bytes());
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    root.join(hex)
}

/// A running pod VM.
pub struct Sandbox {
    id: String,
    dir: PathBuf,
    vmm_pid: u32,
    vsock: PathBuf,
    agent: AgentClient,
    exited: watch::Receiver<bool>,
    share: Mutex<Option<SharedDir>>,
}

impl Sandbox {
    /// Creates the state directory and share, starts the VMM (restoring
    /// the config's template, or booting when templates are off or none
    /// can be made) and waits for the agent's first answer. Blocking.
    /// `on_exit` runs once the VMM has exited.
    pub fn boot(
        id: &str,
        namespace: &str,
        config: &VesselConfig,
        on_exit: Box<dyn FnOnce() + Send>,
    ) -> Result<Sandbox, ShimError> {
        let dir = state_dir(&config.state_dir, namespace, id);
        std::fs::create_dir_all(&dir).map_err(|source| ShimError::CreateDir {
            path: dir.clone(),
            source,
        })?;
        let share = SharedDir::create(&dir.join("shared"))?;
        let vsock = dir.join("vsock.sock");
        let console = dir.join("console.log");
        let vmm_log = File::create(dir.join("vmm.log")).map_err(|source| ShimError::CreateDir {
            path: dir.join("vmm.log"),
            source,
        })?;
        let api = dir.join("api.sock");
        let template = config.templates.then(|| template::get_or_make(config));
        let template = match template {
            Some(Ok(template)) => Some(template),
            Some(Err(error)) => {
                tracing::warn!(error = %error.chain(), "no VM template; booting the pod's VM");
                None
            }
            None => None,
        };
        let vmm = config.vmm_binary();
        let mut command = Command::new(&vmm);
        match &template {
            Some(t) => command.args(template::restore_args(
                t,
                &console,
                &vsock,
                &api,
                share.path(),
            )),
            None => command.args(template::boot_args(
                config,
                &format!(
                    "vessel.share={SHARE_TAG} {}",
                    template::base_cmdline(config)
                ),
                &console,
                &vsock,
                &api,
                share.path(),
            )),
        };
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(vmm_log)
            .spawn()
            .map_err(|source| ShimError::SpawnVmm {
                path: vmm.clone(),
                source,
            })?;
        let vmm_pid = child.id();
        if let Err(error) = std::fs::write(dir.join("vmm.pid"), vmm_pid.to_string()) {
            tracing::warn!(%error, "cannot write vmm.pid");
        }
        let (tx, exited) = watch::channel(false);
        std::thread::Builder::new()
            .name("vmm-wait".into())
            .spawn(move || {
                let status = child.wait();
                tracing::info!(pid = vmm_pid, ?status, "the VMM exited");
                let _ = tx.send(true);
                on_exit();
            })
            .map_err(|source| ShimError::SpawnVmm {
                path: vmm.clone(),
                source,
            })?;
        tracing::info!(
            sandbox = id,
            pid = vmm_pid,
            vcpus = config.vcpus,
            memory_mib = config.memory_mib,
            template = template.as_ref().map(|t| t.key.as_str()),
            "VMM started"
        );

        let booting = Instant::now();
        let timeout = Duration::from_secs(config.boot_timeout_secs);
        let agent = connect_booting(&vsock, timeout, || *exited.borrow()).map_err(|source| {
            kill(vmm_pid);
            ShimError::ConnectAgent {
                console: console.clone(),
                source,
            }
        })?;
        if template.is_some() {
            template::personalise(&agent).inspect_err(|_| kill(vmm_pid))?;
        }
        // bench_shim reads this line: where a pod's start time goes.
        tracing::info!(
            sandbox = id,
            boot_ms = booting.elapsed().as_millis() as u64,
            restored = template.is_some(),
            "the agent answered"
        );
        Ok(Sandbox {
            id: id.to_owned(),
            dir,
            vmm_pid,
            vsock,
            agent,
            exited,
            share: Mutex::new(Some(share)),
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn vmm_pid(&self) -> u32 {
        self.vmm_pid
    }

    /// The connection for short calls.
    pub fn agent(&self) -> Result<&AgentClient, ShimError> {
        if *self.exited.borrow() {
            return Err(ShimError::VmExited);
        }
        Ok(&self.agent)
    }

    /// A connection of its own, for calls that block (stdio, waits).
    pub fn connect(&self, call_timeout: Duration) -> Result<AgentClient, ShimError> {
        if *self.exited.borrow() {
            return Err(ShimError::VmExited);
        }
        let agent = AgentClient::connect(&self.vsock, AGENT_VSOCK_PORT, Duration::from_secs(30))
            .map_err(ShimError::Agent)?
            .with_call_timeout(call_timeout);
        // One round trip before real use: the agent has then set the
        // connection up (agent/README.md).
        agent.check().map_err(ShimError::Agent)?;
        Ok(agent)
    }

    /// Resolves when the VMM has exited.
    pub fn exited(&self) -> watch::Receiver<bool> {
        self.exited.clone()
    }

    /// Runs `f` on the share.
    pub fn with_share<T>(
        &self,
        f: impl FnOnce(&SharedDir) -> Result<T, ShimError>,
    ) -> Result<T, ShimError> {
        let share = self.share.lock().unwrap_or_else(|p| p.into_inner());
        match share.as_ref() {
            Some(share) => f(share),
            None => Err(ShimError::VmExited),
        }
    }

    /// Ends the VM (the agent's Shutdown, then SIGKILL after a grace) and
    /// removes everything the sandbox made. Blocking; idempotent.
    pub fn shutdown(&self) {
        if !*self.exited.borrow() {
            if let Err(error) = self.agent.shutdown() {
                tracing::info!(error = %error, "agent Shutdown failed; killing the VMM");
            }
            let deadline = Instant::now() + SHUTDOWN_GRACE;
            while !*self.exited.borrow() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if !*self.exited.borrow() {
                kill(self.vmm_pid);
                let deadline = Instant::now() + SHUTDOWN_GRACE;
                while !*self.exited.borrow() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        remove_state(
            &self.dir,
            self.share.lock().unwrap_or_else(|p| p.into_inner()).take(),
        );
    }
}

/// Connects to a booting (or restored) agent, giving up early once
/// `exited` says the VMM is gone.
pub(crate) fn connect_booting(
    vsock: &Path,
    timeout: Duration,
    mut exited: impl FnMut() -> bool,
) -> Result<AgentClient, vessel_agent_protocol::ClientError> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let step = left.min(Duration::from_secs(5));
        match AgentClient::connect(vsock, AGENT_VSOCK_PORT, step) {
            Ok(agent) => {
                let agent = agent.with_call_timeout(CALL_TIMEOUT);
                agent.check()?;
                return Ok(agent);
            }
            Err(e) if Instant::now() >= deadline || exited() => return Err(e),
            Err(_) => {}
        }
    }
}

fn kill(pid: u32) {
    // SAFETY: kill(2) with a pid we started; no memory is passed.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
}

/// Removes a sandbox's state directory after its share's mounts.
fn remove_state(dir: &Path, share: Option<SharedDir>) {
    drop(share);
    for target in crate::mounts::mounts_under(dir).into_iter().rev() {
        crate::mounts::unmount(&target);
    }
    if let Err(error) = std::fs::remove_dir_all(dir) {
        if error.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(dir = %dir.display(), %error, "cannot remove the sandbox state");
        }
    }
}

/// Cleans up after a shim that died: kills the VMM named in the state
/// directory's pid file (if it is still a vessel-vmm) and removes the
/// directory with every mount under it.
pub fn cleanup_dead(dir: &Path) {
    if let Ok(pid) = std::fs::read_to_string(dir.join("vmm.pid")) {
        if let Ok(pid) = pid.trim().parse::<u32>() {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() == "vessel-vmm" {
                kill(pid);
            }
        }
    }
    remove_state(dir, None);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_dirs_are_short_and_distinct() {
        let root = Path::new("/run/vessel");
        let long = "a".repeat(64);
        let dir = state_dir(root, "k8s.io", &long);
        assert!(dir.join("vsock.sock").as_os_str().len() < 60);
        assert_ne!(dir, state_dir(root, "default", &long));
        assert_eq!(dir, state_dir(root, "k8s.io", &long));
    }
}

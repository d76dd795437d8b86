//! One pod's VM: the VMM process, its sockets, its console log and the
//! shared directory, under a state directory of its own. Started through
//! `vessel-vmm-client`: a restore of the config's template, or a boot
//! where templates are off or none can be made.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::watch;
use vessel_agent_protocol::{AgentClient, SHARE_TAG};
use vessel_vmm_client::jail;
use vessel_vmm_client::template::adopt;
use vessel_vmm_client::{
    connect_agent, BootSpec, Endpoints, Launch, PidFd, ProcessError, ProcessIdentity, RestoreSpec,
    VmmProcess,
};

use super::cgroup::{self, Hierarchies, PodCgroup};
use crate::config::VesselConfig;
use crate::mounts::SharedDir;
use crate::vm::error::VmError;
use crate::vm::launch;

/// Agent calls that return at once; long polls use their own connections.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a guest may take to leave after the agent's Shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How long a further connection may take to a running agent.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

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
    /// Signals reach this VMM, never a process that reused its pid.
    vmm: PidFd,
    vsock: PathBuf,
    agent: AgentClient,
    exited: watch::Receiver<bool>,
    share: Mutex<Option<SharedDir>>,
}

impl Sandbox {
    /// Creates the state directory and share, starts the VMM (restoring
    /// the config's template, or booting when templates are off or none
    /// can be made) and waits for the agent's first answer. Blocking.
    /// `on_exit` runs once the VMM has exited, with the reason
    /// ([`vessel_vmm_client::jail::exit_reason`]). A failure leaves no VMM and
    /// no state directory behind.
    pub fn boot(
        id: &str,
        namespace: &str,
        config: &VesselConfig,
        cgroups_path: Option<&str>,
        on_exit: Box<dyn FnOnce(&str) + Send>,
    ) -> Result<Sandbox, VmError> {
        let dir = state_dir(&config.state_dir, namespace, id);
        std::fs::create_dir_all(&dir).map_err(|source| VmError::CreateStateDir {
            path: dir.clone(),
            source,
        })?;
        let cgroup = cgroups_path
            .map(|path| PodCgroup::create(&Hierarchies::host(), path, &dir))
            .transpose();
        let cgroup = match cgroup {
            Ok(cgroup) => cgroup,
            Err(error) => {
                remove_state(&dir, None);
                return Err(VmError::Cgroup(error));
            }
        };
        let share = match SharedDir::create(&dir.join("shared")) {
            Ok(share) => share,
            Err(error) => {
                remove_state(&dir, None);
                return Err(VmError::PrepareShare(error));
            }
        };
        let started = Self::start(id, &dir, &share, config, cgroup.as_ref(), on_exit);
        match started {
            Ok((vmm_pid, vmm, agent, exited)) => Ok(Sandbox {
                id: id.to_owned(),
                vsock: dir.join("vsock.sock"),
                dir,
                vmm_pid,
                vmm,
                agent,
                exited,
                share: Mutex::new(Some(share)),
            }),
            Err(error) => {
                remove_state(&dir, Some(share));
                Err(error)
            }
        }
    }

    /// Starts the VMM in `dir` and reaches its agent; kills it on failure.
    fn start(
        id: &str,
        dir: &Path,
        share: &SharedDir,
        config: &VesselConfig,
        cgroup: Option<&PodCgroup>,
        on_exit: Box<dyn FnOnce(&str) + Send>,
    ) -> Result<(u32, PidFd, AgentClient, watch::Receiver<bool>), VmError> {
        let endpoints = Endpoints {
            serial_max_bytes: Some(config.console_max_bytes),
            log_max_bytes: Some(config.vmm_log_max_bytes),
            ..Endpoints::in_dir(dir)
        };
        let (vsock, console) = (dir.join("vsock.sock"), dir.join("console.log"));
        let log_path = dir.join("vmm.log");
        let vmm_log = File::create(&log_path).map_err(|source| VmError::CreateLog {
            path: log_path.clone(),
            source,
        })?;
        let guest = launch::guest(config, share.path());
        let template = match config.templates.then(|| launch::template(config, &guest)) {
            Some(Ok(template)) => Some(template),
            Some(Err(error)) => {
                let error = crate::cause::chain(&VmError::Template(Box::new(error)));
                tracing::warn!(%error, "no VM template; booting the pod's VM");
                None
            }
            None => None,
        };
        let launch = match &template {
            Some(t) => Launch::Restore(RestoreSpec {
                fs_dir: Some(share.path().to_owned()),
                endpoints,
                ..t.restore_spec()
            }),
            None => Launch::Boot(BootSpec {
                cmdline: launch::boot_cmdline(&guest),
                endpoints,
                ..guest
            }),
        };
        let mut command = launch::vmm(config).command(&launch);
        command.stdout(Stdio::null()).stderr(vmm_log);
        let procs = match cgroup {
            Some(cgroup) => cgroup.procs_files().map_err(VmError::Cgroup)?,
            None => Vec::new(),
        };
        if !procs.is_empty() {
            let fds = cgroup::raw_fds(&procs);
            // SAFETY: the hook only calls cgroup::join_all, which is
            // async-signal-safe (one write(2) per fd, no allocation); the
            // fds stay open in `procs` until the spawn returns.
            unsafe {
                command.pre_exec(move || cgroup::join_all(&fds));
            }
        }
        let spawned = VmmProcess::spawn(&mut command);
        drop(procs);
        let mut process = spawned.map_err(VmError::SpawnVmm)?;
        let vmm_pid = process.pid();
        // Our unreaped child: the pid is still its own.
        let pidfd = PidFd::open(vmm_pid).map_err(VmError::OpenPidFd)?;
        // For `cleanup_dead`: the pid and start time, which a reused pid
        // cannot match.
        let identity = ProcessIdentity::of(vmm_pid).map(|id| id.to_line());
        if let Err(error) = identity.and_then(|id| std::fs::write(dir.join("vmm.pid"), id)) {
            tracing::warn!(%error, "cannot write vmm.pid");
        }
        let (tx, exited) = watch::channel(false);
        let exit_log = log_path.clone();
        // A failed spawn drops the process, which kills the VMM.
        std::thread::Builder::new()
            .name("vmm-wait".into())
            .spawn(move || {
                let reason = vmm_exited(vmm_pid, process.wait(), &exit_log);
                let _ = tx.send(true);
                on_exit(&reason);
            })
            .map_err(VmError::SpawnWaiter)?;
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
        let kill = |error: VmError| {
            kill_and_wait(&pidfd, &exited);
            error
        };
        let agent = connect_agent(&vsock, timeout, CALL_TIMEOUT, || *exited.borrow()).map_err(
            |source| {
                kill(VmError::ConnectAgent {
                    console: console.clone(),
                    source: Box::new(source),
                })
            },
        )?;
        if template.is_some() {
            adopt(&agent, Some(SHARE_TAG)).map_err(|e| kill(VmError::AdoptGuest(Box::new(e))))?;
        }
        // bench_shim reads this line: where a pod's start time goes.
        tracing::info!(
            sandbox = id,
            boot_ms = booting.elapsed().as_millis() as u64,
            restored = template.is_some(),
            "the agent answered"
        );
        Ok((vmm_pid, pidfd, agent, exited))
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn vmm_pid(&self) -> u32 {
        self.vmm_pid
    }

    /// The connection for short calls.
    pub fn agent(&self) -> Result<&AgentClient, VmError> {
        if *self.exited.borrow() {
            return Err(VmError::Exited);
        }
        Ok(&self.agent)
    }

    /// A connection of its own, for calls that block (stdio, waits). It
    /// makes one round trip before real use: the agent has then set the
    /// connection up (agent/README.md).
    pub fn connect(&self, call_timeout: Duration) -> Result<AgentClient, VmError> {
        if *self.exited.borrow() {
            return Err(VmError::Exited);
        }
        connect_agent(&self.vsock, CONNECT_TIMEOUT, call_timeout, || {
            *self.exited.borrow()
        })
        .map_err(|e| VmError::Connect(Box::new(e)))
    }

    /// Resolves when the VMM has exited.
    pub fn exited(&self) -> watch::Receiver<bool> {
        self.exited.clone()
    }

    /// Runs `f` on the share, while the sandbox has one.
    pub fn with_share<T, E: From<VmError>>(
        &self,
        f: impl FnOnce(&SharedDir) -> Result<T, E>,
    ) -> Result<T, E> {
        let share = self.share.lock().unwrap_or_else(|p| p.into_inner());
        match share.as_ref() {
            Some(share) => f(share),
            None => Err(VmError::Exited.into()),
        }
    }

    /// Ends the VM (the agent's Shutdown, then SIGKILL after a grace) and
    /// removes everything the sandbox made. Blocking; idempotent.
    pub fn shutdown(&self) {
        if !*self.exited.borrow() {
            if let Err(error) = self.agent.shutdown() {
                tracing::info!(error = %error, "agent Shutdown failed; killing the VMM");
            }
            if !wait_exited(&self.exited, SHUTDOWN_GRACE) {
                kill_and_wait(&self.vmm, &self.exited);
            }
        }
        remove_state(
            &self.dir,
            self.share.lock().unwrap_or_else(|p| p.into_inner()).take(),
        );
    }
}

/// Waits at most `timeout` for the VMM's waiter to see it exit.
fn wait_exited(exited: &watch::Receiver<bool>, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while !*exited.borrow() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    *exited.borrow()
}

/// SIGKILLs the VMM and waits (a grace at most) until it is reaped.
fn kill_and_wait(vmm: &PidFd, exited: &watch::Receiver<bool>) {
    if let Err(error) = vmm.kill() {
        tracing::warn!(%error, "cannot kill the VMM");
    }
    if !wait_exited(exited, SHUTDOWN_GRACE) {
        tracing::warn!("the VMM did not exit after SIGKILL");
    }
}

/// Removes a sandbox's state directory after its share's mounts.
fn remove_state(dir: &Path, share: Option<SharedDir>) {
    drop(share);
    cgroup::remove_recorded(dir);
    crate::mounts::remove_dir(dir);
}

/// Logs why the VMM `pid` exited, with what its log `log` says of a
/// seccomp stop, and returns the reason.
fn vmm_exited(pid: u32, status: Result<ExitStatus, ProcessError>, log: &Path) -> String {
    let status = match status {
        Ok(status) => status,
        Err(error) => {
            let reason = format!("cannot wait for the VMM: {error}");
            tracing::error!(pid, %reason, "the VMM exited");
            return reason;
        }
    };
    let reason = jail::exit_reason(status);
    if status.success() {
        tracing::info!(pid, %reason, "the VMM exited");
        return reason;
    }
    let text = std::fs::read(log)
        .map(|bytes| {
            String::from_utf8_lossy(&bytes[bytes.len().saturating_sub(8192)..]).into_owned()
        })
        .unwrap_or_default();
    match jail::seccomp_report(&text) {
        Some(report) => {
            tracing::error!(pid, %reason, report, "the VMM exited");
            format!("{reason}: {report}")
        }
        None => {
            tracing::error!(pid, %reason, "the VMM exited");
            reason
        }
    }
}

/// Cleans up after a shim that died: kills the VMM the state directory's
/// `vmm.pid` names (its pid and start time: a process that reused the pid
/// is left alone) and removes the directory with every mount under it.
pub fn cleanup_dead(dir: &Path) {
    let recorded = std::fs::read_to_string(dir.join("vmm.pid"))
        .ok()
        .and_then(|text| ProcessIdentity::parse(&text));
    if let Some(identity) = recorded {
        match identity.open() {
            Some(vmm) => {
                if let Err(error) = vmm.kill() {
                    tracing::warn!(pid = identity.pid, %error, "cannot kill the dead shim's VMM");
                }
            }
            None => tracing::info!(pid = identity.pid, "the dead shim's VMM is gone"),
        }
    }
    remove_state(dir, None);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `sleep` standing in for a dead shim's VMM, its identity in
    /// `dir/vmm.pid` (with `start_time` moved by `skew`).
    fn orphan(dir: &Path, skew: u64) -> std::process::Child {
        std::fs::create_dir_all(dir).unwrap();
        let child = std::process::Command::new("sleep")
            .arg("600")
            .spawn()
            .unwrap();
        let mut identity = ProcessIdentity::of(child.id()).unwrap();
        identity.start_time += skew;
        std::fs::write(dir.join("vmm.pid"), identity.to_line()).unwrap();
        child
    }

    #[test]
    fn cleanup_after_a_dead_shim_kills_its_vmm_only() {
        let root = tempfile::tempdir().unwrap();
        let ours = root.path().join("ours");
        let mut vmm = orphan(&ours, 0);
        cleanup_dead(&ours);
        let status = vmm.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL)
        );
        assert!(!ours.exists(), "the state directory is removed");

        // The pid now belongs to a process that started at another time.
        let reused = root.path().join("reused");
        let mut bystander = orphan(&reused, 1);
        cleanup_dead(&reused);
        assert!(
            bystander.try_wait().unwrap().is_none(),
            "a reused pid was killed"
        );
        assert!(!reused.exists());
        bystander.kill().unwrap();
        bystander.wait().unwrap();
    }

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

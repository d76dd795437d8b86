//! [`VmmProcess`]: a started vessel-vmm, and connecting to its guest's
//! agent once it answers ([`connect_agent`]).
//!
//! A `VmmProcess` that is dropped while its VMM still runs kills it, so no
//! error path leaves a VMM behind. [`PidFd`] signals the VMM by a pidfd,
//! which a reused pid cannot fake.

use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vessel_agent_protocol::{AgentClient, ClientError, AGENT_VSOCK_PORT};

/// Errors of starting or reaping a VMM.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("start the VMM {program}")]
    Spawn {
        program: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("wait for the VMM (pid {pid})")]
    Wait {
        pid: u32,
        #[source]
        source: io::Error,
    },
}

/// Why the agent could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ConnectAgentError {
    #[error("the VMM exited before the agent answered")]
    VmmExited(#[source] ClientError),
    #[error("the agent did not answer within {timeout:?}")]
    Timeout {
        timeout: Duration,
        #[source]
        source: ClientError,
    },
    #[error("the agent's first Check failed")]
    Check(#[source] ClientError),
}

/// How long one connection attempt may take while the guest comes up.
const CONNECT_STEP: Duration = Duration::from_secs(5);

/// Connects to the agent through the VMM's hybrid vsock socket `vsock`,
/// retrying for at most `timeout` and giving up as soon as `exited` says
/// the VMM is gone; then one Check, after which the agent has set the
/// connection up. Calls on the client time out after `call_timeout`.
///
/// A first Check that goes unanswered (no reply within `call_timeout`, or
/// the connection dropped) is tried again on a new connection while time is
/// left: on an emulated-CPL0 host a request that reaches the agent while it
/// starts the connection's threads can be lost (agent/README.md), and Check
/// changes nothing. An error status from the agent is final.
pub fn connect_agent(
    vsock: &Path,
    timeout: Duration,
    call_timeout: Duration,
    mut exited: impl FnMut() -> bool,
) -> Result<AgentClient, ConnectAgentError> {
    let deadline = Instant::now() + timeout;
    let mut unanswered = 0u32;
    loop {
        let step = deadline
            .saturating_duration_since(Instant::now())
            .min(CONNECT_STEP);
        match AgentClient::connect(vsock, AGENT_VSOCK_PORT, step) {
            Ok(agent) => {
                let agent = agent.with_call_timeout(call_timeout);
                match agent.check() {
                    Ok(_) => return Ok(agent),
                    Err(source)
                        if source.code().is_none() && !exited() && Instant::now() < deadline =>
                    {
                        unanswered += 1;
                        tracing::warn!(
                            attempt = unanswered,
                            error = ?source,
                            "the agent's first Check went unanswered; trying a new connection"
                        );
                    }
                    Err(source) => return Err(ConnectAgentError::Check(source)),
                }
            }
            Err(source) if exited() => return Err(ConnectAgentError::VmmExited(source)),
            Err(source) if Instant::now() >= deadline => {
                return Err(ConnectAgentError::Timeout { timeout, source })
            }
            Err(_) => {}
        }
    }
}

/// A running (or exited, not yet dropped) vessel-vmm.
pub struct VmmProcess {
    child: Child,
    reaped: Option<ExitStatus>,
}

impl VmmProcess {
    /// Starts `command` (from [`crate::VmmCommand::command`], its output
    /// set by the caller).
    pub fn spawn(command: &mut Command) -> Result<VmmProcess, ProcessError> {
        let child = command.spawn().map_err(|source| ProcessError::Spawn {
            program: PathBuf::from(command.get_program()),
            source,
        })?;
        Ok(VmmProcess {
            child,
            reaped: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The VMM's stdout, if it was piped (the console without `--serial`).
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.child.stdout.take()
    }

    /// The VMM's stderr (its log), if it was piped.
    pub fn take_stderr(&mut self) -> Option<ChildStderr> {
        self.child.stderr.take()
    }

    /// Its exit status, if it has exited.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>, ProcessError> {
        if self.reaped.is_none() {
            self.reaped = self.child.try_wait().map_err(|e| self.wait_error(e))?;
        }
        Ok(self.reaped)
    }

    /// Whether it has exited (a failed wait counts as exited: there is
    /// nothing left to wait for).
    pub fn has_exited(&mut self) -> bool {
        !matches!(self.try_wait(), Ok(None))
    }

    /// Waits for it to exit.
    pub fn wait(&mut self) -> Result<ExitStatus, ProcessError> {
        if let Some(status) = self.reaped {
            return Ok(status);
        }
        let status = self.child.wait().map_err(|e| self.wait_error(e))?;
        self.reaped = Some(status);
        Ok(status)
    }

    /// Waits at most `timeout` for it to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>, ProcessError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILLs it if it still runs, and reaps it.
    pub fn kill(&mut self) -> Result<ExitStatus, ProcessError> {
        if let Some(status) = self.try_wait()? {
            return Ok(status);
        }
        // Through a pidfd: the VM's own process first (PidFd::kill).
        let killed = PidFd::open(self.pid()).and_then(|pidfd| pidfd.kill());
        if let Err(error) = killed.or_else(|_| self.child.kill()) {
            tracing::warn!(pid = self.pid(), %error, "cannot kill the VMM");
        }
        self.wait()
    }

    /// Connects to its guest's agent (see [`connect_agent`]), giving up
    /// as soon as the VMM exits.
    pub fn connect_agent(
        &mut self,
        vsock: &Path,
        timeout: Duration,
        call_timeout: Duration,
    ) -> Result<AgentClient, ConnectAgentError> {
        connect_agent(vsock, timeout, call_timeout, || self.has_exited())
    }

    fn wait_error(&self, source: io::Error) -> ProcessError {
        ProcessError::Wait {
            pid: self.child.id(),
            source,
        }
    }
}

impl Drop for VmmProcess {
    fn drop(&mut self) {
        if !self.has_exited() {
            let _ = self.kill();
        }
    }
}

/// A pidfd of a process: signals reach that process or none, never one
/// that reused its pid.
#[derive(Debug)]
pub struct PidFd(OwnedFd);

impl PidFd {
    /// A pidfd of `pid`, which must be our child or a process we know is
    /// the one meant at this moment.
    pub fn open(pid: u32) -> io::Result<PidFd> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new
        // descriptor or -1; no memory is passed.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel just returned this descriptor to us; nothing
        // else owns it.
        Ok(PidFd(unsafe { OwnedFd::from_raw_fd(fd as i32) }))
    }

    /// Kills the VMM: SIGKILL to the VM's process, the monitor's child
    /// (`crate::jail::vmm_pid`), so the monitor exits only once the VM is
    /// gone (its memory freed, out of its cgroup), or to this process when
    /// it has no child. `Ok` also when the process has already exited.
    pub fn kill(&self) -> io::Result<()> {
        if let Some(vm) = self.vm_process() {
            if vm.send_kill().is_ok() {
                return Ok(());
            }
        }
        self.send_kill()
    }

    /// The pid this pidfd refers to, from `/proc/self/fdinfo`.
    fn pid(&self) -> Option<u32> {
        let info =
            std::fs::read_to_string(format!("/proc/self/fdinfo/{}", self.0.as_raw_fd())).ok()?;
        info.lines()
            .find_map(|l| l.strip_prefix("Pid:"))
            .and_then(|pid| pid.trim().parse().ok())
            .filter(|&pid: &i64| pid > 0)
            .map(|pid| pid as u32)
    }

    /// A pidfd of this (monitor) process's child, checked to be its child
    /// still after the open, so a reused pid cannot pass for it.
    fn vm_process(&self) -> Option<PidFd> {
        let monitor = self.pid()?;
        let vm = crate::jail::vmm_pid(monitor);
        if vm == monitor {
            return None;
        }
        let pidfd = PidFd::open(vm).ok()?;
        (crate::jail::vmm_pid(monitor) == vm).then_some(pidfd)
    }

    fn send_kill(&self) -> io::Result<()> {
        // SAFETY: pidfd_send_signal on a descriptor we own, no siginfo.
        let sent = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.0.as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        match sent {
            0 => Ok(()),
            _ => match io::Error::last_os_error() {
                e if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
                e => Err(e),
            },
        }
    }
}

/// A process named so that a reused pid cannot pass for it: its pid and
/// its start time (field 22 of `/proc/<pid>/stat`, clock ticks after boot).
/// Written next to a VMM (`vmm.pid`) for whoever cleans up after a shim that
/// died.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessIdentity {
    pub pid: u32,
    pub start_time: u64,
}

impl ProcessIdentity {
    /// The identity of the running process `pid`.
    pub fn of(pid: u32) -> io::Result<ProcessIdentity> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        let start_time = start_time(&stat).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("/proc/{pid}/stat has no start time"),
            )
        })?;
        Ok(ProcessIdentity { pid, start_time })
    }

    /// `PID START_TIME`, as [`ProcessIdentity::parse`] reads it.
    pub fn to_line(&self) -> String {
        format!("{} {}", self.pid, self.start_time)
    }

    pub fn parse(text: &str) -> Option<ProcessIdentity> {
        let mut words = text.split_whitespace();
        let pid = words.next()?.parse().ok()?;
        let start_time = words.next()?.parse().ok()?;
        words
            .next()
            .is_none()
            .then_some(ProcessIdentity { pid, start_time })
    }

    /// A pidfd of this process if it still runs: opened first, then the
    /// start time checked, so the pidfd is of the process that matched.
    pub fn open(&self) -> Option<PidFd> {
        let pidfd = PidFd::open(self.pid).ok()?;
        (ProcessIdentity::of(self.pid).ok()? == *self).then_some(pidfd)
    }
}

/// Field 22 of a `/proc/<pid>/stat` line. The command name (field 2) may
/// hold spaces and parentheses, so fields are counted after its last `)`.
fn start_time(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    after_comm.split_whitespace().nth(19)?.parse().ok()
}

/// What a reader thread kept of a pipe: its last `limit` bytes.
#[derive(Clone, Default)]
pub struct OutputTail(Arc<Mutex<Vec<u8>>>);

impl OutputTail {
    /// Reads `pipe` to its end on a thread of its own, keeping the last
    /// `limit` bytes: the VMM never blocks on a full pipe.
    pub fn drain(
        pipe: impl Read + Send + 'static,
        limit: usize,
    ) -> io::Result<(OutputTail, JoinHandle<()>)> {
        let tail = OutputTail::default();
        let kept = tail.clone();
        let reader = std::thread::Builder::new()
            .name("vmm-output".into())
            .spawn(move || {
                let mut pipe = pipe;
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = pipe.read(&mut buf) {
                    let mut kept = kept.0.lock().unwrap_or_else(|p| p.into_inner());
                    kept.extend_from_slice(&buf[..n]);
                    let excess = kept.len().saturating_sub(limit);
                    kept.drain(..excess);
                }
            })?;
        Ok((tail, reader))
    }

    /// What was kept so far, as text.
    pub fn text(&self) -> String {
        let kept = self.0.lock().unwrap_or_else(|p| p.into_inner());
        String::from_utf8_lossy(&kept).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Stdio;

    #[test]
    fn a_dropped_process_is_killed() {
        let mut sleeper = Command::new("sleep");
        sleeper.arg("600");
        let vmm = VmmProcess::spawn(&mut sleeper).unwrap();
        let pid = vmm.pid();
        let pidfd = PidFd::open(pid).unwrap();
        drop(vmm);
        // Reaped: the pid is gone, and the pidfd's kill is a no-op.
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
        pidfd.kill().unwrap();
    }

    #[test]
    fn a_kill_goes_to_the_monitors_child_and_the_monitor_follows() {
        // sh plays the monitor: it waits for its child and exits.
        let mut monitor = Command::new("sh");
        monitor.args(["-c", "sleep 600 & wait; exit 3"]);
        let mut vmm = VmmProcess::spawn(&mut monitor).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while crate::jail::vmm_pid(vmm.pid()) == vmm.pid() {
            assert!(Instant::now() < deadline, "sh never started its child");
            std::thread::sleep(Duration::from_millis(10));
        }
        let child = crate::jail::vmm_pid(vmm.pid());
        PidFd::open(vmm.pid()).unwrap().kill().unwrap();
        // The monitor was not killed: it saw its child die and exited.
        assert_eq!(vmm.wait().unwrap().code(), Some(3));
        let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
        assert!(stat.is_empty() || stat.contains(") Z "), "{stat}");
    }

    #[test]
    fn kill_wait_and_timeouts() {
        let mut sleeper = Command::new("sleep");
        sleeper.arg("600");
        let mut vmm = VmmProcess::spawn(&mut sleeper).unwrap();
        assert!(vmm
            .wait_timeout(Duration::from_millis(50))
            .unwrap()
            .is_none());
        PidFd::open(vmm.pid()).unwrap().kill().unwrap();
        let status = vmm.wait().unwrap();
        assert!(!status.success());
        assert_eq!(
            vmm.kill().unwrap(),
            status,
            "a second kill reports the same exit"
        );
        assert!(vmm.has_exited());
    }

    #[test]
    fn a_missing_binary_is_named() {
        let err = VmmProcess::spawn(&mut Command::new("/no/such/vessel-vmm"))
            .err()
            .unwrap();
        assert!(err.to_string().contains("/no/such/vessel-vmm"), "{err}");
    }

    #[test]
    fn connecting_gives_up_when_the_vmm_exits() {
        let dir = tempfile::tempdir().unwrap();
        let mut quick = Command::new("true");
        let mut vmm = VmmProcess::spawn(&mut quick).unwrap();
        let err = vmm
            .connect_agent(
                &dir.path().join("vsock.sock"),
                Duration::from_secs(60),
                Duration::from_secs(1),
            )
            .err()
            .unwrap();
        assert!(matches!(err, ConnectAgentError::VmmExited(_)), "{err:?}");
    }

    #[test]
    fn connecting_gives_up_at_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let err = connect_agent(
            &dir.path().join("vsock.sock"),
            Duration::from_millis(100),
            Duration::from_secs(1),
            || false,
        )
        .err()
        .unwrap();
        assert!(matches!(err, ConnectAgentError::Timeout { .. }), "{err:?}");
    }

    #[test]
    fn an_identity_names_one_process_only() {
        let mut sleeper = Command::new("sleep");
        sleeper.arg("600");
        let mut vmm = VmmProcess::spawn(&mut sleeper).unwrap();
        let identity = ProcessIdentity::of(vmm.pid()).unwrap();
        assert_eq!(ProcessIdentity::parse(&identity.to_line()), Some(identity));
        assert!(identity.open().is_some());
        let reused = ProcessIdentity {
            start_time: identity.start_time + 1,
            ..identity
        };
        assert!(
            reused.open().is_none(),
            "another start time is another process"
        );
        vmm.kill().unwrap();
        assert!(identity.open().is_none(), "a reaped process is gone");
        assert_eq!(ProcessIdentity::parse("12"), None);
        assert_eq!(ProcessIdentity::parse("12 34 56"), None);
    }

    #[test]
    fn the_start_time_is_counted_after_the_command_name() {
        let stat = "42 (a b) c) S 1 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(start_time(stat), Some(987654));
        assert_eq!(start_time("42 (x) S 1"), None);
    }

    #[test]
    fn a_drained_pipe_keeps_its_tail() {
        let mut talker = Command::new("sh");
        talker
            .args([
                "-c",
                "i=0; while [ $i -lt 3000 ]; do echo line$i; i=$((i+1)); done",
            ])
            .stdout(Stdio::piped());
        let mut vmm = VmmProcess::spawn(&mut talker).unwrap();
        let (tail, reader) = OutputTail::drain(vmm.take_stdout().unwrap(), 100).unwrap();
        assert!(vmm.wait().unwrap().success());
        reader.join().unwrap();
        let text = tail.text();
        assert!(
            text.len() <= 100 && text.ends_with("line2999\n"),
            "{text:?}"
        );
    }
}

#[cfg(test)]
#[path = "process/connect_tests.rs"]
mod connect_tests;

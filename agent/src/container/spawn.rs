//! Starting a container process: `clone3` into new namespaces and the
//! container's cgroup, then the child walks its [`Plan`].
//!
//! The agent owns both ends of two close-on-exec pipes per process: the
//! child reports on one ([`Report`]s) and waits on the other (the id-map and
//! start bytes). [`Spawner`] is the seam unit tests replace.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::OnceLock;

use super::child::LinuxChildSys;
use super::plan::{Ended, Plan, Report};

/// `CLONE_INTO_CGROUP` (Linux 5.7), not in every libc release.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// How to start one process.
#[derive(Debug)]
pub struct SpawnRequest<'a> {
    /// What the child does; its report/start fds are filled in here.
    pub plan: &'a mut Plan,
    /// CLONE_NEW* flags: the namespaces the process gets of its own.
    pub namespaces: u64,
    /// The cgroup directory to start in (`CLONE_INTO_CGROUP`).
    pub cgroup: Option<RawFd>,
    /// A pidfd whose pid namespace the child is born into.
    pub pid_ns_of: Option<RawFd>,
    /// uid_map and gid_map contents, written before the child goes on.
    pub id_maps: Option<(String, String)>,
}

/// A started process, as the agent holds it.
#[derive(Debug)]
pub struct Spawned {
    /// Its pid in the agent's pid namespace.
    pub pid: i32,
    /// Its pidfd: for signals without pid reuse and for joining its
    /// namespaces.
    pub pidfd: OwnedFd,
    /// Reports from the child.
    pub reports: File,
    /// The start byte goes here (init processes).
    pub start: File,
}

impl Spawned {
    /// Reads the next report: `None` at EOF (`execve` succeeded or the child
    /// died).
    pub fn next_report(&mut self) -> io::Result<Option<Report>> {
        read_report(&mut self.reports)
    }
}

/// Reads one [`Report`]; `None` at EOF.
pub fn read_report(reports: &mut File) -> io::Result<Option<Report>> {
    let mut buf = [0u8; Report::LEN];
    let mut got = 0;
    while got < buf.len() {
        match reports.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Some(Report::decode(buf)))
}

/// Starts container processes.
pub trait Spawner: Send + Sync {
    /// Starts the child of `req`; it runs its plan up to `WaitStart` or
    /// `execve`.
    fn spawn(&self, req: SpawnRequest<'_>) -> io::Result<Spawned>;
}

/// `pipe2(O_CLOEXEC)`: (read, write).
pub fn pipe() -> io::Result<(File, File)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid out-array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    Ok(unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) })
}

/// The real spawner: `clone3` in the calling thread.
#[derive(Debug, Default)]
pub struct LinuxSpawner;

/// The agent's own pid namespace, to return to after a spawn into another.
fn own_pid_ns() -> io::Result<RawFd> {
    static OWN: OnceLock<Result<OwnedFd, i32>> = OnceLock::new();
    let own = OWN.get_or_init(|| {
        File::open("/proc/self/ns/pid")
            .map(OwnedFd::from)
            .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))
    });
    match own {
        Ok(fd) => Ok(fd.as_raw_fd()),
        Err(errno) => Err(io::Error::from_raw_os_error(*errno)),
    }
}

fn setns(fd: RawFd, nstype: libc::c_int) -> io::Result<()> {
    // SAFETY: integer-only syscall.
    if unsafe { libc::setns(fd, nstype) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The child's first moves: signals as a fresh process has them, and every
/// inherited agent fd close-on-exec. Raw syscalls only.
fn child_prologue() {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset; the calls only touch this process.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        // Rust ignores SIGPIPE; an ignored signal stays ignored across exec.
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::close_range(3, u32::MAX, libc::CLOSE_RANGE_CLOEXEC as libc::c_int);
    }
}

impl Spawner for LinuxSpawner {
    fn spawn(&self, req: SpawnRequest<'_>) -> io::Result<Spawned> {
        let (reports_rx, reports_tx) = pipe()?;
        let (start_rx, mut start_tx) = pipe()?;
        req.plan.report_fd = reports_tx.as_raw_fd();
        req.plan.start_fd = start_rx.as_raw_fd();
        let plan: &Plan = req.plan;
        let (argv, envp) = plan.pointers();

        let mut pidfd: libc::c_int = -1;
        // SAFETY: clone_args is plain data; zeroes are valid defaults.
        let mut args: libc::clone_args = unsafe { std::mem::zeroed() };
        args.flags = req.namespaces | libc::CLONE_PIDFD as u64;
        args.pidfd = &mut pidfd as *mut libc::c_int as u64;
        args.exit_signal = libc::SIGCHLD as u64;
        if let Some(cgroup) = req.cgroup {
            args.flags |= CLONE_INTO_CGROUP;
            args.cgroup = cgroup as u64;
        }

        if let Some(fd) = req.pid_ns_of {
            setns(fd, libc::CLONE_NEWPID)?;
        }
        // SAFETY: fork-like clone3 (no stack given): the child continues on a
        // copy of this stack and only calls `child_prologue`,
        // `Plan::execute` with LinuxChildSys (raw syscalls on data built
        // above) and `_exit`.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                &mut args as *mut libc::clone_args,
                std::mem::size_of::<libc::clone_args>(),
            )
        };
        if ret == 0 {
            child_prologue();
            let code = match plan.execute(&LinuxChildSys, &argv, &envp) {
                Ended::Abandoned => 0,
                Ended::Failed(_) => 127,
            };
            // SAFETY: ends the child without running the parent's atexit
            // handlers or destructors.
            unsafe { libc::_exit(code) };
        }
        let clone_err = io::Error::last_os_error();
        if req.pid_ns_of.is_some() {
            // Back to the agent's own pid namespace for later children.
            if let Err(e) = own_pid_ns().and_then(|fd| setns(fd, libc::CLONE_NEWPID)) {
                tracing::error!(error = %e, "returning to the agent's pid namespace");
            }
        }
        if ret == -1 {
            return Err(clone_err);
        }
        let pid = ret as i32;
        tracing::debug!(pid, steps = plan.steps.len(), "cloned");
        // SAFETY: clone3 stored a new pidfd owned by nobody else.
        let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
        drop(reports_tx);
        drop(start_rx);
        if let Some((uid_map, gid_map)) = &req.id_maps {
            std::fs::write(format!("/proc/{pid}/uid_map"), uid_map)?;
            std::fs::write(format!("/proc/{pid}/gid_map"), gid_map)?;
            start_tx.write_all(&[1])?;
        }
        Ok(Spawned {
            pid,
            pidfd,
            reports: reports_rx,
            start: start_tx,
        })
    }
}

//! What a new container process does between `clone3` and `execve`, as data.
//!
//! The agent is multi-threaded, so its cloned child may only make raw
//! syscalls: no allocation, no locks, no logging. The agent therefore turns
//! the OCI spec into a [`Plan`], a list of [`Step`]s whose strings and arrays
//! are all built beforehand, and the child only walks it
//! ([`Plan::execute`]) through [`ChildSys`]. Unit tests run the same walk
//! against a recording fake; the guest runs it with
//! [`LinuxChildSys`](super::child::LinuxChildSys).
//!
//! The child reports to the agent on its error pipe with [`Report`]s: a
//! failure names the step and the errno; `READY` says setup is done and the
//! process waits for StartContainer. On a successful `execve` the pipe closes
//! (it is close-on-exec), which the agent reads as "started".

use std::ffi::{c_char, CString};
use std::os::fd::RawFd;

use super::caps::CapSets;

/// One syscall-level step of a container process's setup.
#[derive(Debug, Clone)]
pub enum Step {
    /// Joins the namespaces `nstype` (CLONE_NEW* bits) of the process behind
    /// pidfd `fd`.
    SetNs { fd: RawFd, nstype: libc::c_int },
    /// Waits for one byte from the agent (uid/gid maps written).
    WaitParent,
    /// `unshare(2)` (the cgroup namespace, once in the container's cgroup).
    Unshare(libc::c_int),
    /// `umask(2)`.
    Umask(libc::mode_t),
    /// `mount(2)`.
    Mount {
        source: Option<CString>,
        target: CString,
        fstype: Option<CString>,
        flags: libc::c_ulong,
        data: Option<CString>,
    },
    /// Re-mounts the bind mount at `target` with `flags` added to the flags
    /// it must keep (nosuid, nodev, noexec: locked in a user namespace).
    RemountBind {
        target: CString,
        flags: libc::c_ulong,
    },
    /// Creates a directory; an existing one is fine.
    Mkdir { path: CString, mode: libc::mode_t },
    /// Creates an empty file (a bind-mount target); an existing one is fine.
    Touch { path: CString },
    /// Creates a device node; an existing one is fine.
    Mknod {
        path: CString,
        mode: libc::mode_t,
        dev: libc::dev_t,
    },
    /// Bind-mounts `source` (a host device) on `target`, creating the file.
    BindDevice { source: CString, target: CString },
    /// `symlink(target, link)`; an existing link is fine.
    Symlink { target: CString, link: CString },
    /// `chdir(2)`.
    Chdir(CString),
    /// `pivot_root(".", ".")` then a lazy unmount of the old root: the cwd
    /// must be the new root.
    PivotRoot,
    /// Hides `path`: /dev/null bound over a file, an empty read-only tmpfs
    /// over a directory; a missing path is skipped.
    MaskPath(CString),
    /// Makes `path` read-only (bind on itself, remount); missing is skipped.
    ReadonlyPath(CString),
    /// Writes `data` to an existing file (sysctls under /proc/sys).
    WriteFile { path: CString, data: CString },
    /// `sethostname(2)`.
    SetHostname(CString),
    /// `setdomainname(2)`.
    SetDomainname(CString),
    /// Makes a new session (and the terminal, if any, its controlling one).
    Setsid,
    /// `ioctl(fd, TIOCSCTTY)`.
    SetCtty(RawFd),
    /// `dup2(from, to)`.
    Dup2 { from: RawFd, to: RawFd },
    /// `prlimit(0, resource, {soft, hard})`.
    SetRlimit {
        resource: libc::c_int,
        soft: u64,
        hard: u64,
    },
    /// `setgroups(2)`.
    SetGroups(Vec<libc::gid_t>),
    /// Keeps permitted capabilities across the uid change, sets gid then uid,
    /// then stops keeping them.
    SetUser { uid: libc::uid_t, gid: libc::gid_t },
    /// Drops every bounding capability not in `keep`, up to `last`.
    DropBounding { keep: u64, last: u32 },
    /// Sets effective, permitted and inheritable capabilities, then raises
    /// the ambient ones.
    SetCaps(CapSets),
    /// `PR_SET_NO_NEW_PRIVS`.
    NoNewPrivs,
    /// Installs seccomp filters, in order.
    Seccomp {
        filters: Vec<Vec<libc::sock_filter>>,
        flags: libc::c_ulong,
    },
    /// Finds the first executable candidate; reports ENOENT when none is.
    /// Chosen here, before READY, so a missing command fails the create.
    FindExecutable,
    /// Reports READY and waits for StartContainer (one byte on the start
    /// fd; EOF means the create was abandoned, and the process exits).
    WaitStart,
    /// `execve` of the chosen candidate.
    Exec,
}

/// What the executable is and how it runs.
#[derive(Debug, Clone)]
pub struct Command {
    /// Paths to try in order (the PATH search, done in the container root).
    pub candidates: Vec<CString>,
    /// argv, as owned strings.
    pub argv: Vec<CString>,
    /// The environment, `KEY=value`.
    pub envp: Vec<CString>,
}

/// The steps of one process, and the fds it talks to the agent on.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The setup, in order.
    pub steps: Vec<Step>,
    /// What to run.
    pub command: Command,
    /// Where failures and READY go (write end, close-on-exec).
    pub report_fd: RawFd,
    /// Where StartContainer's byte and the id-map byte come from.
    pub start_fd: RawFd,
}

/// A message on the report pipe: step index and errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// The failing step's index, or [`Report::READY_STEP`].
    pub step: u32,
    /// The errno; 0 for READY.
    pub errno: i32,
}

impl Report {
    /// The "step" of a READY report.
    pub const READY_STEP: u32 = u32::MAX;
    /// The "step" of a failed `execve`.
    pub const EXEC_STEP: u32 = u32::MAX - 1;
    /// Bytes on the wire.
    pub const LEN: usize = 8;

    /// Setup done, waiting for start.
    pub const READY: Report = Report {
        step: Report::READY_STEP,
        errno: 0,
    };

    /// The wire form.
    pub fn encode(self) -> [u8; Report::LEN] {
        let mut buf = [0u8; Report::LEN];
        buf[..4].copy_from_slice(&self.step.to_ne_bytes());
        buf[4..].copy_from_slice(&self.errno.to_ne_bytes());
        buf
    }

    /// From the wire form.
    pub fn decode(buf: [u8; Report::LEN]) -> Report {
        let [a, b, c, d, e, f, g, h] = buf;
        Report {
            step: u32::from_ne_bytes([a, b, c, d]),
            errno: i32::from_ne_bytes([e, f, g, h]),
        }
    }
}

/// The syscalls a container process makes before `execve`. Implementations
/// used after `clone3` must not allocate, lock or log.
pub trait ChildSys {
    /// Runs one step (all but the flow-control steps); `Err(errno)`.
    fn step(&self, step: &Step) -> Result<(), i32>;
    /// Whether `path` is an executable file (`faccessat(X_OK)`).
    fn executable(&self, path: &CString) -> bool;
    /// Writes a report.
    fn report(&self, fd: RawFd, report: Report);
    /// Reads one byte; `false` on EOF or error.
    fn read_byte(&self, fd: RawFd) -> bool;
    /// `execve`; returns the errno only if it failed.
    fn exec(&self, path: &CString, argv: &[*const c_char], envp: &[*const c_char]) -> i32;
}

/// How a walk ended without `execve` succeeding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// A step failed; reported.
    Failed(Report),
    /// The agent gave up on the create (start fd EOF): exit quietly.
    Abandoned,
}

impl Plan {
    /// Null-terminated pointer arrays over `argv` and `envp`, built before
    /// `clone3` (the child cannot allocate).
    pub fn pointers(&self) -> (Vec<*const c_char>, Vec<*const c_char>) {
        fn ptrs(v: &[CString]) -> Vec<*const c_char> {
            v.iter()
                .map(|s| s.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect()
        }
        (ptrs(&self.command.argv), ptrs(&self.command.envp))
    }

    /// Walks the plan; returns only if `execve` did not happen. Allocates
    /// nothing: `argv`/`envp` come from [`Plan::pointers`].
    pub fn execute(
        &self,
        sys: &dyn ChildSys,
        argv: &[*const c_char],
        envp: &[*const c_char],
    ) -> Ended {
        let fail = |step: u32, errno: i32| {
            let report = Report { step, errno };
            sys.report(self.report_fd, report);
            Ended::Failed(report)
        };
        let mut chosen: Option<&CString> = None;
        for (index, step) in self.steps.iter().enumerate() {
            let index = index as u32;
            match step {
                Step::WaitParent => {
                    if !sys.read_byte(self.start_fd) {
                        return Ended::Abandoned;
                    }
                }
                Step::FindExecutable => {
                    chosen = self.command.candidates.iter().find(|c| sys.executable(c));
                    if chosen.is_none() {
                        return fail(index, libc::ENOENT);
                    }
                }
                Step::WaitStart => {
                    sys.report(self.report_fd, Report::READY);
                    if !sys.read_byte(self.start_fd) {
                        return Ended::Abandoned;
                    }
                }
                Step::Exec => {
                    let Some(path) = chosen.or(self.command.candidates.first()) else {
                        return fail(index, libc::ENOENT);
                    };
                    let errno = sys.exec(path, argv, envp);
                    return fail(Report::EXEC_STEP, errno);
                }
                other => {
                    if let Err(errno) = sys.step(other) {
                        return fail(index, errno);
                    }
                }
            }
        }
        // A plan without Exec: nothing ran.
        fail(Report::EXEC_STEP, libc::ENOEXEC)
    }

    /// A readable name of step `index` for error messages, e.g.
    /// `mount on "/proc"`.
    pub fn describe(&self, index: u32) -> String {
        if index == Report::EXEC_STEP {
            let path = self.command.candidates.first();
            return format!("executing {}", show(path.map(|p| p.as_c_str())));
        }
        match self.steps.get(index as usize) {
            Some(step) => describe_step(step, &self.command),
            None => format!("step {index}"),
        }
    }
}

fn show(s: Option<&std::ffi::CStr>) -> String {
    s.map_or_else(|| "\"\"".into(), |s| format!("{:?}", s.to_string_lossy()))
}

fn describe_step(step: &Step, command: &Command) -> String {
    let s = |c: &CString| show(Some(c.as_c_str()));
    match step {
        Step::SetNs { nstype, .. } => format!("joining namespaces {nstype:#x}"),
        Step::WaitParent => "waiting for the id maps".into(),
        Step::Unshare(flags) => format!("unsharing namespaces {flags:#x}"),
        Step::Umask(_) => "setting the umask".into(),
        Step::Mount { target, fstype, .. } => format!(
            "mounting {} on {}",
            show(fstype.as_deref()).trim_matches('"'),
            s(target)
        ),
        Step::RemountBind { target, .. } => format!("remounting {}", s(target)),
        Step::Mkdir { path, .. } => format!("creating directory {}", s(path)),
        Step::Touch { path } => format!("creating file {}", s(path)),
        Step::Mknod { path, .. } => format!("creating device {}", s(path)),
        Step::BindDevice { target, .. } => format!("binding device {}", s(target)),
        Step::Symlink { link, .. } => format!("creating symlink {}", s(link)),
        Step::Chdir(path) => format!("changing directory to {}", s(path)),
        Step::PivotRoot => "pivoting into the container root".into(),
        Step::MaskPath(path) => format!("masking {}", s(path)),
        Step::ReadonlyPath(path) => format!("making {} read-only", s(path)),
        Step::WriteFile { path, .. } => format!("writing {}", s(path)),
        Step::SetHostname(_) => "setting the hostname".into(),
        Step::SetDomainname(_) => "setting the domain name".into(),
        Step::Setsid => "creating a session".into(),
        Step::SetCtty(_) => "setting the controlling terminal".into(),
        Step::Dup2 { to, .. } => format!("setting up fd {to}"),
        Step::SetRlimit { resource, .. } => format!("setting rlimit {resource}"),
        Step::SetGroups(_) => "setting additional groups".into(),
        Step::SetUser { uid, gid } => format!("switching to uid {uid} gid {gid}"),
        Step::DropBounding { .. } => "dropping bounding capabilities".into(),
        Step::SetCaps(_) => "setting capabilities".into(),
        Step::NoNewPrivs => "setting no_new_privs".into(),
        Step::Seccomp { .. } => "installing the seccomp filter".into(),
        Step::FindExecutable => {
            let name = command
                .argv
                .first()
                .map(|a| a.to_string_lossy().into_owned());
            format!("finding executable {:?} in $PATH", name.unwrap_or_default())
        }
        Step::WaitStart => "waiting for start".into(),
        Step::Exec => "executing".into(),
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;

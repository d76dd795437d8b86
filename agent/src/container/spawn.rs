//! Starting a container process: `clone3` into new namespaces and the
//! container's cgroup, then the child walks its [`Plan`].
//!
//! The child shares the agent's memory (`CLONE_VM`, as `posix_spawn` does)
//! on a stack of its own until `execve`. A fork would write-protect every
//! page of the multi-threaded agent, and the copy-on-write faults that
//! follow are what spoils guest-kernel copies on an emulated-CPL0 host
//! (agent/README.md); sharing also skips copying the page tables. The plan,
//! its pointer arrays and the stack stay alive, untouched, until the report
//! pipe reaches EOF: the child has then left this memory (its `execve`
//! replaced it, or it exited).
//!
//! The agent owns both ends of two close-on-exec pipes per process: the
//! child reports on one ([`Report`]s) and waits on the other (the id-map and
//! start bytes). [`Spawner`] is the seam unit tests replace.

use std::ffi::{c_char, c_int, c_void};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use syscalls::Sysno;

use super::child::{sys, LinuxChildSys};
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
    /// The start byte goes here (init processes). Declared before
    /// `reports`, so that it closes first when both are dropped: a child
    /// waiting for its start then gives up, and the report pipe ends.
    pub start: File,
    /// Reports from the child.
    pub reports: Reports,
}

impl Spawned {
    /// Reads the next report: `None` at EOF (`execve` succeeded or the child
    /// died).
    pub fn next_report(&mut self) -> io::Result<Option<Report>> {
        self.reports.next()
    }
}

/// How long dropping [`Reports`] waits for a child that has not yet left
/// the memory it shares with the agent; past it, that memory is leaked.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(10);

/// The read end of a child's report pipe, holding the memory the child
/// runs on (if it shares the agent's) until the pipe's EOF shows the child
/// left it.
#[derive(Debug)]
pub struct Reports {
    file: File,
    image: Option<Box<ChildImage>>,
}

impl Reports {
    /// Reports on `file` from a child that does not share memory with us.
    #[cfg(test)]
    pub fn new(file: File) -> Reports {
        Reports { file, image: None }
    }

    /// Reads the next report: `None` at EOF, after which the child's memory
    /// is released.
    pub fn next(&mut self) -> io::Result<Option<Report>> {
        let report = read_report(&mut self.file)?;
        if report.is_none() {
            self.release();
        }
        Ok(report)
    }

    fn release(&mut self) {
        if let Some(mut image) = self.image.take() {
            image.release();
        }
    }

    /// Reads to EOF, at most until `deadline`; true at EOF.
    fn drain(&mut self, deadline: Instant) -> bool {
        let mut buf = [0u8; 64];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut pfd = libc::pollfd {
                fd: self.file.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = left.as_millis().min(i32::MAX as u128) as c_int;
            // SAFETY: one valid pollfd.
            let ready = unsafe { libc::poll(&mut pfd, 1, ms) };
            if ready == 0 {
                return false;
            }
            match self.file.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if matches!(e.kind(), io::ErrorKind::Interrupted) => {}
                Err(_) => return false,
            }
        }
    }
}

impl Drop for Reports {
    fn drop(&mut self) {
        if self.image.is_none() {
            return;
        }
        if self.drain(Instant::now() + LEAVE_TIMEOUT) {
            self.release();
        } else {
            // The child may still run on this memory: never reuse it.
            tracing::warn!("a container child did not exit; leaking its stack and plan");
            std::mem::forget(self.image.take());
        }
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

/// Stack of a child sharing the agent's memory: the plan walk needs little.
const CHILD_STACK: usize = 256 * 1024;
/// An inaccessible page below each stack.
const GUARD: usize = 4096;

/// An mmap'd child stack with a guard page. Stacks are reused, not
/// unmapped: unmapping changes the agent's page tables while its other
/// threads run.
#[derive(Debug)]
struct Stack {
    base: *mut c_void,
}

// SAFETY: a Stack is a plain mapping address; whoever holds it owns it.
unsafe impl Send for Stack {}

static STACKS: Mutex<Vec<Stack>> = Mutex::new(Vec::new());

impl Stack {
    fn take() -> io::Result<Stack> {
        if let Some(stack) = STACKS.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            return Ok(stack);
        }
        let prot = libc::PROT_READ | libc::PROT_WRITE;
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK;
        // SAFETY: a fresh anonymous mapping; nothing else is affected.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                GUARD + CHILD_STACK,
                prot,
                flags,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the first page of the mapping just made.
        if unsafe { libc::mprotect(base, GUARD, libc::PROT_NONE) } == -1 {
            let err = io::Error::last_os_error();
            // SAFETY: the mapping just made, used by nobody.
            unsafe { libc::munmap(base, GUARD + CHILD_STACK) };
            return Err(err);
        }
        Ok(Stack { base })
    }

    /// The highest address: stacks grow down.
    fn top(&self) -> u64 {
        self.base as u64 + (GUARD + CHILD_STACK) as u64
    }

    fn give_back(self) {
        STACKS.lock().unwrap_or_else(|p| p.into_inner()).push(self);
    }
}

/// What a child sharing the agent's memory reads until it leaves it.
#[derive(Debug)]
pub struct ChildImage {
    plan: Plan,
    argv: Vec<*const c_char>,
    envp: Vec<*const c_char>,
    stack: Option<Stack>,
}

// SAFETY: the raw pointers point into `plan`, which moves with the image
// (its strings live on the heap, so their addresses never change).
unsafe impl Send for ChildImage {}

impl ChildImage {
    fn release(&mut self) {
        if let Some(stack) = self.stack.take() {
            stack.give_back();
        }
    }
}

/// The child's entry on its own stack.
extern "C" fn child_main(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the ChildImage the parent keeps alive and unchanged
    // until this process has left the shared memory.
    let image = unsafe { &*(arg as *const ChildImage) };
    child_prologue();
    match image.plan.execute(&LinuxChildSys, &image.argv, &image.envp) {
        Ended::Abandoned => 0,
        Ended::Failed(_) => 127,
    }
}

/// `clone3(args)`; the child, on the stack `args` names, runs
/// `entry(arg)` and exits with what it returns. Returns what `clone3`
/// returned to the parent (the pid, or -errno).
///
/// # Safety
/// `args` must name a stack that stays mapped, and `arg` data that stays
/// valid, for as long as the child runs in this memory.
unsafe fn clone3_on_stack(
    args: &mut libc::clone_args,
    entry: extern "C" fn(*mut c_void) -> c_int,
    arg: *mut c_void,
) -> i64 {
    let ret: i64;
    // SAFETY: clone3 returns twice. The parent falls through with rax. The
    // child starts on its new stack with every other register as the
    // parent had it: it calls `entry(arg)` (held in r12/r13, which the
    // syscall preserves; the stack top is 16-byte aligned, so the call
    // leaves the ABI's alignment) and exits without returning here.
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "xor ebp, ebp",
            "mov rdi, r13",
            "call r12",
            "mov edi, eax",
            "mov eax, {exit_group}",
            "syscall",
            "ud2",
            "2:",
            exit_group = const libc::SYS_exit_group,
            inlateout("rax") libc::SYS_clone3 => ret,
            in("rdi") args as *mut libc::clone_args,
            in("rsi") std::mem::size_of::<libc::clone_args>(),
            in("r12") entry,
            in("r13") arg,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

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
/// inherited agent fd close-on-exec. Raw syscalls only (see child.rs).
fn child_prologue() {
    // The kernel's sigset is one word; its sigaction is handler, flags,
    // restorer, mask: all zero is SIG_DFL.
    let empty = 0u64;
    let default_action = [0u64; 4];
    let set = libc::SIG_SETMASK as usize;
    let mask = [set, &empty as *const u64 as usize, 0, 8, 0, 0];
    // Rust ignores SIGPIPE; an ignored signal stays ignored across exec.
    let pipe = libc::SIGPIPE as usize;
    let action = [pipe, default_action.as_ptr() as usize, 0, 8, 0, 0];
    let cloexec = libc::CLOSE_RANGE_CLOEXEC as usize;
    // SAFETY: each call gets valid kernel structures that outlive it and
    // only changes this process; a failure leaves nothing to undo.
    unsafe {
        let _ = sys(Sysno::rt_sigprocmask, mask);
        let _ = sys(Sysno::rt_sigaction, action);
        let _ = sys(Sysno::close_range, [3, u32::MAX as usize, cloexec, 0, 0, 0]);
    }
}

impl Spawner for LinuxSpawner {
    fn spawn(&self, req: SpawnRequest<'_>) -> io::Result<Spawned> {
        let (reports_rx, reports_tx) = pipe()?;
        let (start_rx, mut start_tx) = pipe()?;
        req.plan.report_fd = reports_tx.as_raw_fd();
        req.plan.start_fd = start_rx.as_raw_fd();
        // The child's own copy: the caller keeps its plan to name steps.
        let plan = req.plan.clone();
        let (argv, envp) = plan.pointers();
        let mut image = Box::new(ChildImage {
            plan,
            argv,
            envp,
            stack: Some(Stack::take()?),
        });
        let stack_top = image.stack.as_ref().map_or(0, Stack::top);

        let mut pidfd: libc::c_int = -1;
        // SAFETY: clone_args is plain data; zeroes are valid defaults.
        let mut args: libc::clone_args = unsafe { std::mem::zeroed() };
        args.flags = req.namespaces | libc::CLONE_PIDFD as u64 | libc::CLONE_VM as u64;
        args.pidfd = &mut pidfd as *mut libc::c_int as u64;
        args.exit_signal = libc::SIGCHLD as u64;
        args.stack = stack_top - CHILD_STACK as u64;
        args.stack_size = CHILD_STACK as u64;
        if let Some(cgroup) = req.cgroup {
            args.flags |= CLONE_INTO_CGROUP;
            args.cgroup = cgroup as u64;
        }

        if let Some(fd) = req.pid_ns_of {
            setns(fd, libc::CLONE_NEWPID)?;
        }
        let arg = &mut *image as *mut ChildImage as *mut c_void;
        // SAFETY: the stack and the image stay alive and unchanged until
        // the report pipe's EOF (`Reports` holds them), and the child only
        // runs `child_main`: raw syscalls on the image, then exit.
        let ret = unsafe { clone3_on_stack(&mut args, child_main, arg) };
        if req.pid_ns_of.is_some() {
            // Back to the agent's own pid namespace for later children.
            if let Err(e) = own_pid_ns().and_then(|fd| setns(fd, libc::CLONE_NEWPID)) {
                tracing::error!(error = %e, "returning to the agent's pid namespace");
            }
        }
        if ret < 0 {
            image.release();
            return Err(io::Error::from_raw_os_error(-ret as i32));
        }
        let pid = ret as i32;
        tracing::debug!(pid, steps = image.plan.steps.len(), "cloned");
        // SAFETY: clone3 stored a new pidfd owned by nobody else.
        let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
        drop(reports_tx);
        drop(start_rx);
        let mut reports = Reports {
            file: reports_rx,
            image: Some(image),
        };
        if let Some((uid_map, gid_map)) = &req.id_maps {
            let written = std::fs::write(format!("/proc/{pid}/uid_map"), uid_map)
                .and_then(|()| std::fs::write(format!("/proc/{pid}/gid_map"), gid_map))
                .and_then(|()| start_tx.write_all(&[1]));
            if let Err(e) = written {
                // The child waits for this byte: end it before `reports`
                // waits for it to leave our memory.
                drop(start_tx);
                reports.drain(Instant::now() + LEAVE_TIMEOUT);
                return Err(e);
            }
        }
        Ok(Spawned {
            pid,
            pidfd,
            start: start_tx,
            reports,
        })
    }
}

//! The VMM's pid namespace. After `unshare(CLONE_NEWPID)` the VMM forks:
//! the child is pid 1 of the new namespace and runs the VM; the parent,
//! the process its starter knows, stays as its monitor. The monitor drops
//! every capability, applies the `monitor` seccomp policy (wait, exit,
//! signals), waits for the VMM and exits as it did: with its exit code,
//! or by the same signal. The VMM gets SIGKILL when the monitor dies
//! (`PR_SET_PDEATHSIG`), so killing the process the starter knows kills
//! the VM too, and no VMM outlives its monitor.
//!
//! A compromised VMM sees no host process: its pid namespace holds itself
//! and its threads.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::seccomp::{Role, ThreadFilters};

/// Why the VMM could not start in its pid namespace.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error("create the pipe that tells the VMM its monitor is gone")]
    CreatePipe(#[source] io::Error),
    #[error("fork the VMM into its pid namespace")]
    Fork(#[source] io::Error),
    #[error("set the VMM's parent-death signal")]
    SetDeathSignal(#[source] io::Error),
    #[error("the monitor exited before the VMM started")]
    MonitorGone,
}

/// Forks. Returns in the child, the VMM, once it will die with its
/// monitor; the parent becomes the monitor and never returns.
pub fn fork_vmm(filters: ThreadFilters) -> Result<(), MonitorError> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the array it is given.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(MonitorError::CreatePipe(io::Error::last_os_error()));
    }
    // SAFETY: pipe2 succeeded; each fd is ours alone from here.
    let (alive_read, alive_write) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: the VMM has a single thread here (main checks that no
    // thread was started before the jail), so the child is a whole copy.
    match unsafe { libc::fork() } {
        -1 => Err(MonitorError::Fork(io::Error::last_os_error())),
        0 => {
            drop(alive_write);
            // SAFETY: prctl(PR_SET_PDEATHSIG) takes integer arguments only.
            if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) } != 0 {
                return Err(MonitorError::SetDeathSignal(io::Error::last_os_error()));
            }
            // The monitor may have died before the prctl: then its end of
            // the pipe is closed.
            if monitor_gone(&alive_read) {
                return Err(MonitorError::MonitorGone);
            }
            Ok(())
        }
        vmm => {
            drop(alive_read);
            monitor(vmm, filters, alive_write)
        }
    }
}

fn monitor_gone(alive: &OwnedFd) -> bool {
    let mut poll = libc::pollfd {
        fd: alive.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no wait.
    let ready = unsafe { libc::poll(&mut poll, 1, 0) };
    ready != 0 && poll.revents & (libc::POLLHUP | libc::POLLERR) != 0
}

/// The monitor: waits for `vmm` and ends as it did.
fn monitor(vmm: libc::pid_t, filters: ThreadFilters, _alive: OwnedFd) -> ! {
    if let Err(error) = crate::privileges::drop_unneeded(false) {
        tracing::warn!(error = %crate::error_chain(&error), "the VMM's monitor keeps its privileges");
    }
    filters.apply(Role::Monitor);
    tracing::debug!(vmm, "monitoring the VMM in its pid namespace");
    let mut status = 0;
    loop {
        // SAFETY: waits for our own child, writing its status into `status`.
        let waited = unsafe { libc::waitpid(vmm, &mut status, 0) };
        if waited == vmm {
            break;
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            tracing::error!(%error, vmm, "the VMM's monitor cannot wait for it");
            std::process::exit(1);
        }
    }
    if libc::WIFSIGNALED(status) {
        let signal = libc::WTERMSIG(status);
        // SAFETY: restores the default action of `signal` and sends it to
        // this process, which then ends as the VMM did.
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
            libc::kill(libc::getpid(), signal);
        }
        std::process::exit(128 + signal);
    }
    std::process::exit(libc::WEXITSTATUS(status));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    /// Forks a monitor whose VMM (pid 1 of its namespace) either exits with
    /// `exit_code` at once or, with `None`, tells its host pid and waits.
    /// Returns the monitor's pid and, with `None`, the VMM's host pid.
    fn start_monitored(exit_code: Option<i32>) -> (libc::pid_t, libc::pid_t) {
        let mut fds = [0; 2];
        // SAFETY: pipe writes two fds into the array.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        let (read, write) = (fds[0], fds[1]);
        // SAFETY: the child only makes syscalls and exits.
        let monitor = unsafe { libc::fork() };
        if monitor == 0 {
            // SAFETY: only syscalls, then the child ends.
            unsafe {
                libc::close(read);
                if super::super::namespaces::unshare_all().is_ok()
                    && fork_vmm(ThreadFilters::OFF).is_ok()
                {
                    if let Some(code) = exit_code {
                        libc::_exit(if libc::getpid() == 1 { code } else { 99 });
                    }
                    let host_pid = std::fs::read_link("/proc/self")
                        .ok()
                        .and_then(|p| p.to_str()?.parse::<i32>().ok())
                        .unwrap_or(0);
                    libc::write(write, (&host_pid as *const i32).cast(), 4);
                    libc::pause();
                }
                libc::_exit(98);
            }
        }
        let mut vmm: i32 = 0;
        // SAFETY: closes our write end, reads at most 4 bytes into `vmm`.
        unsafe {
            libc::close(write);
            if exit_code.is_none() {
                assert_eq!(libc::read(read, (&mut vmm as *mut i32).cast(), 4), 4);
            }
            libc::close(read);
        }
        (monitor, vmm)
    }

    fn wait_status(pid: libc::pid_t) -> libc::c_int {
        let mut status = 0;
        // SAFETY: waits for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        status
    }

    #[test]
    fn the_monitor_exits_with_its_vmms_code_and_by_its_signal() {
        if !is_root() {
            return;
        }
        let (monitor, _) = start_monitored(Some(7));
        let status = wait_status(monitor);
        assert!(libc::WIFEXITED(status), "{status:#x}");
        assert_eq!(
            libc::WEXITSTATUS(status),
            7,
            "the VMM is pid 1 of its namespace"
        );

        let (monitor, vmm) = start_monitored(None);
        // SAFETY: kill takes integers; the VMM is our grandchild.
        unsafe { libc::kill(vmm, libc::SIGKILL) };
        let status = wait_status(monitor);
        assert!(libc::WIFSIGNALED(status), "{status:#x}");
        assert_eq!(libc::WTERMSIG(status), libc::SIGKILL);
    }

    #[test]
    fn a_vmm_dies_with_its_monitor() {
        if !is_root() {
            return;
        }
        let (monitor, vmm) = start_monitored(None);
        assert!(vmm > 0);
        // SAFETY: kill takes integers; the monitor is our child.
        unsafe { libc::kill(monitor, libc::SIGKILL) };
        wait_status(monitor);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{vmm}/stat")).unwrap_or_default();
            if stat.is_empty() || stat.contains(") Z ") {
                break; // gone, or dead and waiting for its reaper
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the VMM outlived its monitor"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

//! Child reaping for PID 1.
//!
//! Orphans re-parented to PID 1 are reaped and forgotten. Children the agent
//! spawns itself are *watched*: each spawn gets its own [`ExitCell`], which
//! keeps the exit status and time for any number of waiters. To close the
//! race where a child exits before it is registered, spawning happens under
//! the reaper's lock ([`Reaper::spawn_watched`]): a status reaped meanwhile
//! is recorded only after the registration. A pid leaves the table when it
//! is reaped, so a reused pid is a new entry with a new cell.
//!
//! Children of the agent must be waited for through the reaper, never with
//! `Child::wait`, whose status the reaper would take first.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime};

use crate::sys::{Sys, WaitStatus};

/// How and when a watched child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// The raw wait status.
    pub status: WaitStatus,
    /// When it was reaped.
    pub at: SystemTime,
}

/// The exit of one spawned child, once it has happened.
#[derive(Debug, Default)]
pub struct ExitCell {
    exit: Mutex<Option<Exit>>,
    changed: Condvar,
}

impl ExitCell {
    /// The exit, if it happened.
    pub fn get(&self) -> Option<Exit> {
        *self.exit.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Blocks until the child exits.
    pub fn wait(&self) -> Exit {
        let mut exit = self.exit.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(done) = *exit {
                return done;
            }
            exit = self.changed.wait(exit).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Blocks until the child exits or `timeout` passes.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<Exit> {
        let exit = self.exit.lock().unwrap_or_else(|e| e.into_inner());
        let (exit, _) = self
            .changed
            .wait_timeout_while(exit, timeout, |e| e.is_none())
            .unwrap_or_else(|e| e.into_inner());
        *exit
    }

    fn set(&self, done: Exit) {
        *self.exit.lock().unwrap_or_else(|e| e.into_inner()) = Some(done);
        self.changed.notify_all();
    }
}

/// Records exit statuses of watched children.
#[derive(Debug, Default)]
pub struct Reaper {
    running: Mutex<HashMap<i32, Arc<ExitCell>>>,
}

impl Reaper {
    /// Runs `spawn`, which starts a child and returns its pid (and anything
    /// else), and watches that pid, all under the reaper's lock.
    pub fn spawn_watched<T>(
        &self,
        spawn: impl FnOnce() -> io::Result<(i32, T)>,
    ) -> io::Result<(Arc<ExitCell>, T)> {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let (pid, value) = spawn()?;
        let cell = Arc::new(ExitCell::default());
        running.insert(pid, cell.clone());
        Ok((cell, value))
    }

    /// Records that `pid` exited; returns whether it was watched (otherwise
    /// it was an orphan and its status is dropped).
    pub fn record(&self, pid: i32, status: WaitStatus) -> bool {
        let cell = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&pid);
        match cell {
            Some(cell) => {
                cell.set(Exit {
                    status,
                    at: SystemTime::now(),
                });
                true
            }
            None => false,
        }
    }

    /// Reaps every child that has exited (`waitpid(-1, WNOHANG)` until none
    /// is left); returns how many.
    pub fn reap_ready(&self, sys: &dyn Sys) -> io::Result<usize> {
        let mut count = 0;
        while let Some((pid, status)) = sys.wait_any_nohang()? {
            count += 1;
            if self.record(pid, status) {
                if let Some(signal) = crash_signal(status) {
                    // Worth a warning: a fault, not a kill anyone asked for
                    // (and on an emulated-CPL0 host, the sign of a lost write).
                    tracing::warn!(pid, signal, "a watched process crashed");
                }
                tracing::debug!(pid, status, "watched child exited");
            } else {
                tracing::debug!(pid, status, "reaped an orphan");
            }
        }
        Ok(count)
    }
}

/// The exit status as containerd counts it: the exit code, or 128 + the
/// signal that killed the process.
pub fn exit_code(status: WaitStatus) -> i32 {
    if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        libc::WEXITSTATUS(status)
    }
}

/// The signal of a process that died of a fault of its own (SIGSEGV,
/// SIGBUS, SIGILL or SIGFPE), as opposed to an exit or a signal sent to it.
pub fn crash_signal(status: WaitStatus) -> Option<i32> {
    let faults = [libc::SIGSEGV, libc::SIGBUS, libc::SIGILL, libc::SIGFPE];
    (libc::WIFSIGNALED(status) && faults.contains(&libc::WTERMSIG(status)))
        .then(|| libc::WTERMSIG(status))
}

/// Blocks SIGCHLD in the calling thread; call it in `main` before any thread
/// starts so every thread inherits the mask and only [`run`] takes SIGCHLD.
pub fn block_sigchld() -> io::Result<()> {
    let set = sigchld_set();
    // SAFETY: `set` is an initialised sigset; a null old-set is allowed.
    let ret = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if ret != 0 {
        return Err(io::Error::from_raw_os_error(ret));
    }
    Ok(())
}

fn sigchld_set() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it next.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t; both calls only write to it.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
    }
    set
}

/// The reaping loop (never returns unless `sigwait` fails): waits for
/// SIGCHLD, then reaps everything ready. SIGCHLD must be blocked.
pub fn run(reaper: &Reaper, sys: &dyn Sys) -> io::Error {
    let set = sigchld_set();
    loop {
        if let Err(e) = reaper.reap_ready(sys) {
            return e;
        }
        let mut sig = 0;
        // SAFETY: `set` is a valid sigset and `sig` a valid out-pointer.
        let ret = unsafe { libc::sigwait(&set, &mut sig) };
        if ret != 0 && ret != libc::EINTR {
            return io::Error::from_raw_os_error(ret);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::FakeSys;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn orphans_are_dropped_and_watched_statuses_kept() {
        let reaper = Reaper::default();
        let sys = FakeSys::default();
        let (cell, ()) = reaper.spawn_watched(|| Ok((42, ()))).unwrap();
        sys.add_exited_child(7, 0);
        sys.add_exited_child(42, 3 << 8);
        assert_eq!(reaper.reap_ready(&sys).unwrap(), 2);
        assert_eq!(cell.get().map(|e| exit_code(e.status)), Some(3));
        assert_eq!(cell.wait().status, 3 << 8, "kept for every waiter");
        assert!(!reaper.record(42, 0), "the pid left the table");
    }

    #[test]
    fn only_faults_are_crashes() {
        assert_eq!(crash_signal(libc::SIGSEGV), Some(libc::SIGSEGV));
        assert_eq!(
            crash_signal(libc::SIGBUS | 0x80),
            Some(libc::SIGBUS),
            "core dumped"
        );
        assert_eq!(crash_signal(libc::SIGKILL), None);
        assert_eq!(crash_signal(libc::SIGTERM), None);
        assert_eq!(crash_signal(11 << 8), None, "exit code 11");
    }

    #[test]
    fn wait_blocks_until_reaped() {
        let reaper = Reaper::default();
        let sys = FakeSys::default();
        let (cell, ()) = reaper.spawn_watched(|| Ok((9, ()))).unwrap();
        let waiter = {
            let cell = cell.clone();
            std::thread::spawn(move || cell.wait())
        };
        assert_eq!(cell.wait_timeout(Duration::from_millis(20)), None);
        assert_eq!(reaper.reap_ready(&sys).unwrap(), 0);
        sys.add_exited_child(9, libc::SIGKILL);
        reaper.reap_ready(&sys).unwrap();
        assert_eq!(exit_code(waiter.join().unwrap().status), 128 + 9);
    }

    #[test]
    fn a_reused_pid_is_a_new_child() {
        let reaper = Reaper::default();
        let (first, ()) = reaper.spawn_watched(|| Ok((5, ()))).unwrap();
        assert!(reaper.record(5, 1 << 8));
        let (second, ()) = reaper.spawn_watched(|| Ok((5, ()))).unwrap();
        assert_eq!(first.get().map(|e| exit_code(e.status)), Some(1));
        assert_eq!(second.get(), None);
    }

    #[test]
    fn exit_reaped_during_spawn_is_not_lost() {
        let reaper = Arc::new(Reaper::default());
        let r = reaper.clone();
        // The child "exits" and the reaper records it while spawn still holds
        // the lock: the record must wait for the registration.
        let (cell, recorder) = reaper
            .spawn_watched(|| {
                let recorder = std::thread::spawn(move || r.record(5, 0));
                std::thread::sleep(Duration::from_millis(20));
                Ok((5, recorder))
            })
            .unwrap();
        assert!(recorder.join().unwrap());
        assert_eq!(cell.get().map(|e| e.status), Some(0));
    }
}

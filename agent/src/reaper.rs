//! Child reaping for PID 1.
//!
//! Orphans re-parented to PID 1 are reaped and forgotten. Children the agent
//! spawns itself are *watched*: their exit status is kept until someone asks
//! with [`Reaper::wait`]. To close the race where a child exits before it is
//! registered, spawning happens under the reaper's lock
//! ([`Reaper::spawn_watched`]): a status reaped meanwhile is recorded only
//! after the registration.
//!
//! Children of the agent must be waited for through the reaper, never with
//! `Child::wait`, whose status the reaper would take first.

// The watched-child half serves the container RPCs (a later issue); today
// only its tests use it.
#![cfg_attr(not(test), allow(dead_code))]

use std::collections::HashMap;
use std::io;
use std::sync::{Condvar, Mutex};

use crate::sys::{Sys, WaitStatus};

/// One watched child: running, or exited with a status nobody took yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    Running,
    Exited(WaitStatus),
}

/// Records exit statuses by pid for whoever asks.
#[derive(Debug, Default)]
pub struct Reaper {
    watched: Mutex<HashMap<i32, Entry>>,
    exited: Condvar,
}

impl Reaper {
    /// Runs `spawn`, which starts a child and returns its pid (and anything
    /// else), and watches that pid, all under the reaper's lock.
    pub fn spawn_watched<T>(
        &self,
        spawn: impl FnOnce() -> io::Result<(i32, T)>,
    ) -> io::Result<(i32, T)> {
        let mut watched = self.watched.lock().unwrap_or_else(|e| e.into_inner());
        let (pid, value) = spawn()?;
        // A reused pid must not erase an earlier child's unclaimed status:
        // it stays claimable until the new child exits too. (Telling the two
        // apart needs a generation per spawn; no caller spawns yet.)
        watched.entry(pid).or_insert(Entry::Running);
        Ok((pid, value))
    }

    /// Records that `pid` exited; returns whether it was watched (otherwise
    /// it was an orphan and its status is dropped).
    pub fn record(&self, pid: i32, status: WaitStatus) -> bool {
        let mut watched = self.watched.lock().unwrap_or_else(|e| e.into_inner());
        match watched.get_mut(&pid) {
            Some(entry) => {
                *entry = Entry::Exited(status);
                self.exited.notify_all();
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
                tracing::debug!(pid, status, "watched child exited");
            } else {
                tracing::debug!(pid, status, "reaped an orphan");
            }
        }
        Ok(count)
    }

    /// The status of watched `pid` if it has exited (and forgets it).
    pub fn try_wait(&self, pid: i32) -> Option<WaitStatus> {
        let mut watched = self.watched.lock().unwrap_or_else(|e| e.into_inner());
        match watched.get(&pid) {
            Some(Entry::Exited(status)) => {
                let status = *status;
                watched.remove(&pid);
                Some(status)
            }
            _ => None,
        }
    }

    /// Blocks until watched `pid` exits and returns its status (and forgets
    /// it); `None` if `pid` is not watched.
    pub fn wait(&self, pid: i32) -> Option<WaitStatus> {
        let mut watched = self.watched.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            match watched.get(&pid) {
                None => return None,
                Some(Entry::Exited(status)) => {
                    let status = *status;
                    watched.remove(&pid);
                    return Some(status);
                }
                Some(Entry::Running) => {
                    watched = self.exited.wait(watched).unwrap_or_else(|e| e.into_inner());
                }
            }
        }
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
        reaper.spawn_watched(|| Ok((42, ()))).unwrap();
        sys.add_exited_child(7, 0);
        sys.add_exited_child(42, 3 << 8);
        assert_eq!(reaper.reap_ready(&sys).unwrap(), 2);
        assert_eq!(reaper.try_wait(7), None, "orphan not kept");
        assert_eq!(reaper.try_wait(42).map(exit_code), Some(3));
        assert_eq!(reaper.try_wait(42), None, "taken once");
    }

    #[test]
    fn wait_blocks_until_reaped() {
        let reaper = Arc::new(Reaper::default());
        let sys = FakeSys::default();
        reaper.spawn_watched(|| Ok((9, ()))).unwrap();
        let waiter = {
            let reaper = reaper.clone();
            std::thread::spawn(move || reaper.wait(9))
        };
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(reaper.reap_ready(&sys).unwrap(), 0);
        sys.add_exited_child(9, libc::SIGKILL);
        reaper.reap_ready(&sys).unwrap();
        assert_eq!(waiter.join().unwrap().map(exit_code), Some(128 + 9));
        assert_eq!(reaper.wait(1234), None, "unknown pid");
    }

    #[test]
    fn exit_reaped_during_spawn_is_not_lost() {
        let reaper = Arc::new(Reaper::default());
        let r = reaper.clone();
        // The child "exits" and the reaper records it while spawn still holds
        // the lock: the record must wait for the registration.
        reaper
            .spawn_watched(|| {
                let recorder = std::thread::spawn(move || r.record(5, 0));
                std::thread::sleep(Duration::from_millis(20));
                Ok((5, recorder))
            })
            .map(|(_, recorder)| assert!(recorder.join().unwrap()))
            .unwrap();
        assert_eq!(reaper.try_wait(5), Some(0));
    }
}

//! Pausing, resuming and stopping the vCPUs from another thread (the API).
//!
//! Each vCPU thread passes [`VcpuControl::checkpoint`] before every
//! `KVM_RUN`. To pause, the state becomes `Paused` and the vCPU threads are
//! kicked out of `KVM_RUN` with a real-time signal whose handler does nothing
//! (the ioctl returns `EINTR`). A kick can land just before a thread enters
//! `KVM_RUN`, so the pause repeats it until every vCPU is parked.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tracing::info;
use vmm_sys_util::signal::{register_signal_handler, SIGRTMIN};

/// How long a pause may take before it is reported as failed.
pub const PAUSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Errors of controlling the vCPUs.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("install the vCPU kick signal handler")]
    InstallKickHandler(#[source] vmm_sys_util::errno::Error),
    #[error("{parked} of {total} vCPUs stopped within {PAUSE_TIMEOUT:?}")]
    PauseTimeout { parked: usize, total: usize },
    #[error("the VM is stopping")]
    Stopping,
}

/// What the vCPUs should be doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    Running,
    Paused,
    Stopping,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Stopping => "stopping",
        }
    }
}

/// Shared between the vCPU threads and whoever controls them.
pub struct VcpuControl {
    state: Mutex<RunState>,
    changed: Condvar,
    parked: AtomicUsize,
    /// vCPU threads that have left for good.
    exited: AtomicUsize,
    /// The vCPU threads to kick; each is here only while it runs.
    threads: Mutex<Vec<libc::pthread_t>>,
    total: usize,
}

/// Keeps the calling vCPU thread registered for kicks until it is dropped,
/// which the thread does on its way out.
pub struct VcpuRegistration<'a> {
    control: &'a VcpuControl,
    thread: libc::pthread_t,
}

impl Drop for VcpuRegistration<'_> {
    fn drop(&mut self) {
        let mut threads = self
            .control
            .threads
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // SAFETY: pthread_equal only compares two thread ids.
        threads.retain(|&t| unsafe { libc::pthread_equal(t, self.thread) } == 0);
        self.control.exited.fetch_add(1, Ordering::SeqCst);
    }
}

extern "C" fn ignore_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// The signal that kicks a vCPU thread out of `KVM_RUN`.
pub fn kick_signal() -> libc::c_int {
    SIGRTMIN()
}

/// Installs the (empty) kick handler; once per process.
pub fn install_kick_handler() -> Result<(), ControlError> {
    register_signal_handler(kick_signal(), ignore_kick).map_err(ControlError::InstallKickHandler)
}

impl VcpuControl {
    pub fn new(total: usize) -> Self {
        Self {
            state: Mutex::new(RunState::Running),
            changed: Condvar::new(),
            parked: AtomicUsize::new(0),
            exited: AtomicUsize::new(0),
            threads: Mutex::new(Vec::new()),
            total,
        }
    }

    fn lock_state(&self) -> MutexGuard<'_, RunState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers the calling thread as a vCPU to kick, until the returned
    /// registration is dropped (by that thread, as it exits). Registering
    /// from the thread itself means a kick never targets a thread that has
    /// not started or has already gone.
    pub fn register_current_thread(&self) -> VcpuRegistration<'_> {
        // SAFETY: pthread_self has no preconditions.
        let thread = unsafe { libc::pthread_self() };
        self.threads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(thread);
        VcpuRegistration {
            control: self,
            thread,
        }
    }

    /// vCPUs that are parked or gone: all of them means the VM is paused.
    fn stopped(&self) -> usize {
        self.parked.load(Ordering::SeqCst) + self.exited.load(Ordering::SeqCst)
    }

    /// Called by a vCPU thread before `KVM_RUN`: waits while paused; returns
    /// false once the VM is stopping.
    pub fn checkpoint(&self) -> bool {
        let mut state = self.lock_state();
        loop {
            match *state {
                RunState::Running => return true,
                RunState::Stopping => return false,
                RunState::Paused => {
                    self.parked.fetch_add(1, Ordering::SeqCst);
                    state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
                    self.parked.fetch_sub(1, Ordering::SeqCst);
                }
            }
        }
    }

    pub fn state(&self) -> RunState {
        *self.lock_state()
    }

    /// Stops every vCPU at its next checkpoint and waits until all are there.
    /// If they do not all stop in time, the VM runs on and the error says so.
    pub fn pause(&self) -> Result<(), ControlError> {
        {
            let mut state = self.lock_state();
            if *state == RunState::Stopping {
                return Err(ControlError::Stopping);
            }
            *state = RunState::Paused;
        }
        let deadline = Instant::now() + PAUSE_TIMEOUT;
        while self.stopped() < self.total {
            if Instant::now() >= deadline {
                let parked = self.stopped();
                let mut state = self.lock_state();
                if *state == RunState::Paused {
                    *state = RunState::Running;
                    self.changed.notify_all();
                }
                return Err(ControlError::PauseTimeout {
                    parked,
                    total: self.total,
                });
            }
            self.kick();
            std::thread::sleep(Duration::from_millis(1));
        }
        info!(vcpus = self.total, "VM paused");
        Ok(())
    }

    /// Lets paused vCPUs run again.
    pub fn resume(&self) -> Result<(), ControlError> {
        let mut state = self.lock_state();
        if *state == RunState::Stopping {
            return Err(ControlError::Stopping);
        }
        *state = RunState::Running;
        self.changed.notify_all();
        info!("VM resumed");
        Ok(())
    }

    /// Ends the VM: every vCPU leaves at its next checkpoint.
    pub fn stop(&self) {
        *self.lock_state() = RunState::Stopping;
        self.changed.notify_all();
        self.kick();
    }

    fn kick(&self) {
        for &thread in self
            .threads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            // SAFETY: `thread` is a live vCPU thread of this process: it is
            // in the list only between registering itself and its
            // registration's drop, and we hold the list's lock, so it cannot
            // leave meanwhile. The signal's handler does nothing.
            unsafe { libc::pthread_kill(thread, kick_signal()) };
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// Threads that loop through checkpoints, as vCPUs would between exits.
    fn spawn_loops(control: &Arc<VcpuControl>) -> Vec<std::thread::JoinHandle<()>> {
        (0..control.total)
            .map(|_| {
                let control = Arc::clone(control);
                std::thread::spawn(move || {
                    let _registered = control.register_current_thread();
                    while control.checkpoint() {
                        std::thread::sleep(Duration::from_micros(200));
                    }
                })
            })
            .collect()
    }

    #[test]
    fn pause_parks_every_vcpu_and_resume_releases_them() {
        install_kick_handler().unwrap();
        let control = Arc::new(VcpuControl::new(3));
        let threads = spawn_loops(&control);
        control.pause().unwrap();
        assert_eq!(control.state(), RunState::Paused);
        assert_eq!(control.parked.load(Ordering::SeqCst), 3);
        control.pause().unwrap(); // idempotent
        control.resume().unwrap();
        assert_eq!(control.state(), RunState::Running);
        control.stop();
        for t in threads {
            t.join().unwrap();
        }
        assert!(matches!(control.pause(), Err(ControlError::Stopping)));
        assert!(matches!(control.resume(), Err(ControlError::Stopping)));
    }

    #[test]
    fn pause_times_out_when_a_vcpu_never_checks_in_and_the_vm_runs_on() {
        let control = VcpuControl::new(1);
        let err = control.pause().unwrap_err();
        assert_eq!(err.to_string(), "0 of 1 vCPUs stopped within 2s");
        assert_eq!(control.state(), RunState::Running);
        // A second pause does not claim success either.
        assert!(control.pause().is_err());
    }

    #[test]
    fn a_vcpu_that_left_counts_as_stopped_and_is_not_kicked() {
        install_kick_handler().unwrap();
        let control = Arc::new(VcpuControl::new(2));
        let gone = {
            let control = Arc::clone(&control);
            std::thread::spawn(move || drop(control.register_current_thread()))
        };
        gone.join().unwrap();
        assert_eq!(control.threads.lock().unwrap().len(), 0);
        // One vCPU left, one still running: pause waits only for the other.
        let runner = {
            let control = Arc::clone(&control);
            std::thread::spawn(move || {
                let _registered = control.register_current_thread();
                while control.checkpoint() {
                    std::thread::sleep(Duration::from_micros(200));
                }
            })
        };
        control.pause().unwrap();
        control.stop();
        runner.join().unwrap();
    }
}

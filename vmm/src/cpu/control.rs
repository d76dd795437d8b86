//! Pausing, resuming and stopping the vCPUs from another thread (the API).
//!
//! Each vCPU thread passes [`VcpuControl::checkpoint_with`] before every
//! `KVM_RUN`. To pause, the state becomes `Paused` and the vCPU threads are
//! kicked out of `KVM_RUN` with a real-time signal whose handler does nothing
//! (the ioctl returns `EINTR`). A kick can land just before a thread enters
//! `KVM_RUN`, so the pause repeats it until every vCPU is parked.
//!
//! A snapshot needs each vCPU's state, which its own thread reads: while
//! paused, [`VcpuControl::save_vcpus`] wakes the parked threads, each saves
//! its vCPU into its slot and parks again.
//!
//! It lives with the vCPUs, whose run loop ([`super::vcpu::Vcpu::run`])
//! passes the checkpoints and whose state ([`super::snapshot::VcpuState`])
//! it collects, so that `cpu` depends on nothing above it; the API, the VM
//! and snapshots use it through the top-level `control` module, which
//! re-exports it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tracing::info;
use vmm_sys_util::signal::{register_signal_handler, SIGRTMIN};

use super::snapshot::{VcpuState, VcpuStateError};

/// How long a pause may take before it is reported as failed.
pub const PAUSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the vCPU threads may take to save their state.
pub const SAVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors of controlling the vCPUs.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("install the vCPU kick signal handler")]
    InstallKickHandler(#[source] vmm_sys_util::errno::Error),
    #[error("{parked} of {total} vCPUs stopped within {PAUSE_TIMEOUT:?}")]
    PauseTimeout { parked: usize, total: usize },
    #[error("the VM is stopping")]
    Stopping,
    #[error("the VM must be paused first")]
    NotPaused,
    #[error("{0} vCPU threads have ended")]
    VcpusGone(usize),
    #[error("{saved} of {total} vCPUs saved their state within {SAVE_TIMEOUT:?}")]
    SaveTimeout { saved: usize, total: usize },
    #[error("cannot save vCPU {0}")]
    SaveVcpu(usize, #[source] VcpuStateError),
}

/// A vCPU's answer to a save request.
type SaveSlot = Option<Result<VcpuState, VcpuStateError>>;

/// The run state, and the save request under the same lock.
struct Shared {
    run: RunState,
    /// Whether the vCPUs are asked to save their state.
    save_requested: bool,
    /// One slot per vCPU, filled by its thread.
    saved: Vec<SaveSlot>,
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
    state: Mutex<Shared>,
    changed: Condvar,
    /// Signalled when a vCPU filled its save slot.
    saved: Condvar,
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
            state: Mutex::new(Shared {
                run: RunState::Running,
                save_requested: false,
                saved: Vec::new(),
            }),
            changed: Condvar::new(),
            saved: Condvar::new(),
            parked: AtomicUsize::new(0),
            exited: AtomicUsize::new(0),
            threads: Mutex::new(Vec::new()),
            total,
        }
    }

    fn lock_state(&self) -> MutexGuard<'_, Shared> {
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

    /// A checkpoint of a thread with no vCPU to save.
    #[cfg(test)]
    pub fn checkpoint(&self) -> bool {
        self.checkpoint_with(usize::MAX, &mut || unreachable!("no slot to save into"))
    }

    /// Called by the thread of vCPU `index` before `KVM_RUN`: waits while
    /// paused, saving the vCPU with `save` when asked to; returns false once
    /// the VM is stopping.
    pub fn checkpoint_with(
        &self,
        index: usize,
        save: &mut dyn FnMut() -> Result<VcpuState, VcpuStateError>,
    ) -> bool {
        let mut state = self.lock_state();
        loop {
            match state.run {
                RunState::Running => return true,
                RunState::Stopping => return false,
                RunState::Paused => {
                    let requested = state.save_requested;
                    if let Some(slot) = state
                        .saved
                        .get_mut(index)
                        .filter(|s| requested && s.is_none())
                    {
                        *slot = Some(save());
                        self.saved.notify_all();
                        continue;
                    }
                    self.parked.fetch_add(1, Ordering::SeqCst);
                    state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
                    self.parked.fetch_sub(1, Ordering::SeqCst);
                }
            }
        }
    }

    pub fn state(&self) -> RunState {
        self.lock_state().run
    }

    /// Has every vCPU thread save its vCPU, and returns the states by index.
    /// The VM must be paused, and stays paused.
    pub fn save_vcpus(&self) -> Result<Vec<VcpuState>, ControlError> {
        let mut state = self.lock_state();
        match state.run {
            RunState::Paused => {}
            RunState::Stopping => return Err(ControlError::Stopping),
            RunState::Running => return Err(ControlError::NotPaused),
        }
        let gone = self.exited.load(Ordering::SeqCst);
        if gone > 0 {
            return Err(ControlError::VcpusGone(gone));
        }
        state.saved = (0..self.total).map(|_| None).collect();
        state.save_requested = true;
        self.changed.notify_all();
        let deadline = Instant::now() + SAVE_TIMEOUT;
        loop {
            let done = state.saved.iter().filter(|s| s.is_some()).count();
            if done == self.total {
                break;
            }
            let now = Instant::now();
            if now >= deadline || state.run != RunState::Paused {
                state.save_requested = false;
                state.saved.clear();
                return Err(ControlError::SaveTimeout {
                    saved: done,
                    total: self.total,
                });
            }
            state = self
                .saved
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        state.save_requested = false;
        let slots = std::mem::take(&mut state.saved);
        drop(state);
        slots
            .into_iter()
            .enumerate()
            .map(|(index, slot)| match slot {
                Some(Ok(vcpu)) => Ok(vcpu),
                Some(Err(err)) => Err(ControlError::SaveVcpu(index, err)),
                None => Err(ControlError::SaveTimeout {
                    saved: index,
                    total: self.total,
                }),
            })
            .collect()
    }

    /// Stops every vCPU at its next checkpoint and waits until all are there.
    /// If they do not all stop in time, the VM runs on and the error says so.
    pub fn pause(&self) -> Result<(), ControlError> {
        {
            let mut state = self.lock_state();
            if state.run == RunState::Stopping {
                return Err(ControlError::Stopping);
            }
            state.run = RunState::Paused;
        }
        let deadline = Instant::now() + PAUSE_TIMEOUT;
        while self.stopped() < self.total {
            if Instant::now() >= deadline {
                let parked = self.stopped();
                let mut state = self.lock_state();
                if state.run == RunState::Paused {
                    state.run = RunState::Running;
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
        if state.run == RunState::Stopping {
            return Err(ControlError::Stopping);
        }
        state.run = RunState::Running;
        self.changed.notify_all();
        info!("VM resumed");
        Ok(())
    }

    /// Ends the VM: every vCPU leaves at its next checkpoint.
    pub fn stop(&self) {
        self.lock_state().run = RunState::Stopping;
        self.changed.notify_all();
        self.saved.notify_all();
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

    /// vCPU threads that save a state naming their index, except `failing`.
    fn spawn_savers(
        control: &Arc<VcpuControl>,
        failing: Option<usize>,
    ) -> Vec<std::thread::JoinHandle<()>> {
        (0..control.total)
            .map(|index| {
                let control = Arc::clone(control);
                std::thread::spawn(move || {
                    let _registered = control.register_current_thread();
                    let mut save = || match failing {
                        Some(f) if f == index => Err(VcpuStateError::SetMsr(0x10)),
                        _ => Ok(VcpuState {
                            id: index as u8,
                            ..Default::default()
                        }),
                    };
                    while control.checkpoint_with(index, &mut save) {
                        std::thread::sleep(Duration::from_micros(200));
                    }
                })
            })
            .collect()
    }

    #[test]
    fn paused_vcpus_save_their_state_on_their_threads_and_stay_paused() {
        install_kick_handler().unwrap();
        let control = Arc::new(VcpuControl::new(3));
        let threads = spawn_savers(&control, None);
        assert!(matches!(control.save_vcpus(), Err(ControlError::NotPaused)));
        control.pause().unwrap();
        for _ in 0..2 {
            let states = control.save_vcpus().unwrap();
            let ids: Vec<u8> = states.iter().map(|s| s.id).collect();
            assert_eq!(ids, [0, 1, 2]);
            assert_eq!(control.state(), RunState::Paused);
        }
        control.stop();
        for t in threads {
            t.join().unwrap();
        }
        assert!(matches!(control.save_vcpus(), Err(ControlError::Stopping)));
    }

    #[test]
    fn a_vcpu_that_cannot_save_fails_the_save_by_its_index() {
        install_kick_handler().unwrap();
        let control = Arc::new(VcpuControl::new(2));
        let threads = spawn_savers(&control, Some(1));
        control.pause().unwrap();
        let err = control.save_vcpus().unwrap_err();
        assert_eq!(
            crate::error_chain(&err),
            "cannot save vCPU 1: KVM refused MSR 0x10"
        );
        control.stop();
        for t in threads {
            t.join().unwrap();
        }
    }

    #[test]
    fn no_save_once_a_vcpu_thread_has_ended() {
        let control = Arc::new(VcpuControl::new(1));
        drop(control.register_current_thread());
        control.pause().unwrap();
        let err = control.save_vcpus().unwrap_err();
        assert_eq!(err.to_string(), "1 vCPU threads have ended");
    }
}

//! The container engine: OCI containers inside the guest.
//!
//! [`Engine`] holds the containers of the guest (the pod's) and serves the
//! agent API's container calls, one verb per file (`create.rs`,
//! `start.rs`, ...). A container's init is started by `clone3` into its
//! namespaces and cgroup, runs its [`plan::Plan`] up to `execve` and waits
//! there for StartContainer. Everything the engine does to the system goes
//! through seams passed in at construction: a [`spawn::Spawner`], a
//! [`cgroup::CgroupFs`] and the [`Reaper`], so unit tests use fakes.

pub mod caps;
pub mod cgroup;
mod child;
pub mod create;
pub mod error;
mod exec;
mod kill;
mod mounts;
pub mod oom;
pub mod overlay;
mod pause;
pub mod plan;
mod ps;
mod remove;
mod resolve;
pub mod seccomp;
pub mod share;
pub mod spawn;
pub mod spec;
mod start;
mod stats;
pub mod stdio;
mod streams;
mod update;
mod wait;

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard};

use self::cgroup::{Cgroup, Cgroups};
use self::error::ContainerError;
use self::oom::OomWatcher;
use self::plan::Plan;
use self::seccomp::SeccompProgram;
use self::spawn::Reports;
use self::spawn::Spawner;
use self::spec::GuestFacts;
use self::stdio::Stdio;
use crate::reaper::{ExitCell, Reaper};

pub use self::stats::Stats;

/// Where a container is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Set up; its init waits for StartContainer.
    Created,
    /// Its init runs.
    Running,
    /// Frozen.
    Paused,
    /// Its init has exited.
    Stopped,
}

impl State {
    /// Lower-case, as runc names states.
    pub fn name(self) -> &'static str {
        match self {
            State::Created => "created",
            State::Running => "running",
            State::Paused => "paused",
            State::Stopped => "stopped",
        }
    }
}

/// One process the agent started: a container's init or an exec.
#[derive(Debug)]
pub struct Process {
    /// "" for the init.
    pub exec_id: String,
    /// Its pid in the guest.
    pub pid: i32,
    /// For signals (no pid reuse) and namespace joins.
    pub pidfd: OwnedFd,
    /// Its exit, once reaped.
    pub exit: Arc<ExitCell>,
    /// Its streams.
    pub stdio: Stdio,
}

/// What StartContainer needs: the init's pipes and its plan (to name a
/// failing step).
#[derive(Debug)]
struct Starter {
    start: File,
    reports: Reports,
    plan: Plan,
}

/// A container.
#[derive(Debug)]
pub struct Container {
    /// Its id.
    pub id: String,
    /// Its pod.
    pub sandbox_id: String,
    /// Its cgroup.
    pub cgroup: Cgroup,
    /// Its init.
    pub init: Arc<Process>,
    /// The namespaces an exec joins.
    join: libc::c_int,
    /// The spec's seccomp program, for execs too.
    seccomp: Option<Arc<SeccompProgram>>,
    state: Mutex<State>,
    starter: Mutex<Option<Starter>>,
    execs: Mutex<HashMap<String, Arc<Process>>>,
    /// The guest-side writable layer over its rootfs, if it asked for one.
    overlay: Mutex<Option<overlay::Overlay>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Container {
    /// The current state (Stopped once the init has exited).
    pub fn state(&self) -> State {
        let mut state = lock(&self.state);
        if *state != State::Stopped && self.init.exit.get().is_some() {
            *state = State::Stopped;
        }
        *state
    }

    fn set_state(&self, state: State) {
        *lock(&self.state) = state;
    }

    /// The process with `exec_id` ("" = init).
    pub fn process(&self, exec_id: &str) -> Result<Arc<Process>, ContainerError> {
        if exec_id.is_empty() {
            return Ok(self.init.clone());
        }
        lock(&self.execs)
            .get(exec_id)
            .cloned()
            .ok_or_else(|| ContainerError::ProcessNotFound {
                container_id: self.id.clone(),
                exec_id: exec_id.to_string(),
            })
    }

    fn wrong_state(&self, action: &'static str) -> ContainerError {
        ContainerError::WrongState {
            id: self.id.clone(),
            state: self.state().name(),
            action,
        }
    }
}

/// The guest's containers.
pub struct Engine {
    containers: Mutex<HashMap<String, Arc<Container>>>,
    /// Ids being created (reserved against duplicates meanwhile).
    creating: Mutex<HashSet<String>>,
    /// sandbox id -> the container holding the pod's namespaces.
    pods: Mutex<HashMap<String, String>>,
    cgroups: Cgroups,
    spawner: Arc<dyn Spawner>,
    reaper: Arc<Reaper>,
    oom: Option<OomWatcher>,
    facts: GuestFacts,
}

impl Engine {
    /// An engine over these seams. `oom` is `None` where memory events
    /// cannot be watched (GetOOMEvent then fails).
    pub fn new(
        cgroups: Cgroups,
        spawner: Arc<dyn Spawner>,
        reaper: Arc<Reaper>,
        oom: Option<OomWatcher>,
        facts: GuestFacts,
    ) -> Engine {
        Engine {
            containers: Mutex::new(HashMap::new()),
            creating: Mutex::new(HashSet::new()),
            pods: Mutex::new(HashMap::new()),
            cgroups,
            spawner,
            reaper,
            oom,
            facts,
        }
    }

    /// The container `id`.
    pub fn get(&self, id: &str) -> Result<Arc<Container>, ContainerError> {
        lock(&self.containers)
            .get(id)
            .cloned()
            .ok_or_else(|| ContainerError::NotFound(id.to_string()))
    }

    /// The container holding the pod's namespaces, if its init still runs.
    fn pod_holder(&self, sandbox_id: &str) -> Option<Arc<Container>> {
        let holder = lock(&self.pods).get(sandbox_id).cloned()?;
        let container = self.get(&holder).ok()?;
        (container.init.exit.get().is_none()).then_some(container)
    }

    /// Blocks until a container is OOM-killed; returns its id.
    pub fn next_oom(&self) -> Result<String, ContainerError> {
        let oom = self.oom.as_ref().ok_or_else(|| ContainerError::Sys {
            what: "watching memory events".into(),
            source: std::io::ErrorKind::Unsupported.into(),
        })?;
        Ok(oom.next())
    }
}

/// The raw fd of a pidfd.
fn raw(fd: &OwnedFd) -> i32 {
    fd.as_raw_fd()
}

#[cfg(test)]
mod fake;
#[cfg(test)]
mod host_tests;
#[cfg(test)]
mod tests;

//! The tasks of one shim: its pod's VM and the containers and processes in
//! it, with what each Task API call does to them. Blocking code (the
//! service runs it off the async runtime). No protobuf here: calls take and
//! return domain types (`crate::domain`), and what goes to the agent is
//! built by `crate::convert`.
//!
//! [`Tasks`] is the registry; what it shares with the watchers is
//! [`Shared`] (the pod's VM, its containers and their processes, and the
//! sender of the events containerd hears). One verb per file:
//!
//! - `create.rs`: Create. The VM (first container), rootfs and volumes
//!   into the share, the agent's CreateContainer, then stdio.
//! - `start.rs`: Start. The init (StartContainer) or an exec
//!   (ExecProcess), with its stdio and exit waiter.
//! - `exec.rs`: Exec. Registers a process to start later.
//! - `kill.rs`: Kill. A signal to one process, or to all of a container.
//! - `wait.rs`: Wait. A process's exit, once it has one.
//! - `state.rs`: State.
//! - `delete.rs`: Delete. An exec's record, or a stopped container with its
//!   share (and the VM with the last container).
//! - `pause.rs`: Pause and Resume.
//! - `stdio.rs`: CloseIO (stdin) and ResizePty.
//! - `update.rs`: Update. New cgroup limits.
//! - `stats.rs`: Stats. The container's cgroup counters.
//! - `pids.rs`: Pids. The guest pids of a container's processes.
//!
//! Connect's pid and Shutdown's "is anything left" are here.
//!
//! What runs beside the calls is in `watch/`: a process's stdio pumps, the
//! waiter that records its exit, the sandbox's OOM poll and the VM's
//! death. The watchers get what they need when started (a sandbox, a
//! [`Weak`](std::sync::Weak) of [`Shared`] to record exits and send events
//! through), and only the verbs start them: neither [`Tasks`] nor
//! [`Shared`] calls into `watch/`, so the watchers never call back into
//! what started them.
//!
//! Errors of this part: [`TaskError`] (`error.rs`).

mod create;
mod delete;
pub(crate) mod error;
mod exec;
mod kill;
mod pause;
mod pids;
mod start;
mod state;
mod stats;
mod stdio;
mod update;
mod wait;
mod watch;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::mpsc;

use crate::config::VesselConfig;
use crate::domain::{Process, TaskEvent};
use crate::vm::Sandbox;

pub use self::error::TaskError;

/// How long RemoveContainer may take to stop what is left.
const REMOVE_TIMEOUT_SECS: u32 = 10;

struct Container {
    bundle: String,
    sandbox: Arc<Sandbox>,
    /// "" is the init process.
    processes: HashMap<String, Process>,
}

#[derive(Default)]
struct Inner {
    sandbox: Option<Arc<Sandbox>>,
    containers: HashMap<String, Container>,
    /// Ids whose Create is under way: a second Create of one gets
    /// ALREADY_EXISTS at once, not a race.
    creating: HashSet<String>,
}

/// What the verbs and the watchers share. The VM goes when this does.
struct Shared {
    events: mpsc::UnboundedSender<TaskEvent>,
    inner: Mutex<Inner>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn emit(&self, event: TaskEvent) {
        // Only fails once the forwarder is gone, at shim exit.
        let _ = self.events.send(event);
    }

    /// A process, found, under the lock.
    fn process(&self, id: &str, exec_id: &str) -> Result<ProcessRef<'_>, TaskError> {
        let inner = self.lock();
        let container = inner
            .containers
            .get(id)
            .ok_or_else(|| TaskError::ContainerNotFound(id.to_owned()))?;
        if !container.processes.contains_key(exec_id) {
            return Err(TaskError::ProcessNotFound {
                id: id.to_owned(),
                exec_id: exec_id.to_owned(),
            });
        }
        Ok(ProcessRef {
            inner,
            id: id.to_owned(),
            exec_id: exec_id.to_owned(),
        })
    }

    /// The VM a container runs in.
    fn sandbox_of(&self, id: &str) -> Result<Arc<Sandbox>, TaskError> {
        self.lock()
            .containers
            .get(id)
            .map(|c| c.sandbox.clone())
            .ok_or_else(|| TaskError::ContainerNotFound(id.to_owned()))
    }

    fn end_sandbox(&self) {
        let sandbox = self.lock().sandbox.take();
        if let Some(sandbox) = sandbox {
            tracing::info!(sandbox = sandbox.id(), "shutting the VM down");
            sandbox.shutdown();
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.end_sandbox();
    }
}

/// Everything the shim serves.
pub struct Tasks {
    config: VesselConfig,
    namespace: String,
    /// Held strongly here only: the watchers hold [`std::sync::Weak`]s.
    shared: Arc<Shared>,
    /// Held while a VM boots, so two Creates never boot two.
    boot: Mutex<()>,
}

impl Tasks {
    pub fn new(
        config: VesselConfig,
        namespace: String,
        events: mpsc::UnboundedSender<TaskEvent>,
    ) -> Arc<Tasks> {
        Arc::new(Tasks {
            config,
            namespace,
            shared: Arc::new(Shared {
                events,
                inner: Mutex::new(Inner::default()),
            }),
            boot: Mutex::new(()),
        })
    }

    /// Whether any container is left (Shutdown waits for none).
    pub fn is_empty(&self) -> bool {
        self.shared.lock().containers.is_empty()
    }

    /// The VMM's pid, if a VM runs.
    pub fn vmm_pid(&self) -> u32 {
        self.shared
            .lock()
            .sandbox
            .as_ref()
            .map_or(0, |s| s.vmm_pid())
    }
}

/// A process, found, under the lock.
struct ProcessRef<'a> {
    inner: MutexGuard<'a, Inner>,
    id: String,
    exec_id: String,
}

impl ProcessRef<'_> {
    fn container(&mut self) -> &mut Container {
        self.inner
            .containers
            .get_mut(&self.id)
            .expect("checked under this lock")
    }

    fn get(&mut self) -> &mut Process {
        let exec_id = self.exec_id.clone();
        self.container()
            .processes
            .get_mut(&exec_id)
            .expect("checked under this lock")
    }

    fn sandbox_pid(&mut self) -> u32 {
        self.container().sandbox.vmm_pid()
    }

    fn bundle(&mut self) -> String {
        self.container().bundle.clone()
    }
}

//! The tasks of one shim: its pod's VM and the containers and processes in
//! it, with what each Task API call does to them. Blocking code (the
//! service runs it off the async runtime); no protobuf types here.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::SystemTime;

use tokio::sync::{mpsc, watch};
use vessel_agent_protocol::agent::CreateContainerRequest;

use crate::config::VesselConfig;
use crate::error::ShimError;
use crate::process::{Exit, Process, ProcessStatus, TaskEvent, VM_GONE_STATUS};
use crate::sandbox::Sandbox;
use crate::spec;
use crate::stdio::StdioPaths;

/// How long RemoveContainer may take to stop what is left.
const REMOVE_TIMEOUT_SECS: u32 = 10;

/// One rootfs mount containerd hands over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootfsMount {
    pub fstype: String,
    pub source: String,
    pub options: Vec<String>,
}

/// A Create call, in domain terms.
#[derive(Debug, Clone)]
pub struct CreateTask {
    pub id: String,
    pub bundle: PathBuf,
    pub rootfs: Vec<RootfsMount>,
    pub stdio: StdioPaths,
}

pub(crate) struct Container {
    bundle: String,
    pub(crate) sandbox: Arc<Sandbox>,
    /// "" is the init process.
    pub(crate) processes: HashMap<String, Process>,
}

#[derive(Default)]
pub(crate) struct Inner {
    sandbox: Option<Arc<Sandbox>>,
    pub(crate) containers: HashMap<String, Container>,
}

/// Everything the shim serves.
pub struct Tasks {
    config: VesselConfig,
    namespace: String,
    events: mpsc::UnboundedSender<TaskEvent>,
    inner: Mutex<Inner>,
    /// Held while a VM boots, so two Creates never boot two.
    boot: Mutex<()>,
    pub(crate) me: Weak<Tasks>,
}

impl Tasks {
    pub fn new(
        config: VesselConfig,
        namespace: String,
        events: mpsc::UnboundedSender<TaskEvent>,
    ) -> Arc<Tasks> {
        Arc::new_cyclic(|me| Tasks {
            config,
            namespace,
            events,
            inner: Mutex::new(Inner::default()),
            boot: Mutex::new(()),
            me: me.clone(),
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn emit(&self, event: TaskEvent) {
        // Only fails once the forwarder is gone, at shim exit.
        let _ = self.events.send(event);
    }

    /// The pod's VM, booted on first use.
    fn sandbox_for(
        &self,
        sandbox_id: &str,
        annotations: &HashMap<String, String>,
    ) -> Result<Arc<Sandbox>, ShimError> {
        let _booting = self.boot.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(sandbox) = &self.lock().sandbox {
            if sandbox.id() != sandbox_id {
                return Err(ShimError::FailedPrecondition(format!(
                    "this shim serves sandbox {}, not {sandbox_id}",
                    sandbox.id()
                )));
            }
            return Ok(sandbox.clone());
        }
        let config = self.config.with_annotations(annotations)?;
        let me = self.me.clone();
        let sandbox = Arc::new(Sandbox::boot(
            sandbox_id,
            &self.namespace,
            &config,
            Box::new(move || {
                if let Some(tasks) = me.upgrade() {
                    tasks.vm_exited();
                }
            }),
        )?);
        self.spawn_oom_watch(&sandbox);
        self.lock().sandbox = Some(sandbox.clone());
        Ok(sandbox)
    }

    /// Create: the VM (first container), rootfs and volumes into the share,
    /// CreateContainer, then stdio. Returns the task's pid (the VMM's).
    pub fn create(&self, req: CreateTask) -> Result<u32, ShimError> {
        if self.lock().containers.contains_key(&req.id) {
            return Err(ShimError::ContainerExists(req.id));
        }
        let bundle_spec = spec::read_bundle_spec(&req.bundle)?;
        let annotations = spec::annotations(&bundle_spec);
        let sandbox_id = spec::sandbox_of(&req.id, &annotations);
        let guest = spec::for_guest(&req.id, bundle_spec)?;
        let sandbox = self.sandbox_for(&sandbox_id, &annotations)?;
        let result = self.create_in(&sandbox, &sandbox_id, &req, &guest);
        if result.is_err() {
            let _ = sandbox.with_share(|share| {
                share.remove(&PathBuf::from(&req.id));
                Ok(())
            });
            if self.lock().containers.is_empty() {
                self.end_sandbox();
            }
        }
        result
    }

    fn create_in(
        &self,
        sandbox: &Arc<Sandbox>,
        sandbox_id: &str,
        req: &CreateTask,
        guest: &spec::GuestSpec,
    ) -> Result<u32, ShimError> {
        sandbox.with_share(|share| {
            let rootfs = share.path().join(&guest.rootfs);
            mount_rootfs(&req.rootfs, &req.bundle, &rootfs)?;
            for volume in &guest.volumes {
                share.bind(&volume.host, &volume.shared, volume.readonly)?;
            }
            Ok(())
        })?;
        let mut create = CreateContainerRequest::new();
        create.container_id = req.id.clone();
        create.sandbox_id = sandbox_id.to_owned();
        create.oci_spec =
            serde_json::to_vec(&guest.json).map_err(|e| ShimError::InvalidSpec(e.to_string()))?;
        create.rootfs_path = guest.rootfs.to_string_lossy().into_owned();
        create.terminal = req.stdio.terminal;
        let creating = std::time::Instant::now();
        let guest_pid = sandbox
            .agent()?
            .create_container(&create)
            .map_err(ShimError::Agent)?;
        let create_ms = creating.elapsed().as_millis() as u64;
        let mut init = Process::new("", req.stdio.clone(), Vec::new());
        init.guest_pid = guest_pid;
        // The init process runs only after Start, so its exit cannot come
        // before the container is recorded below.
        let started = self
            .start_stdio(sandbox, &req.id, "", &req.stdio)
            .and_then(|pumps| {
                init.pumps = pumps;
                self.watch_exit(sandbox, &req.id, "")
            });
        if let Err(e) = started {
            let _ = sandbox
                .agent()?
                .remove_container(&req.id, REMOVE_TIMEOUT_SECS);
            return Err(e);
        }
        let pid = sandbox.vmm_pid();
        tracing::info!(id = %req.id, sandbox = sandbox_id, guest_pid, create_ms, "container created");
        self.lock().containers.insert(
            req.id.clone(),
            Container {
                bundle: req.bundle.to_string_lossy().into_owned(),
                sandbox: sandbox.clone(),
                processes: HashMap::from([(String::new(), init)]),
            },
        );
        self.emit(TaskEvent::Create {
            id: req.id.clone(),
            bundle: req.bundle.to_string_lossy().into_owned(),
            stdio: req.stdio.clone(),
            pid,
        });
        Ok(pid)
    }

    pub(crate) fn process_mut(&self, id: &str, exec_id: &str) -> Result<ProcessRef<'_>, ShimError> {
        let inner = self.lock();
        let container = inner
            .containers
            .get(id)
            .ok_or_else(|| ShimError::ContainerNotFound(id.to_owned()))?;
        if !container.processes.contains_key(exec_id) {
            return Err(ShimError::ProcessNotFound {
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

    fn sandbox_of(&self, id: &str) -> Result<Arc<Sandbox>, ShimError> {
        self.lock()
            .containers
            .get(id)
            .map(|c| c.sandbox.clone())
            .ok_or_else(|| ShimError::ContainerNotFound(id.to_owned()))
    }

    /// Start: the init process (StartContainer) or a registered exec
    /// (ExecProcess). Returns the pid containerd sees.
    pub fn start(&self, id: &str, exec_id: &str) -> Result<u32, ShimError> {
        let sandbox = self.sandbox_of(id)?;
        let agent = sandbox.agent()?;
        if exec_id.is_empty() {
            {
                let mut found = self.process_mut(id, "")?;
                if found.get().status != ProcessStatus::Created {
                    return Err(ShimError::FailedPrecondition(format!(
                        "container {id} was already started"
                    )));
                }
            }
            agent.start_container(id).map_err(ShimError::Agent)?;
            let mut found = self.process_mut(id, "")?;
            let init = found.get();
            // A process that already exited stays Stopped.
            if init.exited().is_none() {
                init.status = ProcessStatus::Running;
            }
            drop(found);
            self.emit(TaskEvent::Start {
                id: id.to_owned(),
                pid: sandbox.vmm_pid(),
            });
            return Ok(sandbox.vmm_pid());
        }
        let (spec, terminal) = {
            let mut found = self.process_mut(id, exec_id)?;
            let process = found.get();
            if process.status != ProcessStatus::Created {
                return Err(ShimError::FailedPrecondition(format!(
                    "exec {exec_id} was already started"
                )));
            }
            (process.spec.clone(), process.stdio.terminal)
        };
        let guest_pid = agent
            .exec_process(id, exec_id, &spec, terminal)
            .map_err(ShimError::Agent)?;
        let stdio = {
            let mut found = self.process_mut(id, exec_id)?;
            let process = found.get();
            process.guest_pid = guest_pid;
            process.status = ProcessStatus::Running;
            process.stdio.clone()
        };
        let pumps = self.start_stdio(&sandbox, id, exec_id, &stdio)?;
        self.process_mut(id, exec_id)?.get().pumps = pumps;
        self.watch_exit(&sandbox, id, exec_id)?;
        self.emit(TaskEvent::ExecStarted {
            id: id.to_owned(),
            exec_id: exec_id.to_owned(),
            pid: sandbox.vmm_pid(),
        });
        Ok(sandbox.vmm_pid())
    }

    /// Exec: registers a process to start later.
    pub fn exec(
        &self,
        id: &str,
        exec_id: &str,
        stdio: StdioPaths,
        spec: Vec<u8>,
    ) -> Result<(), ShimError> {
        serde_json::from_slice::<serde_json::Value>(&spec).map_err(|source| {
            ShimError::ParseProcess {
                exec_id: exec_id.to_owned(),
                source,
            }
        })?;
        {
            let mut inner = self.lock();
            let container = inner
                .containers
                .get_mut(id)
                .ok_or_else(|| ShimError::ContainerNotFound(id.to_owned()))?;
            if exec_id.is_empty() || container.processes.contains_key(exec_id) {
                return Err(ShimError::ProcessExists {
                    id: id.to_owned(),
                    exec_id: exec_id.to_owned(),
                });
            }
            container
                .processes
                .insert(exec_id.to_owned(), Process::new(exec_id, stdio, spec));
        }
        self.emit(TaskEvent::ExecAdded {
            id: id.to_owned(),
            exec_id: exec_id.to_owned(),
        });
        Ok(())
    }

    /// Kill: a signal to one process, or to all of a container.
    pub fn kill(&self, id: &str, exec_id: &str, signal: u32, all: bool) -> Result<(), ShimError> {
        let sandbox = self.sandbox_of(id)?;
        let exited = self.process_mut(id, exec_id)?.get().exited();
        if exited.is_some() && !all {
            return Err(ShimError::ProcessNotFound {
                id: id.to_owned(),
                exec_id: exec_id.to_owned(),
            });
        }
        sandbox
            .agent()?
            .signal_process(id, exec_id, signal, all)
            .map_err(ShimError::Agent)
    }

    /// The exit of a process, once it has one.
    pub fn exit_watch(
        &self,
        id: &str,
        exec_id: &str,
    ) -> Result<watch::Receiver<Option<Exit>>, ShimError> {
        Ok(self.process_mut(id, exec_id)?.get().exit.subscribe())
    }

    /// State of one process: (bundle, pid, status, stdio, exit).
    pub fn state(&self, id: &str, exec_id: &str) -> Result<ProcessState, ShimError> {
        let mut found = self.process_mut(id, exec_id)?;
        let pid = found.sandbox_pid();
        let bundle = found.bundle();
        let process = found.get();
        Ok(ProcessState {
            bundle,
            pid,
            status: process.status,
            stdio: process.stdio.clone(),
            exit: process.exited(),
        })
    }

    /// Delete: an exec's record, or a stopped container with its rootfs and
    /// volumes (and the VM with the last container).
    pub fn delete(&self, id: &str, exec_id: &str) -> Result<(u32, Exit), ShimError> {
        let sandbox = self.sandbox_of(id)?;
        let exit = {
            let mut found = self.process_mut(id, exec_id)?;
            let process = found.get();
            match (process.status, process.exited()) {
                (_, Some(exit)) => exit,
                (ProcessStatus::Created, None) if !exec_id.is_empty() => Exit {
                    status: 0,
                    at: SystemTime::now(),
                },
                (ProcessStatus::Created, None) => Exit {
                    status: VM_GONE_STATUS,
                    at: SystemTime::now(),
                },
                _ => {
                    return Err(ShimError::FailedPrecondition(format!(
                        "process {id}/{exec_id} is still running"
                    )))
                }
            }
        };
        let pid = sandbox.vmm_pid();
        if !exec_id.is_empty() {
            if let Some(c) = self.lock().containers.get_mut(id) {
                c.processes.remove(exec_id);
            }
            return Ok((pid, exit));
        }
        if let Ok(agent) = sandbox.agent() {
            if let Err(error) = agent.remove_container(id, REMOVE_TIMEOUT_SECS) {
                tracing::warn!(%id, %error, "RemoveContainer");
            }
        }
        let _ = sandbox.with_share(|share| {
            share.remove(&PathBuf::from(id));
            Ok(())
        });
        let last = {
            let mut inner = self.lock();
            inner.containers.remove(id);
            inner.containers.is_empty()
        };
        self.emit(TaskEvent::Delete {
            id: id.to_owned(),
            pid,
            exit,
        });
        if last {
            self.end_sandbox();
        }
        Ok((pid, exit))
    }

    fn end_sandbox(&self) {
        let sandbox = self.lock().sandbox.take();
        if let Some(sandbox) = sandbox {
            tracing::info!(sandbox = sandbox.id(), "shutting the VM down");
            sandbox.shutdown();
        }
    }

    /// Guest pids of a container's processes.
    pub fn pids(&self, id: &str) -> Result<Vec<u32>, ShimError> {
        let sandbox = self.sandbox_of(id)?;
        let list = sandbox
            .agent()?
            .list_processes(id)
            .map_err(ShimError::Agent)?;
        Ok(list.iter().map(|p| p.pid).collect())
    }

    /// Pause (true) or resume (false) a container.
    pub fn pause(&self, id: &str, pause: bool) -> Result<(), ShimError> {
        let sandbox = self.sandbox_of(id)?;
        let agent = sandbox.agent()?;
        if pause {
            agent.pause_container(id).map_err(ShimError::Agent)?;
        } else {
            agent.resume_container(id).map_err(ShimError::Agent)?;
        }
        let mut found = self.process_mut(id, "")?;
        let init = found.get();
        if init.exited().is_none() {
            init.status = if pause {
                ProcessStatus::Paused
            } else {
                ProcessStatus::Running
            };
        }
        drop(found);
        self.emit(if pause {
            TaskEvent::Paused { id: id.to_owned() }
        } else {
            TaskEvent::Resumed { id: id.to_owned() }
        });
        Ok(())
    }

    pub fn close_stdin(&self, id: &str, exec_id: &str) -> Result<(), ShimError> {
        self.process_mut(id, exec_id)?;
        self.sandbox_of(id)?
            .agent()?
            .close_stdin(id, exec_id)
            .map_err(ShimError::Agent)
    }

    pub fn resize(
        &self,
        id: &str,
        exec_id: &str,
        rows: u32,
        columns: u32,
    ) -> Result<(), ShimError> {
        self.process_mut(id, exec_id)?;
        self.sandbox_of(id)?
            .agent()?
            .tty_win_resize(id, exec_id, rows, columns)
            .map_err(ShimError::Agent)
    }

    /// Update: new cgroup limits (OCI LinuxResources JSON).
    pub fn update(&self, id: &str, resources: &[u8]) -> Result<(), ShimError> {
        self.sandbox_of(id)?
            .agent()?
            .update_container(id, resources)
            .map_err(ShimError::Agent)
    }

    pub fn stats(
        &self,
        id: &str,
    ) -> Result<vessel_agent_protocol::agent::StatsContainerResponse, ShimError> {
        self.sandbox_of(id)?
            .agent()?
            .stats_container(id)
            .map_err(ShimError::Agent)
    }

    /// Whether any container is left (Shutdown waits for none).
    pub fn is_empty(&self) -> bool {
        self.lock().containers.is_empty()
    }

    /// The VMM's pid, if a VM runs.
    pub fn vmm_pid(&self) -> u32 {
        self.lock().sandbox.as_ref().map_or(0, |s| s.vmm_pid())
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        self.end_sandbox();
    }
}

/// A process's state for State.
#[derive(Debug, Clone)]
pub struct ProcessState {
    pub bundle: String,
    pub pid: u32,
    pub status: ProcessStatus,
    pub stdio: StdioPaths,
    pub exit: Option<Exit>,
}

/// A process, found, under the lock.
pub(crate) struct ProcessRef<'a> {
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

    pub(crate) fn get(&mut self) -> &mut Process {
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

/// Mounts containerd's rootfs mounts at `target`, or binds the bundle's own
/// `rootfs` when it gave none (the bundle was prepared by hand).
fn mount_rootfs(
    mounts: &[RootfsMount],
    bundle: &std::path::Path,
    target: &std::path::Path,
) -> Result<(), ShimError> {
    std::fs::create_dir_all(target).map_err(|source| ShimError::CreateDir {
        path: target.to_owned(),
        source,
    })?;
    if mounts.is_empty() {
        let source = bundle.join("rootfs");
        return crate::mounts::bind_dir(&source, target);
    }
    for m in mounts {
        let fstype = (!m.fstype.is_empty()).then_some(m.fstype.as_str());
        let source = (!m.source.is_empty()).then_some(m.source.as_str());
        containerd_shim::mount::mount_rootfs(fstype, source, &m.options, target).map_err(|e| {
            ShimError::MountRootfs {
                target: target.to_owned(),
                message: e.to_string(),
            }
        })?;
    }
    Ok(())
}

//! Create: the pod's VM (booted with its first container), the container's
//! rootfs and volumes into the VM's share, the agent's CreateContainer,
//! then the init's stdio pumps and exit waiter. A failed create takes back
//! what it put in the share, and the VM if no container is left.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::error::TaskError;
use super::{watch, Container, Tasks, REMOVE_TIMEOUT_SECS};
use crate::convert;
use crate::domain::{ContainerCreate, CreateTask, Process, TaskEvent};
use crate::mounts;
use crate::spec;
use crate::vm::{Sandbox, VmError};

impl Tasks {
    /// Create. Returns the task's pid (the VMM's).
    pub fn create(&self, req: CreateTask) -> Result<u32, TaskError> {
        if self.shared.lock().containers.contains_key(&req.id) {
            return Err(TaskError::ContainerExists(req.id));
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
                Ok::<_, VmError>(())
            });
            if self.shared.lock().containers.is_empty() {
                self.shared.end_sandbox();
            }
        }
        result
    }

    /// The pod's VM, booted on first use, with its OOM poll and the
    /// watcher of its death.
    fn sandbox_for(
        &self,
        sandbox_id: &str,
        annotations: &HashMap<String, String>,
    ) -> Result<Arc<Sandbox>, TaskError> {
        let _booting = self.boot.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(sandbox) = &self.shared.lock().sandbox {
            if sandbox.id() != sandbox_id {
                return Err(TaskError::OtherSandbox {
                    serves: sandbox.id().to_owned(),
                    asked: sandbox_id.to_owned(),
                });
            }
            return Ok(sandbox.clone());
        }
        let config = self.config.with_annotations(annotations)?;
        let sandbox = Arc::new(Sandbox::boot(
            sandbox_id,
            &self.namespace,
            &config,
            watch::vm::on_exit(Arc::downgrade(&self.shared)),
        )?);
        watch::oom::spawn(&sandbox, Arc::downgrade(&self.shared));
        self.shared.lock().sandbox = Some(sandbox.clone());
        Ok(sandbox)
    }

    fn create_in(
        &self,
        sandbox: &Arc<Sandbox>,
        sandbox_id: &str,
        req: &CreateTask,
        guest: &spec::GuestSpec,
    ) -> Result<u32, TaskError> {
        sandbox.with_share(|share| {
            let rootfs = share.path().join(&guest.rootfs);
            mounts::mount_rootfs(&req.rootfs, &req.bundle, &rootfs)?;
            for volume in &guest.volumes {
                share.bind(&volume.host, &volume.shared, volume.readonly)?;
            }
            Ok::<_, TaskError>(())
        })?;
        let create = ContainerCreate {
            id: req.id.clone(),
            sandbox_id: sandbox_id.to_owned(),
            spec: guest.to_bytes()?,
            rootfs: guest.rootfs.clone(),
            terminal: req.stdio.terminal,
        };
        let creating = std::time::Instant::now();
        let guest_pid = sandbox
            .agent()?
            .create_container(&convert::create_container_request(&create))
            .map_err(TaskError::CallAgent)?;
        let create_ms = creating.elapsed().as_millis() as u64;
        let mut init = Process::new("", req.stdio.clone(), Vec::new());
        init.guest_pid = guest_pid;
        // The init process runs only after Start, so its exit cannot come
        // before the container is recorded below.
        let started = watch::pumps::start(sandbox, &req.id, "", &req.stdio).and_then(|pumps| {
            init.pumps = pumps;
            watch::exit::spawn_waiter(sandbox, Arc::downgrade(&self.shared), &req.id, "")
        });
        if let Err(e) = started {
            let _ = sandbox
                .agent()?
                .remove_container(&req.id, REMOVE_TIMEOUT_SECS);
            return Err(e);
        }
        let pid = sandbox.vmm_pid();
        tracing::info!(id = %req.id, sandbox = sandbox_id, guest_pid, create_ms, "container created");
        self.shared.lock().containers.insert(
            req.id.clone(),
            Container {
                bundle: req.bundle.to_string_lossy().into_owned(),
                sandbox: sandbox.clone(),
                processes: HashMap::from([(String::new(), init)]),
            },
        );
        self.shared.emit(TaskEvent::Create {
            id: req.id.clone(),
            bundle: req.bundle.to_string_lossy().into_owned(),
            stdio: req.stdio.clone(),
            pid,
        });
        Ok(pid)
    }
}

//! Create: the pod's VM (booted with its first container), the container's
//! rootfs and volumes into the VM's share, the agent's CreateContainer,
//! then the init's stdio pumps and exit waiter. A failed create takes back
//! what it put in the share, and the VM if no container is left.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::error::{check_id, TaskError};
use super::{watch, Container, Tasks, REMOVE_TIMEOUT_SECS};
use crate::convert;
use crate::domain::{ContainerCreate, CreateTask, Process, TaskEvent};
use crate::spec;
use crate::vm::{Sandbox, VmError};

impl Tasks {
    /// Create. Returns the task's pid (the VMM's).
    pub fn create(&self, req: CreateTask) -> Result<u32, TaskError> {
        check_id("container", &req.id)?;
        let _reserved = self.reserve(&req.id)?;
        let bundle_spec = spec::read_bundle_spec(&req.bundle)?;
        let annotations = spec::annotations(&bundle_spec);
        let sandbox_id = spec::sandbox_of(&req.id, &annotations);
        check_id("sandbox", &sandbox_id)?;
        let cgroups_path = spec::cgroups_path(&bundle_spec);
        let guest = spec::for_guest(&req.id, bundle_spec)?;
        let sandbox = self.sandbox_for(&sandbox_id, &annotations, cgroups_path.as_deref())?;
        let result = self.create_in(&sandbox, &sandbox_id, &req, &guest);
        if result.is_err() {
            let _ = sandbox.with_share(|share| {
                share.remove(&PathBuf::from(&req.id));
                Ok::<_, VmError>(())
            });
            let last = {
                let inner = self.shared.lock();
                inner.containers.is_empty() && inner.creating.len() == 1
            };
            if last {
                self.shared.end_sandbox();
            }
        }
        result
    }

    /// Reserves `id` for one Create: an id that exists or is being created
    /// is refused. The reservation ends when the guard drops (after a
    /// successful Create has recorded the container).
    fn reserve(&self, id: &str) -> Result<Reservation<'_>, TaskError> {
        let mut inner = self.shared.lock();
        if inner.containers.contains_key(id) || !inner.creating.insert(id.to_owned()) {
            return Err(TaskError::ContainerExists(id.to_owned()));
        }
        Ok(Reservation {
            tasks: self,
            id: id.to_owned(),
        })
    }

    /// The pod's VM, booted on first use (its VMM in the first container's
    /// `cgroupsPath`: the sandbox's), with its OOM poll and the watcher of
    /// its death.
    fn sandbox_for(
        &self,
        sandbox_id: &str,
        annotations: &HashMap<String, String>,
        cgroups_path: Option<&str>,
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
            cgroups_path,
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
            share.mount_rootfs(&req.rootfs, &req.bundle, &guest.rootfs)?;
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

/// An id reserved for the Create under way.
struct Reservation<'a> {
    tasks: &'a Tasks,
    id: String,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.tasks.shared.lock().creating.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::VesselConfig;

    fn request(id: &str, bundle: &std::path::Path) -> CreateTask {
        CreateTask {
            id: id.to_owned(),
            bundle: bundle.to_owned(),
            rootfs: Vec::new(),
            stdio: Default::default(),
        }
    }

    #[test]
    fn a_create_racing_a_create_of_the_same_id_is_refused() {
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let tasks = Tasks::new(VesselConfig::default(), "default".into(), tx);
        let bundle = tempfile::tempdir().unwrap();
        let first = tasks.reserve("c1").unwrap();
        let err = tasks.create(request("c1", bundle.path())).unwrap_err();
        assert!(
            matches!(err, TaskError::ContainerExists(ref id) if id == "c1"),
            "{err}"
        );
        // Another id goes on (and fails on its empty bundle, not on c1).
        let other = tasks.create(request("c2", bundle.path())).unwrap_err();
        assert!(matches!(other, TaskError::Spec(_)), "{other}");
        drop(first);
        // The first Create is over: the id is free again.
        let again = tasks.create(request("c1", bundle.path())).unwrap_err();
        assert!(matches!(again, TaskError::Spec(_)), "{again}");
        assert!(tasks.shared.lock().creating.is_empty());
    }

    #[test]
    fn ids_that_are_not_one_plain_name_are_refused_before_anything_is_made() {
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let tasks = Tasks::new(VesselConfig::default(), "default".into(), tx);
        let bundle = tempfile::tempdir().unwrap();
        for bad in ["../../etc", "a/b", ".hidden", ""] {
            let err = tasks.create(request(bad, bundle.path())).unwrap_err();
            assert!(
                matches!(
                    err,
                    TaskError::InvalidId {
                        what: "container",
                        ..
                    }
                ),
                "{bad:?}: {err}"
            );
        }
        // A container of a pod whose sandbox id would leave the state root.
        let annotations = HashMap::from([
            (spec::CONTAINER_TYPE, "container"),
            (spec::SANDBOX_ID, "../other"),
        ]);
        let config = serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {"args": ["true"], "cwd": "/"},
            "root": {"path": "rootfs"},
            "annotations": annotations,
        });
        std::fs::write(bundle.path().join("config.json"), config.to_string()).unwrap();
        let err = tasks.create(request("c1", bundle.path())).unwrap_err();
        assert!(
            matches!(err, TaskError::InvalidId { what: "sandbox", ref id } if id == "../other"),
            "{err}"
        );
        assert!(tasks.shared.lock().creating.is_empty());
        assert!(tasks.shared.lock().sandbox.is_none());
    }
}

//! CreateContainer: cgroup, streams, and an init set up and waiting for
//! StartContainer. A failed create leaves nothing: the half-made init exits,
//! its mount namespace goes with it, and the cgroup is removed.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::error::{check_id, ContainerError, SpecError};
use super::overlay::{Overlay, OVERLAY_ROOT};
use super::plan::Report;
use super::share;
use super::spawn::{SpawnRequest, Spawned};
use super::spec::{init_plan, parse_spec};
use super::stdio::Stdio;
use super::{lock, raw, Container, Engine, Process, Starter, State};

/// How long a failed init gets to exit before its cgroup is removed anyway.
const FAILED_EXIT_WAIT: Duration = Duration::from_secs(5);

/// What CreateContainer asks for.
#[derive(Debug, Clone, Default)]
pub struct CreateRequest {
    /// The container's id.
    pub id: String,
    /// Its pod; empty means a pod of its own.
    pub sandbox_id: String,
    /// The OCI runtime spec, JSON.
    pub spec: Vec<u8>,
    /// The rootfs in the guest; empty means the spec's root.path.
    pub rootfs: String,
    /// A terminal for the init (also when the spec's process asks).
    pub terminal: bool,
    /// A guest-side writable layer over the rootfs (overlayfs on tmpfs).
    pub overlay: bool,
}

/// Releases a reserved id when the create ends, however it ends.
struct Reservation<'a> {
    engine: &'a Engine,
    id: String,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        lock(&self.engine.creating).remove(&self.id);
    }
}

impl Engine {
    /// CreateContainer; returns the init's pid.
    pub fn create(&self, req: CreateRequest) -> Result<Arc<Container>, ContainerError> {
        check_id(&req.id)?;
        let sandbox_id = if req.sandbox_id.is_empty() {
            req.id.clone()
        } else {
            check_id(&req.sandbox_id)?;
            req.sandbox_id.clone()
        };
        let spec = parse_spec(&req.spec)?;
        let lower = rootfs_of(&req, &spec)?;
        let _reservation = self.reserve(&req.id)?;
        let overlay = req
            .overlay
            .then(|| Overlay::mount(Path::new(OVERLAY_ROOT), &req.id, &lower))
            .transpose()?;
        let rootfs = overlay.as_ref().map_or(lower, |o| o.merged().to_path_buf());

        let holder = self.pod_holder(&sandbox_id);
        let resources = spec.linux().as_ref().and_then(|l| l.resources().clone());
        // A failure from here on drops `overlay`, which removes it.
        let cgroup = self
            .cgroups
            .create(&sandbox_id, &req.id, resources.as_ref())?;
        let made = (|| {
            let terminal =
                req.terminal || spec.process().as_ref().and_then(|p| p.terminal()) == Some(true);
            let (stdio, ends) = if terminal {
                Stdio::tty()
            } else {
                Stdio::pipes()
            }
            .map_err(ContainerError::sys("creating the container's stdio"))?;
            let pod_fd = holder.as_ref().map(|h| raw(&h.init.pidfd));
            let mut init = init_plan(&spec, &rootfs, &ends.io, pod_fd, self.facts)?;
            let cgroup_dir = cgroup.open_dir()?;
            let (exit, mut spawned) = self
                .reaper
                .spawn_watched(|| {
                    let spawned = self.spawner.spawn(SpawnRequest {
                        plan: &mut init.plan,
                        namespaces: init.namespaces,
                        cgroup: Some(std::os::fd::AsRawFd::as_raw_fd(&cgroup_dir)),
                        pid_ns_of: init.pid_ns_of,
                        id_maps: init.id_maps.take(),
                    })?;
                    Ok((spawned.pid, spawned))
                })
                .map_err(ContainerError::sys("starting the container's init"))?;
            drop(ends);
            if let Err(e) = await_ready(&mut spawned, &init.plan) {
                // The init exits by itself after a failure report; make sure.
                kill_pidfd(&spawned, libc::SIGKILL);
                exit.wait_timeout(FAILED_EXIT_WAIT);
                return Err(e);
            }
            let process = Process {
                exec_id: String::new(),
                pid: spawned.pid,
                pidfd: spawned.pidfd,
                exit,
                stdio,
            };
            let starter = Starter {
                start: spawned.start,
                reports: spawned.reports,
                plan: init.plan,
            };
            Ok((process, starter, init.join, init.seccomp))
        })();
        let (process, starter, join, seccomp) = match made {
            Ok(made) => made,
            Err(e) => {
                if let Err(cleanup) = cgroup.remove() {
                    tracing::warn!(id = %req.id, error = %cleanup, "removing the cgroup of a failed create");
                }
                return Err(e);
            }
        };
        if let Some(oom) = &self.oom {
            if let Err(e) = oom.watch(&req.id, &cgroup.memory_events_path(), 0) {
                tracing::warn!(id = %req.id, error = %e, "not watching memory events");
            }
        }
        let container = Arc::new(Container {
            id: req.id.clone(),
            sandbox_id: sandbox_id.clone(),
            cgroup,
            init: Arc::new(process),
            join,
            seccomp,
            state: Mutex::new(State::Created),
            starter: Mutex::new(Some(starter)),
            execs: Mutex::new(HashMap::new()),
            overlay: Mutex::new(overlay),
        });
        lock(&self.containers).insert(req.id.clone(), container.clone());
        if holder.is_none() {
            lock(&self.pods).insert(sandbox_id, req.id.clone());
        }
        tracing::info!(id = %req.id, pid = container.init.pid, "container created");
        Ok(container)
    }

    fn reserve(&self, id: &str) -> Result<Reservation<'_>, ContainerError> {
        let mut creating = lock(&self.creating);
        if lock(&self.containers).contains_key(id) || !creating.insert(id.to_string()) {
            return Err(ContainerError::AlreadyExists(format!("container {id:?}")));
        }
        Ok(Reservation {
            engine: self,
            id: id.to_string(),
        })
    }
}

/// The rootfs: the request's path, else the spec's root.path. A relative
/// path, or one under the share's mount point, is resolved inside the
/// host's share ([`share::resolve`]); another absolute path is the guest's.
fn rootfs_of(
    req: &CreateRequest,
    spec: &oci_spec::runtime::Spec,
) -> Result<PathBuf, ContainerError> {
    let path = if req.rootfs.is_empty() {
        spec.root()
            .as_ref()
            .map(|r| r.path().clone())
            .ok_or_else(|| {
                SpecError::Invalid("no rootfs: neither rootfs_path nor root.path".into())
            })?
    } else {
        PathBuf::from(&req.rootfs)
    };
    let path = share::resolve(Path::new(share::SHARE_ROOT), &path)?;
    match std::fs::metadata(&path) {
        Ok(meta) if meta.is_dir() => Ok(path),
        Ok(_) => Err(SpecError::Invalid(format!("rootfs {path:?} is not a directory")).into()),
        Err(source) => Err(SpecError::ResolvePath { path, source }.into()),
    }
}

/// Reads the init's first report: READY, or why setup failed.
fn await_ready(spawned: &mut Spawned, plan: &super::plan::Plan) -> Result<(), ContainerError> {
    match spawned.next_report() {
        Ok(Some(report)) if report == Report::READY => Ok(()),
        Ok(Some(report)) => Err(setup_error(plan, report)),
        Ok(None) => Err(ContainerError::Setup {
            step: "setting up".into(),
            source: io::Error::other("the container's init exited during setup"),
        }),
        Err(e) => Err(ContainerError::sys("reading the init's setup report")(e)),
    }
}

/// The error of a failure report.
pub(super) fn setup_error(plan: &super::plan::Plan, report: Report) -> ContainerError {
    ContainerError::Setup {
        step: plan.describe(report.step),
        source: io::Error::from_raw_os_error(report.errno),
    }
}

/// Best effort: signals the process behind `spawned`'s pidfd.
fn kill_pidfd(spawned: &Spawned, signal: i32) {
    super::kill::send(&spawned.pidfd, signal).ok();
}

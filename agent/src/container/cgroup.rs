//! The cgroup v2 manager: one cgroup per container.
//!
//! Layout: `<root>/vessel/<sandbox_id>/<container_id>`, root being
//! `/sys/fs/cgroup`. The controllers `cpu`, `memory`, `pids` and `io` are
//! enabled in the `cgroup.subtree_control` of the root, of `vessel/` and of
//! each sandbox directory; container directories are leaves (cgroup v2's
//! no-internal-process rule). A controller the kernel lacks (absent from the
//! root's `cgroup.controllers`) is skipped with a warning at [`Cgroups::init`];
//! a limit that needs it is then refused with
//! [`CgroupError::MissingController`].
//!
//! Every guest syscall costs milliseconds here, so the manager writes each
//! file once (open + write + close), never reads a value back, and never
//! scans a directory whose entries it knows.
//!
//! # Resources
//!
//! [`Cgroup::apply`] translates OCI [`LinuxResources`] as runc's cgroup v2
//! driver does, writing only what the spec sets. Everything is validated
//! before the first write, so a refused spec changes nothing; a write the
//! kernel refuses stops there (earlier writes stay, as with runc).
//!
//! | OCI field | file | value |
//! |---|---|---|
//! | `cpu.idle` | `cpu.idle` | as is, written first |
//! | `cpu.shares` | `cpu.weight` | `1 + (shares - 2) * 9999 / 262142` (runc's linear map of [2, 262144] onto [1, 10000]; shares clamped into that range first, as v1 kernels do); 0 = unset; skipped when `idle` is 1 (the kernel refuses a weight for an idle group) |
//! | `cpu.quota`, `cpu.period` | `cpu.max` | `"QUOTA PERIOD"`; `"max PERIOD"` when the quota is negative, 0 or unset but a period is set; period 100000 by default; both unset/0 = no write |
//! | `cpu.burst` | `cpu.max.burst` | as is, after `cpu.max` |
//! | `memory.reservation` | `memory.low` | bytes; -1 = `max`; 0 = unset |
//! | `memory.limit` | `memory.max` | bytes; -1 = `max`; 0 = unset |
//! | `pids.limit` | `pids.max` | <= 0 = `max` |
//! | `blockIO.weight` | `io.weight` | `"default W"`, `W = 1 + (weight - 10) * 9999 / 990` (runc's map of [10, 1000] onto [1, 10000]; other weights refused); 0 = unset |
//! | `unified` | the key | the value, as is, last (sorted by key) |
//!
//! `io.weight` exists only with the BFQ scheduler or iocost: without it a
//! weight is refused ([`CgroupError::UnsupportedResource`]), as is any typed
//! limit whose file the kernel lacks. A `unified` key must be
//! `<controller>.<file>` for an enabled controller; `cgroup.*` keys (procs,
//! kill, freeze, subtree control...) belong to the agent and are refused.
//!
//! Ignored, with a warning naming the field (none of them weakens the
//! isolation the microVM provides):
//! - `memory.swap`: the guest has no swap (a debug log only);
//! - `memory.kernel`, `kernelTCP`, `swappiness`, `disableOOMKiller: true`,
//!   `useHierarchy: false`, `checkBeforeUpdate: true`: cgroup v1 knobs with no
//!   v2 equivalent;
//! - `cpu.realtimeRuntime`, `realtimePeriod` (no RT group scheduling in v2),
//!   `cpu.cpus`, `cpu.mems` (the `cpuset` controller is not managed: the
//!   sandbox's vCPUs are its CPU set);
//! - `blockIO.leafWeight`, `weightDevice`, `throttle*Device`: per-device
//!   entries name *host* devices, whose numbers mean nothing in the guest;
//! - `hugepageLimits`, `network`, `rdma`.
//! - `devices`: cgroup v2 enforces a device allowlist only through an eBPF
//!   program, which this manager does not load; containerd sends a list for
//!   every container, so this is warned about once per agent, not per
//!   container. Device access inside the guest is bounded by the device nodes
//!   the engine creates and by the capability set.
//!
//! # Removal
//!
//! [`Cgroup::remove`] retries the container's `rmdir` on `EBUSY` for up to a
//! second while its last processes exit, then removes the sandbox directory
//! if that was the last container. Sandbox directories are created and
//! removed under one lock, so a container being created never sees its
//! sandbox vanish.

mod controllers;
mod error;
mod fs;
mod resources;
mod stats;
#[cfg(test)]
mod tests;

use std::fmt;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use oci_spec::runtime::LinuxResources;

use controllers::{Controller, Controllers};
pub use error::CgroupError;
pub use fs::{CgroupFs, RealCgroupFs};
#[allow(unused_imports)] // used by the engine
pub use stats::{
    parse_oom_kill, read_oom_kills, CgroupStats, CpuStats, IoStats, MemoryStats, PidsStats,
};

/// Where cgroup v2 is mounted in the guest.
pub const DEFAULT_ROOT: &str = "/sys/fs/cgroup";

/// The agent's directory under the root.
const VESSEL_DIR: &str = "vessel";

/// How long [`Cgroup::remove`] waits for a busy cgroup to empty.
const BUSY_TIMEOUT: Duration = Duration::from_secs(1);

/// The longest pause between two `rmdir` attempts on a busy cgroup.
const MAX_BUSY_PAUSE: Duration = Duration::from_millis(100);

/// Refuses ids that cannot be one directory name.
fn validate_id(id: &str) -> Result<(), CgroupError> {
    if id.is_empty() || id == "." || id == ".." || id.contains(['/', '\0']) {
        return Err(CgroupError::InvalidId(id.to_owned()));
    }
    Ok(())
}

/// What [`Cgroups`] and its [`Cgroup`]s share.
struct Shared {
    fs: Arc<dyn CgroupFs>,
    /// Where cgroup v2 is mounted.
    root: PathBuf,
    /// `<root>/vessel`.
    vessel: PathBuf,
    /// Set by [`Cgroups::init`].
    controllers: OnceLock<Controllers>,
    /// Held while a sandbox directory is created or removed, and while a
    /// container directory is created in it.
    sandboxes: Mutex<()>,
    busy_timeout: Duration,
}

impl Shared {
    /// Creates `sandbox` if it is not there, enabling `controllers` in it,
    /// then the container's directory `path` in it. Returns whether it
    /// created `sandbox`, which it removes again if `path` fails.
    fn make_dirs(
        &self,
        sandbox: &Path,
        path: &Path,
        controllers: Controllers,
    ) -> Result<bool, CgroupError> {
        let _guard = self.sandboxes.lock().unwrap_or_else(|e| e.into_inner());
        let created_sandbox = match self.fs.mkdir(sandbox) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
            Err(source) => {
                return Err(CgroupError::CreateDir {
                    path: sandbox.to_owned(),
                    source,
                })
            }
        };
        let enabled = if created_sandbox && !controllers.is_empty() {
            let control = sandbox.join("cgroup.subtree_control");
            write_file(&*self.fs, &control, &controllers.subtree_control())
        } else {
            Ok(())
        };
        let made = enabled.and_then(|()| {
            self.fs
                .mkdir(path)
                .map_err(|source| CgroupError::CreateDir {
                    path: path.to_owned(),
                    source,
                })
        });
        if let Err(err) = made {
            if created_sandbox {
                if let Err(e) = self.fs.rmdir(sandbox) {
                    tracing::warn!(cgroup = %sandbox.display(), error = %e, "cannot remove sandbox cgroup after a failed create");
                }
            }
            return Err(err);
        }
        Ok(created_sandbox)
    }

    /// Removes `sandbox` unless another container still lives in it.
    fn remove_sandbox_if_empty(&self, sandbox: &Path) -> Result<(), CgroupError> {
        let _guard = self.sandboxes.lock().unwrap_or_else(|e| e.into_inner());
        match self.fs.rmdir(sandbox) {
            Ok(()) => {
                tracing::debug!(cgroup = %sandbox.display(), "removed sandbox cgroup");
                Ok(())
            }
            // cgroupfs says EBUSY for a cgroup with children.
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    || matches!(e.raw_os_error(), Some(libc::EBUSY | libc::ENOTEMPTY)) =>
            {
                Ok(())
            }
            Err(source) => Err(CgroupError::RemoveDir {
                path: sandbox.to_owned(),
                source,
            }),
        }
    }
}

/// The agent's cgroups: creates one per container.
pub struct Cgroups {
    shared: Arc<Shared>,
}

impl fmt::Debug for Cgroups {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cgroups")
            .field("root", &self.shared.root)
            .field("controllers", &self.shared.controllers.get())
            .finish_non_exhaustive()
    }
}

impl Cgroups {
    /// A manager for cgroup v2 mounted at `root` (no syscall yet).
    pub fn new(fs: Arc<dyn CgroupFs>, root: PathBuf) -> Cgroups {
        Cgroups {
            shared: Arc::new(Shared {
                fs,
                vessel: root.join(VESSEL_DIR),
                root,
                controllers: OnceLock::new(),
                sandboxes: Mutex::new(()),
                busy_timeout: BUSY_TIMEOUT,
            }),
        }
    }

    /// Once at agent start: finds the kernel's controllers, enables the
    /// managed ones in the root, creates `vessel/` and enables them there.
    pub fn init(&self) -> Result<(), CgroupError> {
        let fs = &*self.shared.fs;
        let root = &self.shared.root;
        let list = root.join("cgroup.controllers");
        let text = fs.read(&list).map_err(|source| CgroupError::ReadFile {
            path: list.clone(),
            source,
        })?;
        let controllers = Controllers::from_list(&text);
        let missing = controllers.missing();
        if !missing.is_empty() {
            tracing::warn!(
                missing = ?missing,
                "cgroup controllers missing from the kernel: limits needing them will be refused"
            );
        }
        if !controllers.is_empty() {
            write_file(
                fs,
                &root.join("cgroup.subtree_control"),
                &controllers.subtree_control(),
            )?;
        }
        match fs.mkdir(&self.shared.vessel) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(source) => {
                return Err(CgroupError::CreateDir {
                    path: self.shared.vessel.clone(),
                    source,
                })
            }
        }
        if !controllers.is_empty() {
            let control = self.shared.vessel.join("cgroup.subtree_control");
            write_file(fs, &control, &controllers.subtree_control())?;
        }
        // A second init finds the same controllers.
        let _ = self.shared.controllers.set(controllers);
        tracing::info!(controllers = %controllers, "cgroups ready");
        Ok(())
    }

    /// Creates the cgroup of `container_id` in `sandbox_id`'s (created, with
    /// the controllers enabled, on first use) and applies `resources`. An
    /// existing container cgroup is an error ([`io::ErrorKind::AlreadyExists`])
    /// so that a stale one is noticed. On failure, removes what it created.
    pub fn create(
        &self,
        sandbox_id: &str,
        container_id: &str,
        resources: Option<&LinuxResources>,
    ) -> Result<Cgroup, CgroupError> {
        validate_id(sandbox_id)?;
        validate_id(container_id)?;
        let controllers = *self
            .shared
            .controllers
            .get()
            .ok_or(CgroupError::NotInitialized)?;
        let sandbox = self.shared.vessel.join(sandbox_id);
        let path = sandbox.join(container_id);
        let created_sandbox = self.shared.make_dirs(&sandbox, &path, controllers)?;
        let cgroup = Cgroup {
            shared: Arc::clone(&self.shared),
            controllers,
            sandbox,
            path,
        };
        tracing::debug!(cgroup = %cgroup.path.display(), "created container cgroup");
        if let Some(resources) = resources {
            if let Err(err) = cgroup.apply(resources) {
                cgroup.undo_create(created_sandbox);
                return Err(err);
            }
        }
        Ok(cgroup)
    }
}

/// Writes `value` to `path`, once.
fn write_file(fs: &dyn CgroupFs, path: &Path, value: &str) -> Result<(), CgroupError> {
    fs.write(path, value)
        .map_err(|source| CgroupError::WriteFile {
            path: path.to_owned(),
            value: value.to_owned(),
            source,
        })
}

/// One container's cgroup.
pub struct Cgroup {
    shared: Arc<Shared>,
    /// The controllers enabled in it.
    controllers: Controllers,
    /// `<root>/vessel/<sandbox_id>`.
    sandbox: PathBuf,
    /// `<root>/vessel/<sandbox_id>/<container_id>`.
    path: PathBuf,
}

impl fmt::Debug for Cgroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cgroup")
            .field("path", &self.path)
            .field("controllers", &self.controllers)
            .finish_non_exhaustive()
    }
}

impl Cgroup {
    /// The cgroup's directory.
    #[cfg(test)]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// An `O_PATH` descriptor of the directory, for `clone3(CLONE_INTO_CGROUP)`.
    pub fn open_dir(&self) -> Result<OwnedFd, CgroupError> {
        self.shared
            .fs
            .open_dir(&self.path)
            .map_err(|source| CgroupError::OpenDir {
                path: self.path.clone(),
                source,
            })
    }

    /// Freezes (or thaws) every process in the cgroup. The kernel completes
    /// a freeze asynchronously: `cgroup.events` says `frozen 1` once done.
    pub fn freeze(&self, frozen: bool) -> Result<(), CgroupError> {
        self.write("cgroup.freeze", if frozen { "1" } else { "0" })
    }

    /// SIGKILLs every process in the cgroup (`cgroup.kill`).
    pub fn kill(&self) -> Result<(), CgroupError> {
        self.write("cgroup.kill", "1")
    }

    /// The `memory.events` file, whose `oom_kill` count rises on OOM kills.
    pub fn memory_events_path(&self) -> PathBuf {
        self.path.join("memory.events")
    }

    /// Removes the cgroup, retrying for up to a second while its last
    /// processes exit, then the sandbox's if this was its last container.
    /// A cgroup already gone is not an error.
    pub fn remove(&self) -> Result<(), CgroupError> {
        let fs = &*self.shared.fs;
        let deadline = Instant::now() + self.shared.busy_timeout;
        let mut pause = Duration::from_millis(1);
        loop {
            match fs.rmdir(&self.path) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    tracing::debug!(cgroup = %self.path.display(), "container cgroup already removed");
                    break;
                }
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(CgroupError::RemoveDir {
                            path: self.path.clone(),
                            source: e,
                        });
                    }
                    std::thread::sleep(pause.min(deadline - now));
                    pause = (pause * 2).min(MAX_BUSY_PAUSE);
                }
                Err(source) => {
                    return Err(CgroupError::RemoveDir {
                        path: self.path.clone(),
                        source,
                    })
                }
            }
        }
        tracing::debug!(cgroup = %self.path.display(), "removed container cgroup");
        self.shared.remove_sandbox_if_empty(&self.sandbox)
    }

    /// Removes a just-created, still empty cgroup after a failure, and the
    /// sandbox's if it was created with it; logs what it cannot remove.
    fn undo_create(&self, created_sandbox: bool) {
        if let Err(e) = self.shared.fs.rmdir(&self.path) {
            tracing::warn!(cgroup = %self.path.display(), error = %e, "cannot remove container cgroup after a failed create");
            return;
        }
        if created_sandbox {
            if let Err(e) = self.shared.remove_sandbox_if_empty(&self.sandbox) {
                tracing::warn!(cgroup = %self.sandbox.display(), error = ?e, "cannot remove sandbox cgroup after a failed create");
            }
        }
    }

    /// Writes `value` to the cgroup's `file`.
    fn write(&self, file: &str, value: &str) -> Result<(), CgroupError> {
        write_file(&*self.shared.fs, &self.path.join(file), value)
    }

    /// Reads the cgroup's `file`; returns its path (for parse errors) too.
    fn read(&self, file: &str) -> Result<(PathBuf, String), CgroupError> {
        let path = self.path.join(file);
        match self.shared.fs.read(&path) {
            Ok(text) => Ok((path, text)),
            Err(source) => Err(CgroupError::ReadFile { path, source }),
        }
    }
}

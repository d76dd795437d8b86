//! The OCI spec's mounts and devices as [`Step`]s, resolved inside the
//! container's rootfs.
//!
//! Destinations are resolved by [`secure_join`]: symlinks in the rootfs are
//! followed as if the rootfs were `/`, so a link such as `/etc -> /` or
//! `../../..` can never point a mount outside it. Resolution happens in the
//! agent before `clone3`, on a rootfs no container process runs in yet.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxDevice, LinuxDeviceType, Mount};

use super::error::SpecError;
use super::plan::Step;
pub use super::resolve::secure_join;

/// A path string for a step.
pub fn cstr(path: impl AsRef<Path>) -> Result<CString, SpecError> {
    let path = path.as_ref();
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| SpecError::Invalid(format!("path {path:?} contains a NUL byte")))
}

/// Mount options split the way mount(8) splits them.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct MountOptions {
    /// `MS_*` flags for the mount itself.
    pub flags: libc::c_ulong,
    /// Propagation changes, applied after the mount.
    pub propagation: Vec<libc::c_ulong>,
    /// Options for the filesystem (`data`).
    pub data: Vec<String>,
}

/// Parses OCI mount options.
pub fn parse_options(options: &[String]) -> MountOptions {
    let mut out = MountOptions::default();
    for option in options {
        let (set, clear) = match option.as_str() {
            "defaults" | "rw" => (0, libc::MS_RDONLY),
            "ro" => (libc::MS_RDONLY, 0),
            "nosuid" => (libc::MS_NOSUID, 0),
            "suid" => (0, libc::MS_NOSUID),
            "nodev" => (libc::MS_NODEV, 0),
            "dev" => (0, libc::MS_NODEV),
            "noexec" => (libc::MS_NOEXEC, 0),
            "exec" => (0, libc::MS_NOEXEC),
            "sync" => (libc::MS_SYNCHRONOUS, 0),
            "async" => (0, libc::MS_SYNCHRONOUS),
            "dirsync" => (libc::MS_DIRSYNC, 0),
            "mand" => (libc::MS_MANDLOCK, 0),
            "nomand" => (0, libc::MS_MANDLOCK),
            "atime" => (0, libc::MS_NOATIME),
            "noatime" => (libc::MS_NOATIME, 0),
            "diratime" => (0, libc::MS_NODIRATIME),
            "nodiratime" => (libc::MS_NODIRATIME, 0),
            "relatime" => (libc::MS_RELATIME, 0),
            "norelatime" => (0, libc::MS_RELATIME),
            "strictatime" => (libc::MS_STRICTATIME, 0),
            "nostrictatime" => (0, libc::MS_STRICTATIME),
            "bind" => (libc::MS_BIND, 0),
            "rbind" => (libc::MS_BIND | libc::MS_REC, 0),
            other => {
                if let Some(p) = propagation(other) {
                    out.propagation.push(p);
                } else {
                    out.data.push(other.to_string());
                }
                continue;
            }
        };
        out.flags = (out.flags | set) & !clear;
    }
    out
}

/// A propagation option's flags.
pub fn propagation(option: &str) -> Option<libc::c_ulong> {
    Some(match option {
        "private" => libc::MS_PRIVATE,
        "rprivate" => libc::MS_PRIVATE | libc::MS_REC,
        "shared" => libc::MS_SHARED,
        "rshared" => libc::MS_SHARED | libc::MS_REC,
        "slave" => libc::MS_SLAVE,
        "rslave" => libc::MS_SLAVE | libc::MS_REC,
        "unbindable" => libc::MS_UNBINDABLE,
        "runbindable" => libc::MS_UNBINDABLE | libc::MS_REC,
        _ => return None,
    })
}

/// What a mount or device target is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// A directory (most mounts).
    Dir,
    /// A file (a bind of a file).
    File,
    /// A device node, made by its own step.
    Node,
}

/// Turns mounts into steps; remembers what is mounted where so later
/// destinations under an earlier mount get their directories made in the
/// child (the agent cannot see inside a mount that does not exist yet).
#[derive(Debug)]
pub struct MountPlanner<'a> {
    rootfs: &'a Path,
    mounted: Vec<PathBuf>,
    steps: Vec<Step>,
}

impl<'a> MountPlanner<'a> {
    /// A planner for mounts under `rootfs`.
    pub fn new(rootfs: &'a Path) -> MountPlanner<'a> {
        MountPlanner {
            rootfs,
            mounted: Vec::new(),
            steps: Vec::new(),
        }
    }

    /// The steps so far.
    pub fn into_steps(self) -> Vec<Step> {
        self.steps
    }

    /// Resolves `dest` in the rootfs and adds the steps that create it as
    /// `kind` (a device node's own step makes the node: only its parents).
    fn target(&mut self, dest: &Path, kind: Target) -> Result<PathBuf, SpecError> {
        let (target, missing) =
            secure_join(self.rootfs, dest).map_err(|source| SpecError::ResolvePath {
                path: dest.to_path_buf(),
                source,
            })?;
        let covered = self
            .mounted
            .iter()
            .filter(|m| target.starts_with(m) && **m != target)
            .max_by_key(|m| m.as_os_str().len())
            .cloned();
        let to_make: Vec<PathBuf> = match covered {
            // Everything below the covering mount, which the agent cannot see.
            Some(mount_point) => {
                let rest = target.strip_prefix(&mount_point).unwrap_or(Path::new(""));
                let mut dir = mount_point.clone();
                rest.components()
                    .map(|c| {
                        dir.push(c);
                        dir.clone()
                    })
                    .collect()
            }
            None => missing,
        };
        let count = to_make.len();
        for (i, path) in to_make.into_iter().enumerate() {
            let path = cstr(&path)?;
            match kind {
                _ if i + 1 < count => self.steps.push(Step::Mkdir { path, mode: 0o755 }),
                Target::Dir => self.steps.push(Step::Mkdir { path, mode: 0o755 }),
                Target::File => self.steps.push(Step::Touch { path }),
                Target::Node => {}
            }
        }
        Ok(target)
    }

    /// Adds one OCI mount.
    pub fn mount(&mut self, m: &Mount) -> Result<(), SpecError> {
        let options = parse_options(m.options().as_deref().unwrap_or_default());
        let typ = m.typ().as_deref().unwrap_or("");
        let bind = typ == "bind" || options.flags & libc::MS_BIND != 0;
        let dest = m.destination();
        if !dest.is_absolute() {
            return Err(SpecError::Invalid(format!(
                "mount destination {dest:?} is not absolute"
            )));
        }
        if bind {
            let source = m.source().clone().ok_or_else(|| {
                SpecError::Invalid(format!("bind mount on {dest:?} has no source"))
            })?;
            // A volume from the host: resolved inside its share.
            let source = super::share::resolve(Path::new(super::share::SHARE_ROOT), &source)?;
            let meta = std::fs::metadata(&source).map_err(|e| SpecError::ResolvePath {
                path: source.clone(),
                source: e,
            })?;
            let kind = if meta.is_dir() {
                Target::Dir
            } else {
                Target::File
            };
            let target = self.target(dest, kind)?;
            let target_c = cstr(&target)?;
            let recursive = options.flags & libc::MS_REC;
            self.steps.push(Step::Mount {
                source: Some(cstr(&source)?),
                target: target_c.clone(),
                fstype: None,
                flags: libc::MS_BIND | recursive,
                data: None,
            });
            // Bind ignores other flags: they take a remount.
            let extra = options.flags & !(libc::MS_BIND | libc::MS_REC);
            if extra != 0 {
                self.steps.push(Step::RemountBind {
                    target: target_c.clone(),
                    flags: extra,
                });
            }
            self.propagate(&target_c, &options.propagation);
            self.mounted.push(target);
            return Ok(());
        }
        // The guest runs cgroup v2 only.
        let (fstype, source) = match typ {
            "cgroup" | "cgroup2" => ("cgroup2".to_string(), "cgroup2".to_string()),
            "" => return Err(SpecError::Invalid(format!("mount on {dest:?} has no type"))),
            t => (
                t.to_string(),
                m.source()
                    .as_ref()
                    .map_or_else(|| t.to_string(), |s| s.to_string_lossy().into_owned()),
            ),
        };
        let target = self.target(dest, Target::Dir)?;
        let target_c = cstr(&target)?;
        let data = (!options.data.is_empty())
            .then(|| CString::new(options.data.join(",")))
            .transpose()
            .map_err(|_| SpecError::Invalid(format!("options of {dest:?} contain NUL")))?;
        self.steps.push(Step::Mount {
            source: Some(cstr(&source)?),
            target: target_c.clone(),
            fstype: Some(cstr(&fstype)?),
            flags: options.flags,
            data,
        });
        self.propagate(&target_c, &options.propagation);
        self.mounted.push(target);
        Ok(())
    }

    fn propagate(&mut self, target: &CString, propagation: &[libc::c_ulong]) {
        for flags in propagation {
            self.steps.push(Step::Mount {
                source: None,
                target: target.clone(),
                fstype: None,
                flags: *flags,
                data: None,
            });
        }
    }

    /// Adds a device node (or, in a user namespace, a bind of the guest's).
    pub fn device(&mut self, dev: &LinuxDevice, userns: bool) -> Result<(), SpecError> {
        let node_type = match dev.typ() {
            LinuxDeviceType::C | LinuxDeviceType::U => libc::S_IFCHR,
            LinuxDeviceType::B => libc::S_IFBLK,
            LinuxDeviceType::P => libc::S_IFIFO,
            LinuxDeviceType::A => {
                return Err(SpecError::Invalid(format!(
                    "device {:?} has type \"a\", which only cgroup rules take",
                    dev.path()
                )))
            }
        };
        let path = dev.path();
        if !path.starts_with("/dev") {
            return Err(SpecError::Invalid(format!(
                "device {path:?} is not under /dev"
            )));
        }
        let kind = if userns { Target::File } else { Target::Node };
        let target = self.target(path, kind)?;
        if userns {
            self.steps.push(Step::BindDevice {
                source: cstr(path)?,
                target: cstr(&target)?,
            });
            return Ok(());
        }
        let mode = dev.file_mode().unwrap_or(0o666) & 0o7777;
        self.steps.push(Step::Mknod {
            path: cstr(&target)?,
            mode: node_type | mode,
            dev: libc::makedev(dev.major() as u32, dev.minor() as u32),
        });
        Ok(())
    }

    /// Adds a symlink at `link` (inside the rootfs) pointing at `to`.
    pub fn symlink(&mut self, to: &str, link: &str) -> Result<(), SpecError> {
        let (link, _) =
            secure_join(self.rootfs, Path::new(link)).map_err(|source| SpecError::ResolvePath {
                path: link.into(),
                source,
            })?;
        self.steps.push(Step::Symlink {
            target: cstr(to)?,
            link: cstr(&link)?,
        });
        Ok(())
    }

    /// Whether something is mounted exactly at `dest` (resolved).
    pub fn has_mount(&self, dest: &str) -> bool {
        let target = self.rootfs.join(dest.trim_start_matches('/'));
        self.mounted.contains(&target)
    }
}

#[cfg(test)]
#[path = "mounts_tests.rs"]
mod tests;

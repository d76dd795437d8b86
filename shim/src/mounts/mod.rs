//! Host mounts the shim makes, all under the sandbox's shared directory,
//! which the VMM serves to the guest over virtio-fs.
//!
//! The shared directory is bound onto itself (`nosuid`, `nodev`) and made a
//! *shared* mount before the VMM starts. The VMM's private mount namespace
//! then holds a slave of it, so a container rootfs or volume mounted here
//! later (while the VM runs) shows up in the guest, and an unmount here
//! disappears there.
//!
//! The guest can write the share, so every path under it may be a symlink
//! it planted a moment ago (the bug class of Kata's CVE-2020-2026 and
//! CVE-2020-2024). The shim therefore never uses such a path by name as
//! root: it makes and opens them from the share's root fd without
//! following links ([`beneath`]), mounts onto the fd it got (the new mount
//! API's `open_tree` + `mount_setattr` + `move_mount`, or mount(2) through
//! `/proc/self/fd`), and unmounts and removes as [`remove`] says. Every
//! host bind is `nosuid,nodev`, so a setuid file or a device node a guest
//! makes in a volume is inert on the host.

mod beneath;
mod remove;

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};
use rustix::mount::{MountFlags, MountPropagationFlags, MoveMountFlags, OpenTreeFlags};

use crate::domain::RootfsMount;

/// Why a host mount under the share failed.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("opening the share {path}")]
    OpenShare {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cloning the bind source {path}")]
    CloneSource {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("setting nosuid, nodev (and read-only) on the bind of {path}")]
    SetAttributes {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("creating {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("creating the file {path} to bind a file on")]
    CreateFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading the bind source {path}")]
    StatSource {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("mounting {target}")]
    MountPath {
        target: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("mounting the rootfs at {target}")]
    MountRootfs {
        target: PathBuf,
        #[source]
        source: RootfsError,
    },
}

/// containerd's `mount_rootfs` error. Its text repeats its cause, which a
/// chain would print twice: an OS error is kept apart from its step.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("{step}")]
    Os {
        step: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Other(containerd_shim::Error),
}

impl From<containerd_shim::Error> for RootfsError {
    fn from(e: containerd_shim::Error) -> Self {
        let (step, source) = match e {
            containerd_shim::Error::MountError { context, err } => {
                (format!("{context} error"), std::io::Error::from(err))
            }
            containerd_shim::Error::IoError { context, err } => (format!("{context} error"), err),
            containerd_shim::Error::Nix(err) => ("Nix error".to_owned(), std::io::Error::from(err)),
            other => return RootfsError::Other(other),
        };
        RootfsError::Os { step, source }
    }
}

/// A failed mount(2) on `target`, a host path the shim made (never one
/// under the share).
fn mount_path_error(target: &Path) -> impl FnOnce(rustix::io::Errno) -> MountError + '_ {
    move |e| MountError::MountPath {
        target: target.to_owned(),
        source: e.into(),
    }
}

/// Sets `attrs` (`MOUNT_ATTR_*`) on every mount of the detached tree `tree`.
fn set_attributes(tree: BorrowedFd<'_>, attrs: u64) -> std::io::Result<()> {
    let attr = libc::mount_attr {
        attr_set: attrs,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: mount_setattr(2) reads `size` bytes of `attr`, a live
    // mount_attr; the empty path is a NUL-terminated string; `tree` is an
    // open fd for the duration of the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_RECURSIVE,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if ret == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Binds host `source` onto the inode `target` is an fd of: a detached
/// copy of `source`'s mounts, made `nosuid,nodev` (and read-only if asked)
/// before it is attached, so it is never visible writable or suid.
fn bind_onto(
    source: &Path,
    target: BorrowedFd<'_>,
    shown: &Path,
    readonly: bool,
) -> Result<(), MountError> {
    let tree = rustix::mount::open_tree(
        rustix::fs::CWD,
        source,
        OpenTreeFlags::OPEN_TREE_CLONE
            | OpenTreeFlags::OPEN_TREE_CLOEXEC
            | OpenTreeFlags::AT_RECURSIVE,
    )
    .map_err(|e| MountError::CloneSource {
        path: source.to_owned(),
        source: e.into(),
    })?;
    let mut attrs = libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV;
    if readonly {
        attrs |= libc::MOUNT_ATTR_RDONLY;
    }
    set_attributes(tree.as_fd(), attrs).map_err(|e| MountError::SetAttributes {
        path: source.to_owned(),
        source: e,
    })?;
    rustix::mount::move_mount(
        &tree,
        c"",
        target,
        c"",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )
    .map_err(|e| MountError::MountPath {
        target: shown.to_owned(),
        source: e.into(),
    })
}

/// The sandbox's shared directory on the host.
#[derive(Debug)]
pub struct SharedDir {
    path: PathBuf,
    /// The share's own mount, opened once: every path under it is resolved
    /// from here.
    root: OwnedFd,
}

impl SharedDir {
    /// Creates `path` (in the shim's own state directory, which the guest
    /// cannot reach) and makes it a `nosuid,nodev` shared mount of its own.
    pub fn create(path: &Path) -> Result<SharedDir, MountError> {
        std::fs::create_dir_all(path).map_err(|source| MountError::CreateDir {
            path: path.to_owned(),
            source,
        })?;
        rustix::mount::mount_bind(path, path).map_err(mount_path_error(path))?;
        let open = open_own_dir(path);
        let root = match open {
            Ok(root) => root,
            Err(e) => {
                unmount_path(path);
                return Err(MountError::OpenShare {
                    path: path.to_owned(),
                    source: e.into(),
                });
            }
        };
        let shared = SharedDir {
            path: path.to_owned(),
            root,
        };
        let flags = MountFlags::BIND | MountFlags::NOSUID | MountFlags::NODEV;
        rustix::mount::mount_remount(path, flags, "").map_err(mount_path_error(path))?;
        rustix::mount::mount_change(path, MountPropagationFlags::SHARED)
            .map_err(mount_path_error(path))?;
        Ok(shared)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn made(
        &self,
        relative: &Path,
        made: std::io::Result<OwnedFd>,
        file: bool,
    ) -> Result<OwnedFd, MountError> {
        made.map_err(|source| {
            let path = self.path.join(relative);
            if file {
                MountError::CreateFile { path, source }
            } else {
                MountError::CreateDir { path, source }
            }
        })
    }

    /// Binds host `source` (a file or directory) at `relative` under the
    /// share, `nosuid,nodev`, read-only if asked.
    pub fn bind(
        &self,
        source: &Path,
        relative: &Path,
        readonly: bool,
    ) -> Result<PathBuf, MountError> {
        let target = self.path.join(relative);
        let is_dir =
            std::fs::metadata(source)
                .map(|m| m.is_dir())
                .map_err(|e| MountError::StatSource {
                    path: source.to_owned(),
                    source: e,
                })?;
        let made = if is_dir {
            beneath::make_dirs(self.root.as_fd(), relative)
        } else {
            beneath::make_file(self.root.as_fd(), relative)
        };
        let fd = self.made(relative, made, !is_dir)?;
        bind_onto(source, fd.as_fd(), &target, readonly)?;
        Ok(target)
    }

    /// Mounts containerd's rootfs mounts at `relative` under the share
    /// (`nosuid,nodev`), or binds the bundle's own `rootfs` when it gave
    /// none (the bundle was prepared by hand).
    pub fn mount_rootfs(
        &self,
        mounts: &[RootfsMount],
        bundle: &Path,
        relative: &Path,
    ) -> Result<(), MountError> {
        let target = self.path.join(relative);
        let fd = self.made(
            relative,
            beneath::make_dirs(self.root.as_fd(), relative),
            false,
        )?;
        if mounts.is_empty() {
            return bind_onto(&bundle.join("rootfs"), fd.as_fd(), &target, false);
        }
        // containerd mounts by path (in a child it forks, which inherits
        // the fd): the fd's /proc path is the inode made above, whatever
        // the guest renames meanwhile.
        let onto = beneath::proc_path(&fd);
        for m in mounts {
            let fstype = (!m.fstype.is_empty()).then_some(m.fstype.as_str());
            let source = (!m.source.is_empty()).then_some(m.source.as_str());
            let mut options = m.options.clone();
            options.extend(["nosuid".to_owned(), "nodev".to_owned()]);
            containerd_shim::mount::mount_rootfs(fstype, source, &options, &onto).map_err(|e| {
                MountError::MountRootfs {
                    target: target.clone(),
                    source: e.into(),
                }
            })?;
        }
        Ok(())
    }

    /// Unmounts everything under the share's `relative` directory (deepest
    /// first) and removes it; a mount that stays keeps its data and is
    /// named in a warning.
    pub fn remove(&self, relative: &Path) {
        remove_beneath(self.root.as_fd(), &self.path, relative);
    }
}

/// Unmounts and removes `relative` under `root` (the fd of `root_path`).
/// What stays has been named in a warning each.
fn remove_beneath(root: BorrowedFd<'_>, root_path: &Path, relative: &Path) {
    remove::unmount_under(root, root_path, relative);
    remove::remove_tree(root, root_path, relative);
}

impl Drop for SharedDir {
    fn drop(&mut self) {
        let stuck = remove::unmount_under(self.root.as_fd(), &self.path, Path::new(""));
        // The share's own mount: its path is the shim's.
        unmount_path(&self.path);
        if stuck.is_empty() {
            remove_dir(&self.path);
        } else {
            tracing::warn!(dir = %self.path.display(), still_mounted = ?stuck, "the share keeps mounts; left in place");
        }
    }
}

/// An `O_PATH` fd of the shim's own directory `path` (a host path it made,
/// never one under the share; its last component is not followed).
fn open_own_dir(path: &Path) -> rustix::io::Result<OwnedFd> {
    rustix::fs::open(
        path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Detaches the mount at the host path `target` (one the shim made, never
/// a path under the share); false if nothing was mounted there.
fn unmount_path(target: &Path) -> bool {
    let flags = rustix::mount::UnmountFlags::DETACH | rustix::mount::UnmountFlags::NOFOLLOW;
    rustix::mount::unmount(target, flags).is_ok()
}

/// Removes the shim's directory `dir` (a sandbox's state directory, which
/// may hold the share): unmounts what is under it (resolved without
/// following links), then removes it without crossing a mount or following
/// a symlink. A mount that stays keeps its data and is named.
pub fn remove_dir(dir: &Path) {
    // A mount on `dir` itself goes first, so what is removed is the
    // directory, not the mount's contents.
    if unmount_path(dir) {
        tracing::debug!(dir = %dir.display(), "unmounted");
    }
    let open = open_own_dir(dir);
    let root = match open {
        Ok(root) => root,
        Err(rustix::io::Errno::NOENT) => return,
        Err(error) => {
            tracing::warn!(dir = %dir.display(), %error, "cannot open to remove");
            return;
        }
    };
    remove_beneath(root.as_fd(), dir, Path::new(""));
    if let Err(error) = std::fs::remove_dir(dir) {
        if error.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(dir = %dir.display(), %error, "cannot remove the directory");
        }
    }
}

/// After a shim died: unmounts and removes container `id`'s directory
/// under the share at `share` (a host path of the shim's).
pub fn remove_dead_container(share: &Path, id: &str) {
    let open = open_own_dir(share);
    match open {
        Ok(root) => remove_beneath(root.as_fd(), share, Path::new(id)),
        Err(rustix::io::Errno::NOENT) => {}
        Err(error) => {
            tracing::warn!(share = %share.display(), %error, "cannot open the share to clean")
        }
    }
}

/// Mount points at or below `dir`, in mount order (parents first).
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    info.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(unescape_mountinfo)
        .filter(|p| p.starts_with(dir))
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(field: &str) -> PathBuf {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4].iter().all(u8::is_ascii_digit)
        {
            let octal = std::str::from_utf8(&bytes[i + 1..i + 4]).unwrap_or("0");
            out.push(u8::from_str_radix(octal, 8).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    PathBuf::from(std::ffi::OsStr::from_bytes(&out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(
            unescape_mountinfo("/run/a\\040b\\134c"),
            PathBuf::from("/run/a b\\c")
        );
        assert_eq!(unescape_mountinfo("/plain"), PathBuf::from("/plain"));
        assert_eq!(unescape_mountinfo("/x\\04"), PathBuf::from("/x\\04"));
    }

    #[test]
    fn a_rootfs_error_keeps_its_os_cause_once() {
        let e = MountError::MountRootfs {
            target: "/s/c1/rootfs".into(),
            source: containerd_shim::Error::IoError {
                context: "Open /dev/loop-control".into(),
                err: std::io::Error::from_raw_os_error(libc::ENOENT),
            }
            .into(),
        };
        assert_eq!(e.to_string(), "mounting the rootfs at /s/c1/rootfs");
        let step = std::error::Error::source(&e).expect("the step");
        assert_eq!(step.to_string(), "Open /dev/loop-control error");
        let cause = step.source().expect("the OS error");
        assert!(cause.to_string().contains("No such file"), "{cause}");
        assert!(cause.source().is_none());
        let other = RootfsError::from(containerd_shim::Error::Other("fork failed".into()));
        assert_eq!(other.to_string(), "Other: fork failed");
    }
}

#[cfg(test)]
mod hostile_tests;

//! The shared directory and the VMM's private mount namespace.
//!
//! When an fs device is configured, `main` calls
//! [`enter_private_mount_namespace`] before any thread exists (a
//! multi-threaded process cannot move into a new mount namespace as a
//! whole), then [`SharedDir::prepare`]:
//!
//! 1. `unshare(CLONE_NEWNS)`: the VMM gets its own copy of the host's mount
//!    table. Every mount it makes lives there and vanishes with the process,
//!    even after SIGKILL: no mount is ever left on the host.
//! 2. `/` recursively `MS_SLAVE`: host mounts still propagate in, ours never
//!    propagate out.
//! 3. The shared directory is bound onto itself, `nosuid,nodev`, recursively
//!    (open_tree + mount_setattr + move_mount, so the bind is never visible
//!    without those flags and no path is resolved twice). A device node or
//!    setuid file in the share can then never be opened as a device or
//!    honoured by the VMM.
//!
//! fuse-backend-rs serves the share through `/proc/self/fd/N/.`, `N` being
//! an `O_PATH` fd on the root of that bind: the host path is resolved once,
//! at start, and a later change of it (a symlink swapped in) has no effect.

pub mod hotplug;

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tracing::info;

use self::hotplug::Added;
use super::sys::{self, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOSUID};
use super::FsError;

/// Moves the VMM into a private mount namespace whose mounts never reach the
/// host. Call it before spawning any thread.
pub fn enter_private_mount_namespace() -> Result<(), FsError> {
    sys::unshare_mount_ns().map_err(FsError::UnshareMountNamespace)?;
    sys::make_root_slave().map_err(FsError::MakeMountsSlave)?;
    info!("entered a private mount namespace");
    Ok(())
}

/// The directory the guest sees, and what the API hot-added inside it.
pub struct SharedDir {
    /// The canonical host path, for logs and replies.
    path: PathBuf,
    /// `O_PATH` on the root of the share (the `nosuid,nodev` bind, when
    /// [`SharedDir::prepare`] made one).
    root: OwnedFd,
    /// The mounts `fs_add` made, in the order made.
    adds: Mutex<Vec<Added>>,
}

impl SharedDir {
    /// Binds `dir` onto itself `nosuid,nodev` in the VMM's mount namespace
    /// (which [`enter_private_mount_namespace`] must have made private).
    pub fn prepare(dir: &Path) -> Result<Self, FsError> {
        let path = dir
            .canonicalize()
            .map_err(|e| FsError::ResolveSharedDir(dir.to_path_buf(), e))?;
        let under = sys::open_path(&path, libc::O_PATH | libc::O_DIRECTORY)
            .map_err(|e| FsError::OpenSharedDir(path.clone(), e))?;
        let tree = sys::clone_tree(&under).map_err(|e| FsError::BindSharedDir(path.clone(), e))?;
        sys::set_tree_attrs(&tree, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV)
            .map_err(|e| FsError::BindSharedDir(path.clone(), e))?;
        sys::move_tree(&tree, &under).map_err(|e| FsError::BindSharedDir(path.clone(), e))?;
        info!(path = %path.display(), "shared directory bound nosuid,nodev");
        // After the move, the tree's fd is the root of the attached bind.
        Ok(Self::with_root(path, tree))
    }

    /// Shares `dir` as it is, with no bind mount (tests, fuzzing).
    pub fn unmounted(dir: &Path) -> Result<Self, FsError> {
        let path = dir
            .canonicalize()
            .map_err(|e| FsError::ResolveSharedDir(dir.to_path_buf(), e))?;
        let root = sys::open_path(&path, libc::O_PATH | libc::O_DIRECTORY)
            .map_err(|e| FsError::OpenSharedDir(path.clone(), e))?;
        Ok(Self::with_root(path, root))
    }

    fn with_root(path: PathBuf, root: OwnedFd) -> Self {
        Self {
            path,
            root,
            adds: Mutex::new(Vec::new()),
        }
    }

    /// The canonical host path of the share.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The root as fuse-backend-rs opens it: through our fd, never the
    /// host path again. The fd lives as long as `self`.
    pub fn fs_root(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}/.", self.root.as_raw_fd()))
    }

    pub(super) fn root(&self) -> &OwnedFd {
        &self.root
    }
}

//! virtio-fs (virtio 1.2 §5.11): a host directory shared with the guest,
//! served in process by fuse-backend-rs's passthrough file system (no
//! virtiofsd, no vhost-user). The guest mounts it with
//! `mount -t virtiofs TAG DIR`.
//!
//! Queues: hiprio (0) carries FORGET and INTERRUPT, the single request
//! queue (1) everything else. Config space: the tag (36 bytes, NUL-padded)
//! and `num_request_queues` = 1. No feature bits (no notification queue) and
//! no DAX window: SETUPMAPPING and REMOVEMAPPING are answered ENOSYS.
//!
//! The device is split in two so that file I/O never runs under the lock
//! the vCPUs take for MMIO registers: [`Fs`] is the
//! [`VirtioDevice`](super::VirtioDevice) the transport drives, [`FsWorker`]
//! the subscriber of its own event loop, run by its own thread (`vmm-fs`),
//! apart from the shared device loop that serves virtio-rng and vsock. They share the active queues behind a mutex taken per
//! request.
//!
//! Events the worker handles, in its event loop ([`event_handler`]):
//! - **activate event**: the transport activated or reset the device; the
//!   worker adds or removes the two queue events.
//! - **hiprio / request queue event**: the guest posted FUSE requests; each
//!   descriptor chain is checked by the [`policy`] and handed to
//!   fuse-backend-rs ([`server`]), its reply written into the chain's
//!   device-writable buffers, the chain returned with the reply's length and
//!   the guest interrupted if the driver wants it.
//!
//! Guest-controlled input is the descriptor chains and the FUSE requests in
//! them. A chain whose buffers lie outside guest memory or have no room for
//! a reply is counted and returned with length 0; a request fuse-backend-rs
//! cannot decode gets an `EINVAL` reply. Nothing the guest posts makes the
//! VMM panic.
//!
//! Containment (what keeps the guest inside the shared directory) is in
//! three layers: the VMM's private mount namespace with the share bound
//! `nosuid,nodev` ([`share`]); fuse-backend-rs's own checks (names with `/`,
//! `..` at the root, `O_NOFOLLOW` everywhere, opening only regular files and
//! directories, inodes only by the ids it handed out); and our [`policy`] in
//! front of it. Hot-added bind mounts are in [`hotplug`].
//!
//! Snapshots: until the guest posts its first request (it has not mounted
//! the share), the device is only its tag and its queues, and is saved as
//! such; a restore serves the directory the restoring host names under that
//! tag. Once the guest has posted a request, [`Fs`] refuses to be saved, and
//! with it the snapshot: the FUSE session's inode and handle tables live in
//! this process and the guest's kernel refers to them.

pub mod counters;
pub mod device;
pub mod event_handler;
pub mod policy;
pub mod server;
pub mod share;
mod sys;
#[cfg(any(test, feature = "test-utils"))]
pub mod test_client;
#[cfg(any(test, feature = "test-utils"))]
pub mod test_utils;

#[cfg(test)]
mod containment_tests;
#[cfg(test)]
mod privilege_tests;
#[cfg(test)]
mod tests;

use std::io;
use std::path::PathBuf;

pub use counters::FsCounters;
pub use device::{Fs, FsWorker};
pub use server::{CacheMode, FsServer};
pub use share::{hotplug, SharedDir};

/// Errors of the virtio-fs device, its shared directory and its hot mounts.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("create an event")]
    CreateEvent(#[source] io::Error),
    #[error("enter a private mount namespace (sharing a directory needs root)")]
    UnshareMountNamespace(#[source] io::Error),
    #[error("stop the VMM's mounts from propagating to the host")]
    MakeMountsSlave(#[source] io::Error),
    #[error("resolve the shared directory {0:?}")]
    ResolveSharedDir(PathBuf, #[source] io::Error),
    #[error("open the shared directory {0:?}")]
    OpenSharedDir(PathBuf, #[source] io::Error),
    #[error("bind the shared directory {0:?} onto itself")]
    BindSharedDir(PathBuf, #[source] io::Error),
    #[error("start the passthrough file system on {0:?}")]
    CreatePassthrough(PathBuf, #[source] io::Error),
    #[error("the tag {0:?} must be 1 to 36 bytes without NUL")]
    InvalidTag(String),
    #[error("source {0:?} is not an absolute path")]
    RelativeSource(PathBuf),
    #[error("open the source {0:?}")]
    OpenSource(PathBuf, #[source] io::Error),
    #[error("source {0:?} is neither a directory nor a regular file")]
    SourceType(PathBuf),
    #[error("target {target:?}: {reason}")]
    InvalidTarget {
        target: String,
        reason: &'static str,
    },
    #[error("target {0:?} was already added")]
    AlreadyAdded(String),
    #[error("target {0:?} is already a mount point")]
    TargetIsMountPoint(String),
    #[error("target {0:?} exists and is not a {1}")]
    TargetType(String, &'static str),
    #[error("create the mount point {0:?}")]
    CreateMountPoint(String, #[source] io::Error),
    #[error("clone a mount of {0:?}")]
    CloneMount(PathBuf, #[source] io::Error),
    #[error("set nosuid,nodev on the mount of {0:?}")]
    SetMountAttributes(PathBuf, #[source] io::Error),
    #[error("mount onto {0:?}")]
    MoveMount(String, #[source] io::Error),
    #[error("{0:?} was not added with fs_add")]
    UnknownTarget(String),
    #[error("{0:?} has hot-added mounts below it; remove {1:?} first")]
    NestedTarget(String, String),
    #[error("unmount {0:?}")]
    Unmount(String, #[source] io::Error),
}

impl From<FsError> for io::Error {
    fn from(err: FsError) -> Self {
        io::Error::other(err)
    }
}

/// Detaches the calling thread's file-system context (cwd, root, umask)
/// from the rest of the process. fuse-backend-rs sets the umask to 0 when
/// the guest sends FUSE_INIT (so guest modes are taken as they are); on the
/// fs thread only, the rest of the VMM keeps its own.
pub fn isolate_thread_fs_context() -> io::Result<()> {
    // SAFETY: unshare(2) with CLONE_FS only copies this thread's fs_struct;
    // it touches no memory of ours.
    if unsafe { libc::unshare(libc::CLONE_FS) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

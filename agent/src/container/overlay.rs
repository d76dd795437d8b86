//! A guest-side writable layer over a rootfs (CreateContainer's
//! `rootfs_overlay`): overlayfs with the rootfs as its lower layer and the
//! upper and work directories on the guest's `/run` tmpfs, so a container's
//! writes never reach the host through the share. The merged tree is the
//! container's rootfs; RemoveContainer (or a failed create) unmounts it and
//! deletes the layer.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::error::{ContainerError, SpecError};

/// Where each container's layer lives: `<id>/{upper,work,merged}`.
pub const OVERLAY_ROOT: &str = "/run/vessel/overlay";

/// A mounted overlay, unmounted and deleted when dropped.
#[derive(Debug)]
pub struct Overlay {
    dir: PathBuf,
    merged: PathBuf,
}

impl Overlay {
    /// Mounts an overlay of `lower` for container `id` under `root`.
    pub fn mount(root: &Path, id: &str, lower: &Path) -> Result<Overlay, ContainerError> {
        let lower_text = lower.to_str().filter(|s| !s.contains([',', ':', '\\']));
        let Some(lower_text) = lower_text else {
            return Err(SpecError::Invalid(format!(
                "rootfs {lower:?} cannot be an overlay's lower layer (its path has ',', ':' or '\\\\')"
            ))
            .into());
        };
        let dir = root.join(id);
        let overlay = Overlay {
            merged: dir.join("merged"),
            dir,
        };
        let made = (|| {
            for sub in ["upper", "work", "merged"] {
                fs::create_dir_all(overlay.dir.join(sub))?;
            }
            let data = format!(
                "lowerdir={lower_text},upperdir={},workdir={}",
                overlay.dir.join("upper").display(),
                overlay.dir.join("work").display()
            );
            mount_overlay(&overlay.merged, &data)
        })();
        // On failure, dropping `overlay` deletes what was made.
        made.map(|()| overlay)
            .map_err(ContainerError::sys("mounting the rootfs overlay"))
    }

    /// The container's rootfs.
    pub fn merged(&self) -> &Path {
        &self.merged
    }
}

impl Drop for Overlay {
    /// Unmounts the overlay (lazily: a process may still hold it) and
    /// deletes its layer; failures are logged.
    fn drop(&mut self) {
        if let Err(e) = umount_detach(&self.merged) {
            if e.raw_os_error() != Some(libc::EINVAL) {
                tracing::warn!(dir = %self.merged.display(), error = %e, "unmounting a rootfs overlay");
            }
        }
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(dir = %self.dir.display(), error = %e, "deleting a rootfs overlay");
            }
        }
    }
}

fn cstring(s: &str) -> io::Result<std::ffi::CString> {
    std::ffi::CString::new(s).map_err(|_| io::ErrorKind::InvalidInput.into())
}

fn mount_overlay(target: &Path, data: &str) -> io::Result<()> {
    let target = cstring(&target.to_string_lossy())?;
    let data = cstring(data)?;
    // SAFETY: every pointer is a NUL-terminated string that outlives the call.
    let ret = unsafe {
        libc::mount(
            c"overlay".as_ptr(),
            target.as_ptr(),
            c"overlay".as_ptr(),
            0,
            data.as_ptr().cast(),
        )
    };
    if ret == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn umount_detach(target: &Path) -> io::Result<()> {
    let target = cstring(&target.to_string_lossy())?;
    // SAFETY: `target` is NUL-terminated.
    if unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lower_path_overlayfs_cannot_parse_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let err = Overlay::mount(root.path(), "c1", Path::new("/run/a,b")).unwrap_err();
        assert!(err.to_string().contains("overlay"), "{err}");
        assert!(!root.path().join("c1").exists(), "nothing was left");
    }

    #[test]
    fn an_overlay_mounts_and_goes_away_as_root() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: not root");
            return;
        }
        // This test thread gets a mount namespace of its own, so nothing it
        // mounts can outlive it on the host.
        // SAFETY: affects only this thread's view of the mounts.
        let private = unsafe {
            libc::unshare(libc::CLONE_NEWNS) == 0
                && libc::mount(
                    std::ptr::null(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ) == 0
        };
        if !private {
            return eprintln!("skipped: no private mount namespace");
        }
        let root = tempfile::tempdir().unwrap();
        let lower = tempfile::tempdir().unwrap();
        fs::write(lower.path().join("kept"), "lower").unwrap();
        let overlay = match Overlay::mount(root.path(), "c1", lower.path()) {
            Ok(o) => o,
            // A host without overlayfs (or inside a container that forbids it).
            Err(e) => return eprintln!("skipped: {e}"),
        };
        fs::write(overlay.merged().join("new"), "upper").unwrap();
        assert_eq!(
            fs::read_to_string(overlay.merged().join("kept")).unwrap(),
            "lower"
        );
        assert!(
            !lower.path().join("new").exists(),
            "writes stay in the upper layer"
        );
        drop(overlay);
        assert!(!root.path().join("c1").exists());
    }
}

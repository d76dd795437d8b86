//! Host mounts the shim makes, all under the sandbox's shared directory,
//! which the VMM serves to the guest over virtio-fs.
//!
//! The shared directory is bound onto itself and made a *shared* mount
//! before the VMM starts. The VMM's private mount namespace then holds a
//! slave of it, so a container rootfs or volume mounted here later (while the
//! VM runs) shows up in the guest, and an unmount here disappears there.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::domain::RootfsMount;

/// Why a host mount under the share failed.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
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

fn cstr(path: &Path) -> CString {
    // Paths the shim builds never hold NUL; a containerd path with one
    // fails the mount instead.
    CString::new(path.as_os_str().as_bytes()).unwrap_or_default()
}

/// `mount(2)` with no data.
fn mount(
    source: &Path,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
) -> Result<(), MountError> {
    let source = cstr(source);
    let target_c = cstr(target);
    let fstype = fstype.map(|t| CString::new(t).unwrap_or_default());
    // SAFETY: every pointer is a NUL-terminated string that outlives the call
    // (or null where mount(2) allows it).
    let ret = unsafe {
        libc::mount(
            source.as_ptr(),
            target_c.as_ptr(),
            fstype.as_ref().map_or(std::ptr::null(), |t| t.as_ptr()),
            flags,
            std::ptr::null(),
        )
    };
    if ret == -1 {
        return Err(MountError::MountPath {
            target: target.to_owned(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Detaches the mount at `target`; false if nothing was mounted there.
pub fn unmount(target: &Path) -> bool {
    let target = cstr(target);
    // SAFETY: a NUL-terminated path that outlives the call.
    unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) == 0 }
}

/// Binds directory `source` at `target` (which exists).
pub fn bind_dir(source: &Path, target: &Path) -> Result<(), MountError> {
    mount(source, target, None, libc::MS_BIND | libc::MS_REC)
}

fn create_dir(path: &Path) -> Result<(), MountError> {
    std::fs::create_dir_all(path).map_err(|source| MountError::CreateDir {
        path: path.to_owned(),
        source,
    })
}

/// Mounts containerd's rootfs mounts at `target`, or binds the bundle's own
/// `rootfs` when it gave none (the bundle was prepared by hand).
pub fn mount_rootfs(
    mounts: &[RootfsMount],
    bundle: &Path,
    target: &Path,
) -> Result<(), MountError> {
    create_dir(target)?;
    if mounts.is_empty() {
        let source = bundle.join("rootfs");
        return bind_dir(&source, target);
    }
    for m in mounts {
        let fstype = (!m.fstype.is_empty()).then_some(m.fstype.as_str());
        let source = (!m.source.is_empty()).then_some(m.source.as_str());
        containerd_shim::mount::mount_rootfs(fstype, source, &m.options, target).map_err(|e| {
            MountError::MountRootfs {
                target: target.to_owned(),
                source: e.into(),
            }
        })?;
    }
    Ok(())
}

/// The sandbox's shared directory on the host.
#[derive(Debug)]
pub struct SharedDir {
    path: PathBuf,
}

impl SharedDir {
    /// Creates `path` and makes it a shared mount of its own.
    pub fn create(path: &Path) -> Result<SharedDir, MountError> {
        create_dir(path)?;
        mount(path, path, None, libc::MS_BIND)?;
        let shared = SharedDir {
            path: path.to_owned(),
        };
        mount(Path::new("none"), path, None, libc::MS_SHARED)?;
        Ok(shared)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Binds host `source` (a file or directory) at `relative` under the
    /// share, read-only if asked.
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
        if is_dir {
            create_dir(&target)?;
        } else {
            if let Some(parent) = target.parent() {
                create_dir(parent)?;
            }
            std::fs::write(&target, b"").map_err(|source| MountError::CreateFile {
                path: target.clone(),
                source,
            })?;
        }
        mount(source, &target, None, libc::MS_BIND | libc::MS_REC)?;
        if readonly {
            let flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY;
            if let Err(e) = mount(Path::new("none"), &target, None, flags) {
                unmount(&target);
                return Err(e);
            }
        }
        Ok(target)
    }

    /// Unmounts everything under the share's `relative` directory (deepest
    /// first) and removes it.
    pub fn remove(&self, relative: &Path) {
        let dir = self.path.join(relative);
        for target in mounts_under(&dir).into_iter().rev() {
            if !unmount(&target) {
                tracing::warn!(target = %target.display(), error = %std::io::Error::last_os_error(), "cannot unmount");
            }
        }
        if let Err(error) = std::fs::remove_dir_all(&dir) {
            if error.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %dir.display(), %error, "cannot remove a container's shared directory");
            }
        }
    }
}

impl Drop for SharedDir {
    fn drop(&mut self) {
        for target in mounts_under(&self.path).into_iter().rev() {
            unmount(&target);
        }
        if let Err(error) = std::fs::remove_dir_all(&self.path) {
            tracing::warn!(dir = %self.path.display(), %error, "cannot remove the shared directory");
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

    #[test]
    fn a_bound_file_and_dir_show_through_and_go_away() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let share = SharedDir::create(&tmp.path().join("shared")).unwrap();
        let src = tmp.path().join("vol");
        std::fs::create_dir(&src).unwrap();
        std::fs::write(src.join("f"), b"hi").unwrap();
        let file = tmp.path().join("hosts");
        std::fs::write(&file, b"127.0.0.1 x\n").unwrap();

        let dir = share.bind(&src, Path::new("c1/volumes/0"), true).unwrap();
        assert_eq!(std::fs::read(dir.join("f")).unwrap(), b"hi");
        assert!(
            std::fs::write(dir.join("g"), b"no").is_err(),
            "read-only bind was writable"
        );
        let bound = share.bind(&file, Path::new("c1/volumes/1"), false).unwrap();
        assert_eq!(std::fs::read(&bound).unwrap(), b"127.0.0.1 x\n");

        share.remove(Path::new("c1"));
        assert!(!share.path().join("c1").exists());
        assert!(src.join("f").exists(), "the source was touched");
        let path = share.path().to_owned();
        drop(share);
        assert!(mounts_under(&path).is_empty());
        assert!(!path.exists());
    }
}

//! Hot-added bind mounts inside the shared directory (the API's `fs_add`,
//! `fs_remove` and `fs_list`).
//!
//! `fs_add` walks the target from the share's root one component at a time
//! with `openat(O_PATH | O_NOFOLLOW | O_DIRECTORY)`, creating each missing
//! directory (or, last, an empty file when the source is a file): a symlink
//! or `..` the guest planted is never followed, and every fd stays below the
//! share's root. The source is cloned with open_tree(2), made `nosuid,nodev`
//! (and read-only if asked) with mount_setattr(2) while still detached, and
//! moved onto the mount point's fd with move_mount(2): no path is resolved a
//! second time and the mount is never visible without its flags.
//!
//! `fs_remove` detaches that mount (`umount2(MNT_DETACH)` through the fd of
//! its root) and removes the mount point and the directories `fs_add`
//! created for it, only those, deepest first, and only while each is still
//! the inode it created (the guest may have moved things meanwhile).

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use tracing::{info, warn};

use super::SharedDir;
use crate::devices::virtio::fs::sys::{
    self, FileId, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY,
};
use crate::devices::virtio::fs::FsError;

/// The longest target accepted, in bytes.
pub const MAX_TARGET_LEN: usize = 1024;
/// The longest component of a target (NAME_MAX).
pub const MAX_COMPONENT_LEN: usize = 255;

/// Something `fs_add` created, to remove on `fs_remove`.
pub(super) struct Created {
    parent: OwnedFd,
    name: String,
    /// Its path from the share's root.
    rel: String,
    id: FileId,
}

/// One hot-added mount.
pub(super) struct Added {
    target: String,
    source: PathBuf,
    readonly: bool,
    /// `O_PATH` on the root of the mount itself.
    mount_root: OwnedFd,
    /// The mount point and the directories created for it, outermost first.
    created: Vec<Created>,
}

/// The source of an `fs_add`, opened.
struct Source<'a> {
    path: &'a Path,
    fd: &'a OwnedFd,
    id: FileId,
}

/// What `fs_list` shows of a hot-added mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddedMount {
    pub target: String,
    pub source: PathBuf,
    pub readonly: bool,
}

/// Checks a target and splits it into its components: relative, non-empty,
/// no empty, `.` or `..` component, no NUL, not too long.
pub fn check_target(target: &str) -> Result<Vec<&str>, FsError> {
    let bad = |reason| FsError::InvalidTarget {
        target: target.to_string(),
        reason,
    };
    if target.is_empty() {
        return Err(bad("must not be empty"));
    }
    if target.starts_with('/') {
        return Err(bad("must be relative to the shared directory"));
    }
    if target.len() > MAX_TARGET_LEN {
        return Err(bad("is too long"));
    }
    if target.contains('\0') {
        return Err(bad("must not contain NUL"));
    }
    let parts: Vec<&str> = target.split('/').collect();
    for part in &parts {
        match *part {
            "" => return Err(bad("has an empty component")),
            "." | ".." => return Err(bad("must not contain . or .. components")),
            p if p.len() > MAX_COMPONENT_LEN => return Err(bad("has a component over 255 bytes")),
            _ => {}
        }
    }
    Ok(parts)
}

/// Checks a source: an absolute host path.
pub fn check_source(source: &Path) -> Result<(), FsError> {
    if !source.is_absolute() {
        return Err(FsError::RelativeSource(source.to_path_buf()));
    }
    Ok(())
}

const DIR_FLAGS: libc::c_int = libc::O_PATH | libc::O_NOFOLLOW | libc::O_DIRECTORY;

/// Opens (creating if missing) the directory `name` in `dir`, never
/// following a symlink. Records what it created.
fn open_or_create_dir(
    dir: &OwnedFd,
    name: &str,
    rel: &str,
    target: &str,
    created: &mut Vec<Created>,
) -> Result<OwnedFd, FsError> {
    let mkdir_error = |e| FsError::CreateMountPoint(target.to_string(), e);
    match sys::openat(dir, name, DIR_FLAGS, 0) {
        Ok(fd) => return Ok(fd),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
        Err(e) => return Err(mkdir_error(e)),
    }
    let made = match sys::mkdirat(dir, name, 0o755) {
        Ok(()) => true,
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => false,
        Err(e) => return Err(mkdir_error(e)),
    };
    let fd = sys::openat(dir, name, DIR_FLAGS, 0).map_err(mkdir_error)?;
    if made {
        let id = sys::file_id(&fd, "").map_err(mkdir_error)?;
        let parent = dup(dir).map_err(mkdir_error)?;
        created.push(Created {
            parent,
            name: name.to_string(),
            rel: rel.to_string(),
            id,
        });
    }
    Ok(fd)
}

/// Opens (creating if missing) the regular file `name` in `dir` as a mount
/// point for a file, never following a symlink.
fn open_or_create_file(
    dir: &OwnedFd,
    name: &str,
    target: &str,
    created: &mut Vec<Created>,
) -> Result<OwnedFd, FsError> {
    let error = |e| FsError::CreateMountPoint(target.to_string(), e);
    let flags = libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_NOFOLLOW;
    match sys::openat(dir, name, flags, 0o644) {
        Ok(fd) => {
            let id = sys::file_id(&fd, "").map_err(error)?;
            let parent = dup(dir).map_err(error)?;
            created.push(Created {
                parent,
                name: name.to_string(),
                rel: target.to_string(),
                id,
            });
            Ok(fd)
        }
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
            let fd = sys::openat(dir, name, libc::O_PATH | libc::O_NOFOLLOW, 0).map_err(error)?;
            match sys::file_id(&fd, "").map_err(error)? {
                id if id.is_file() => Ok(fd),
                _ => Err(FsError::TargetType(target.to_string(), "regular file")),
            }
        }
        Err(e) => Err(error(e)),
    }
}

fn dup(fd: &OwnedFd) -> std::io::Result<OwnedFd> {
    fd.try_clone()
}

/// Removes what `fs_add` created, deepest first, each only while it is still
/// the inode created.
fn remove_created(created: &[Created], target: &str) {
    for item in created.iter().rev() {
        let still_ours = sys::file_id(&item.parent, &item.name)
            .map(|id| id.same_inode(&item.id))
            .unwrap_or(false);
        if !still_ours {
            warn!(target, name = %item.name, "fs: a created mount point was replaced; left in place");
            continue;
        }
        let flags = if item.id.is_dir() {
            libc::AT_REMOVEDIR
        } else {
            0
        };
        if let Err(error) = sys::unlinkat(&item.parent, &item.name, flags) {
            warn!(target, name = %item.name, %error, "fs: remove a created mount point");
        }
    }
}

impl SharedDir {
    /// Bind-mounts the host path `source` at `target` inside the share.
    pub fn add(&self, source: &Path, target: &str, readonly: bool) -> Result<(), FsError> {
        check_source(source)?;
        let parts = check_target(target)?;
        let mut adds = self.adds.lock().unwrap_or_else(|e| e.into_inner());
        if adds.iter().any(|a| a.target == target) {
            return Err(FsError::AlreadyAdded(target.to_string()));
        }
        let source_fd = sys::open_path(source, libc::O_PATH)
            .map_err(|e| FsError::OpenSource(source.to_path_buf(), e))?;
        let source_id = sys::file_id(&source_fd, "")
            .map_err(|e| FsError::OpenSource(source.to_path_buf(), e))?;
        if !source_id.is_dir() && !source_id.is_file() {
            return Err(FsError::SourceType(source.to_path_buf()));
        }

        let source = Source {
            path: source,
            fd: &source_fd,
            id: source_id,
        };
        let mut created = Vec::new();
        let result = self.mount_at(&parts, target, &source, readonly, &mut created);
        match result {
            Ok(mount_root) => {
                info!(source = %source.path.display(), target, readonly, "fs: hot-added a mount");
                adds.push(Added {
                    target: target.to_string(),
                    source: source.path.to_path_buf(),
                    readonly,
                    mount_root,
                    created,
                });
                Ok(())
            }
            Err(err) => {
                remove_created(&created, target);
                Err(err)
            }
        }
    }

    /// Walks to the mount point, creating what is missing, and mounts.
    /// Returns the fd of the new mount's root.
    fn mount_at(
        &self,
        parts: &[&str],
        target: &str,
        source: &Source<'_>,
        readonly: bool,
        created: &mut Vec<Created>,
    ) -> Result<OwnedFd, FsError> {
        let (last, dirs) = parts.split_last().ok_or_else(|| FsError::InvalidTarget {
            target: target.to_string(),
            reason: "must not be empty",
        })?;
        let mut dir = dup(self.root()).map_err(|e| FsError::CreateMountPoint(target.into(), e))?;
        for (i, name) in dirs.iter().enumerate() {
            let rel = parts[..=i].join("/");
            dir = open_or_create_dir(&dir, name, &rel, target, created)?;
        }
        let point = if source.id.is_dir() {
            open_or_create_dir(&dir, last, target, target, created).map_err(|err| match err {
                FsError::CreateMountPoint(t, e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
                    FsError::TargetType(t, "directory")
                }
                other => other,
            })?
        } else {
            open_or_create_file(&dir, last, target, created)?
        };
        let parent_id =
            sys::file_id(&dir, "").map_err(|e| FsError::CreateMountPoint(target.into(), e))?;
        let point_id =
            sys::file_id(&point, "").map_err(|e| FsError::CreateMountPoint(target.into(), e))?;
        if point_id.mnt_id != parent_id.mnt_id {
            return Err(FsError::TargetIsMountPoint(target.to_string()));
        }

        let path = || source.path.to_path_buf();
        let tree = sys::clone_tree(source.fd).map_err(|e| FsError::CloneMount(path(), e))?;
        let mut attrs = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
        if readonly {
            attrs |= MOUNT_ATTR_RDONLY;
        }
        sys::set_tree_attrs(&tree, attrs).map_err(|e| FsError::SetMountAttributes(path(), e))?;
        sys::move_tree(&tree, &point).map_err(|e| FsError::MoveMount(target.to_string(), e))?;
        Ok(tree)
    }

    /// Undoes an `fs_add`: detaches the mount and removes what it created.
    pub fn remove(&self, target: &str) -> Result<(), FsError> {
        let mut adds = self.adds.lock().unwrap_or_else(|e| e.into_inner());
        let index = adds
            .iter()
            .position(|a| a.target == target)
            .ok_or_else(|| FsError::UnknownTarget(target.to_string()))?;
        let prefix = format!("{target}/");
        if let Some(inner) = adds.iter().find(|a| a.target.starts_with(&prefix)) {
            return Err(FsError::NestedTarget(
                target.to_string(),
                inner.target.clone(),
            ));
        }
        sys::detach_mount(&adds[index].mount_root)
            .map_err(|e| FsError::Unmount(target.to_string(), e))?;
        let mut added = adds.remove(index);
        drop(added.mount_root);
        // A directory made for this mount that another one still lives
        // under passes to that one, to be removed with it.
        let mut mine = Vec::new();
        for item in added.created.drain(..) {
            let prefix = format!("{}/", item.rel);
            match adds.iter_mut().find(|a| a.target.starts_with(&prefix)) {
                Some(heir) => {
                    let at = heir
                        .created
                        .partition_point(|c| c.rel.len() < item.rel.len());
                    heir.created.insert(at, item);
                }
                None => mine.push(item),
            }
        }
        remove_created(&mine, target);
        info!(target, "fs: removed a hot-added mount");
        Ok(())
    }

    /// The hot-added mounts, in the order added.
    pub fn list(&self) -> Vec<AddedMount> {
        let adds = self.adds.lock().unwrap_or_else(|e| e.into_inner());
        adds.iter()
            .map(|a| AddedMount {
                target: a.target.clone(),
                source: a.source.clone(),
                readonly: a.readonly,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_checked() {
        assert_eq!(check_target("a/b/c").unwrap(), vec!["a", "b", "c"]);
        assert_eq!(check_target("data").unwrap(), vec!["data"]);
        assert_eq!(check_target("a.b/..c/...").unwrap().len(), 3);
        for (bad, why) in [
            ("", "must not be empty"),
            ("/etc", "must be relative to the shared directory"),
            ("../x", "must not contain . or .. components"),
            ("a/../../x", "must not contain . or .. components"),
            ("a/./b", "must not contain . or .. components"),
            (".", "must not contain . or .. components"),
            ("a//b", "has an empty component"),
            ("a/", "has an empty component"),
            ("a\0b", "must not contain NUL"),
        ] {
            let err = check_target(bad).unwrap_err().to_string();
            assert_eq!(err, format!("target {bad:?}: {why}"));
        }
        let long = "x".repeat(256);
        assert!(check_target(&long).is_err());
        let longer = "a/".repeat(600);
        assert!(check_target(&longer).is_err());
    }

    #[test]
    fn sources_must_be_absolute() {
        check_source(Path::new("/srv/data")).unwrap();
        assert_eq!(
            check_source(Path::new("srv/data")).unwrap_err().to_string(),
            "source \"srv/data\" is not an absolute path"
        );
    }
}

//! Taking back what the shim put under a directory the guest can write to:
//! unmount its mounts through fds resolved beneath the directory (no
//! symlink followed), then remove the tree without ever crossing a mount
//! point or following a symlink, so a mount that stayed (a failed unmount,
//! or one the guest moved by renaming its parent) keeps its data and is
//! named in a warning.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Dir, FileType};
use rustix::io::Errno;

use super::beneath;

/// How deep a removal descends. A guest can make deeper trees; what lies
/// below is left (and named) until the sandbox's own directory goes.
const MAX_DEPTH: usize = 256;

/// Unmounts every mount at or below `root_path/relative` (deepest first),
/// each resolved from `root` (the fd of `root_path`) without following a
/// link; `root_path` itself is left to the caller. Returns the mount
/// points it could not unmount.
pub fn unmount_under(root: BorrowedFd<'_>, root_path: &Path, relative: &Path) -> Vec<PathBuf> {
    let mut stuck = Vec::new();
    for target in super::mounts_under(&root_path.join(relative))
        .into_iter()
        .rev()
    {
        let Ok(rel) = target.strip_prefix(root_path) else {
            continue;
        };
        if rel.as_os_str().is_empty() {
            continue;
        }
        let result = beneath::open_mount_point(root, rel).and_then(|fd| {
            // The fd's /proc path resolves to that very mount (not by
            // name), so UMOUNT_NOFOLLOW would only refuse the magic link.
            rustix::mount::unmount(beneath::proc_path(&fd), rustix::mount::UnmountFlags::DETACH)
                .map_err(io::Error::from)
        });
        if let Err(error) = result {
            tracing::warn!(target = %target.display(), %error, "cannot unmount; its data is left in place");
            stuck.push(target);
        }
    }
    stuck
}

/// Removes `relative` under `root` (its contents only when `relative` is
/// empty), never following a symlink, never crossing into a mount. Returns
/// what it had to leave: mount points, and entries it could not remove.
pub fn remove_tree(root: BorrowedFd<'_>, root_path: &Path, relative: &Path) -> Vec<PathBuf> {
    let mut left = Vec::new();
    let parent_rel = relative.parent().unwrap_or(Path::new(""));
    match (relative.file_name(), beneath::open_dir(root, parent_rel)) {
        (_, Err(error)) if error.raw_os_error() == Some(libc::ENOENT) => {}
        (_, Err(error)) => {
            tracing::warn!(dir = %root_path.join(parent_rel).display(), %error, "cannot open to remove");
            left.push(root_path.join(parent_rel));
        }
        (Some(name), Ok(parent)) => {
            remove_entry(
                parent.as_fd(),
                name,
                &root_path.join(relative),
                0,
                &mut left,
            );
        }
        (None, Ok(_)) => match beneath::open_child_dir(root, OsStr::new(".")) {
            Ok(dir) => remove_contents(dir, root_path, 0, &mut left),
            Err(error) => {
                tracing::warn!(dir = %root_path.display(), %error, "cannot list to remove");
                left.push(root_path.to_owned());
            }
        },
    }
    left
}

fn remove_entry(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    path: &Path,
    depth: usize,
    left: &mut Vec<PathBuf>,
) {
    let stat = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) => stat,
        Err(Errno::NOENT) => return,
        Err(error) => return keep(left, path, error, "cannot stat"),
    };
    if FileType::from_raw_mode(stat.st_mode) != FileType::Directory {
        match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => {}
            // A file a mount sits on.
            Err(error) => keep(left, path, error, "cannot remove"),
        }
        return;
    }
    if depth >= MAX_DEPTH {
        return keep(left, path, Errno::NAMETOOLONG, "too deep to remove now");
    }
    match beneath::open_child_dir(dir, name) {
        Ok(child) => remove_contents(child, path, depth + 1, left),
        Err(error) if error.raw_os_error() == Some(libc::ENOENT) => return,
        Err(error) => {
            // EXDEV: a mount point; ELOOP: swapped for a symlink meanwhile.
            tracing::warn!(path = %path.display(), %error, "left in place: a mount point or not a plain directory");
            left.push(path.to_owned());
            return;
        }
    }
    match rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR) {
        Ok(()) | Err(Errno::NOENT) => {}
        Err(error) => keep(left, path, error, "cannot remove the directory"),
    }
}

fn remove_contents(dir: std::os::fd::OwnedFd, path: &Path, depth: usize, left: &mut Vec<PathBuf>) {
    let fd = match rustix::io::dup(&dir) {
        Ok(fd) => fd,
        Err(error) => return keep(left, path, error, "cannot list"),
    };
    let entries = match Dir::new(fd) {
        Ok(entries) => entries,
        Err(error) => return keep(left, path, error, "cannot list"),
    };
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(error) => return keep(left, path, error, "cannot list"),
        };
        let name = OsStr::from_bytes(entry.file_name().to_bytes());
        if name == "." || name == ".." {
            continue;
        }
        remove_entry(dir.as_fd(), name, &path.join(name), depth, left);
    }
}

fn keep(left: &mut Vec<PathBuf>, path: &Path, error: impl Into<io::Error>, what: &str) {
    let error = error.into();
    tracing::warn!(path = %path.display(), %error, "{what}; left in place");
    left.push(path.to_owned());
}

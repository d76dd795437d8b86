//! Paths under the share, resolved from the share's root fd as the guest
//! cannot redirect them: `openat2` with `RESOLVE_BENEATH` (no `..` or
//! absolute escape), `RESOLVE_NO_SYMLINKS` and `RESOLVE_NO_MAGICLINKS` (a
//! symlink the guest planted anywhere on the way fails with `ELOOP`), and,
//! where a path must stay on the share's own filesystem, `RESOLVE_NO_XDEV`.
//!
//! Directories and files are made one component at a time (`mkdirat`,
//! `O_CREAT | O_EXCL`), each reopened through the same rules, so what the
//! caller gets is an fd of the very inode it made or found; mounts then go
//! onto that fd, never onto a path the guest could swap meanwhile.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{openat2, FileType, Mode, OFlags, ResolveFlags};

/// Resolution that never leaves the root and follows no link of any kind.
const BENEATH: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS);
/// ... and never crosses into another mount.
const BENEATH_SAME_MOUNT: ResolveFlags = BENEATH.union(ResolveFlags::NO_XDEV);

/// Mode of the directories and files the shim makes in the share.
const DIR_MODE: u32 = 0o755;
const FILE_MODE: u32 = 0o644;

/// The plain names of `relative`; anything else (`..`, `/`, `.`) is refused.
fn names(relative: &Path) -> io::Result<Vec<&std::ffi::OsStr>> {
    relative
        .components()
        .map(|c| match c {
            Component::Normal(name) => Ok(name),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a plain relative path", relative.display()),
            )),
        })
        .collect()
}

/// `relative` itself, or `.` for the root.
fn or_dot(relative: &Path) -> &Path {
    if relative.as_os_str().is_empty() {
        Path::new(".")
    } else {
        relative
    }
}

/// An `O_PATH` fd of the directory `relative` under `root`, on the root's
/// own mount.
pub fn open_dir(root: BorrowedFd<'_>, relative: &Path) -> io::Result<OwnedFd> {
    names(relative)?;
    let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    Ok(openat2(
        root,
        or_dot(relative),
        flags,
        Mode::empty(),
        BENEATH_SAME_MOUNT,
    )?)
}

/// A readable fd of the directory `name` in `dir`, for listing it; `EXDEV`
/// if a mount sits on it, `ELOOP` if it is a symlink.
pub fn open_child_dir(dir: BorrowedFd<'_>, name: &std::ffi::OsStr) -> io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    Ok(openat2(
        dir,
        name,
        flags,
        Mode::empty(),
        BENEATH_SAME_MOUNT,
    )?)
}

/// An `O_PATH` fd of whatever `relative` names under `root`, crossing into
/// mounts (the shim's own, on its way to a mount point to unmount) but
/// following no link.
pub fn open_mount_point(root: BorrowedFd<'_>, relative: &Path) -> io::Result<OwnedFd> {
    names(relative)?;
    let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    Ok(openat2(
        root,
        or_dot(relative),
        flags,
        Mode::empty(),
        BENEATH,
    )?)
}

/// Makes the directories of `relative` under `root` that are missing and
/// returns an `O_PATH` fd of the last. A component that exists as anything
/// but a directory of the root's mount (a planted symlink, a file, a mount)
/// fails it.
pub fn make_dirs(root: BorrowedFd<'_>, relative: &Path) -> io::Result<OwnedFd> {
    let mut dir = open_dir(root, Path::new(""))?;
    for name in names(relative)? {
        match rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(DIR_MODE)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
        dir = open_dir(dir.as_fd(), Path::new(name))?;
    }
    Ok(dir)
}

/// Makes the empty regular file `relative` under `root` (its directories
/// too) to bind a file onto, or finds the regular file there, and returns
/// an `O_PATH` fd of it. Never opens a symlink, FIFO or device for writing.
pub fn make_file(root: BorrowedFd<'_>, relative: &Path) -> io::Result<OwnedFd> {
    let all = names(relative)?;
    let Some((name, parents)) = all.split_last() else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "an empty path names no file",
        ));
    };
    let parent = make_dirs(root, &parents.iter().collect::<PathBuf>())?;
    let create =
        OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match openat2(
        &parent,
        *name,
        create,
        Mode::from_raw_mode(FILE_MODE),
        BENEATH_SAME_MOUNT,
    ) {
        Ok(_) | Err(rustix::io::Errno::EXIST) => {}
        Err(e) => return Err(e.into()),
    }
    let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let file = openat2(&parent, *name, flags, Mode::empty(), BENEATH_SAME_MOUNT)?;
    if FileType::from_raw_mode(rustix::fs::fstat(&file)?.st_mode) != FileType::RegularFile {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a regular file", relative.display()),
        ));
    }
    Ok(file)
}

/// The `/proc/self/fd` path of `fd`, for the calls that take only a path
/// (mount(2), umount2(2)): the kernel resolves it to the fd's own inode
/// and mount, not by name.
pub fn proc_path(fd: &impl AsRawFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    fn root(dir: &Path) -> OwnedFd {
        rustix::fs::open(dir, OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap()
    }

    #[test]
    fn directories_are_made_and_reopened_beneath_the_root() {
        let tmp = tempfile::tempdir().unwrap();
        let r = root(tmp.path());
        let fd = make_dirs(r.as_fd(), Path::new("c1/volumes/0")).unwrap();
        assert_eq!(
            fs::read_link(proc_path(&fd)).unwrap(),
            tmp.path().join("c1/volumes/0")
        );
        // Again: found, not an error.
        make_dirs(r.as_fd(), Path::new("c1/volumes/0")).unwrap();
    }

    #[test]
    fn a_planted_symlink_anywhere_on_the_way_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let r = root(tmp.path());
        fs::create_dir(tmp.path().join("c1")).unwrap();
        symlink(outside.path(), tmp.path().join("c1/volumes")).unwrap();
        for path in ["c1/volumes/0", "c1/volumes"] {
            let err = make_dirs(r.as_fd(), Path::new(path)).unwrap_err();
            // ELOOP, or ENOTDIR where O_DIRECTORY meets the link first.
            assert!(
                matches!(err.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)),
                "{path}: {err}"
            );
        }
        symlink("/etc/passwd", tmp.path().join("c1/hosts")).unwrap();
        // Found as the link itself (O_PATH | O_NOFOLLOW), which is no
        // regular file.
        let err = make_file(r.as_fd(), Path::new("c1/hosts")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists, "{err}");
        assert!(fs::read_dir(outside.path()).unwrap().next().is_none());
        let err = open_mount_point(r.as_fd(), Path::new("c1/volumes/x")).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ELOOP), "{err}");
    }

    #[test]
    fn escapes_and_odd_components_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let r = root(tmp.path());
        for path in ["../x", "/etc", "a/../b", "./a"] {
            assert!(make_dirs(r.as_fd(), Path::new(path)).is_err(), "{path}");
        }
        assert!(make_file(r.as_fd(), Path::new("")).is_err());
    }

    #[test]
    fn a_file_target_must_be_a_regular_file() {
        let tmp = tempfile::tempdir().unwrap();
        let r = root(tmp.path());
        let fd = make_file(r.as_fd(), Path::new("c1/volumes/1")).unwrap();
        assert!(fs::metadata(proc_path(&fd)).unwrap().is_file());
        make_file(r.as_fd(), Path::new("c1/volumes/1")).unwrap();
        fs::create_dir(tmp.path().join("c1/volumes/2")).unwrap();
        assert!(make_file(r.as_fd(), Path::new("c1/volumes/2")).is_err());
        let fifo = tmp.path().join("c1/volumes/3");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        assert!(make_file(r.as_fd(), Path::new("c1/volumes/3")).is_err());
    }
}

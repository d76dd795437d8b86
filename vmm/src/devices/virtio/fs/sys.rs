//! Thin safe wrappers over the mount and `*at` system calls the shared
//! directory and its hot mounts use. Every path argument is a single name or
//! empty: callers resolve paths component by component from a directory fd.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

// <linux/mount.h>, defined here so they do not depend on the libc version.
const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x04;
const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;
pub const MOUNT_ATTR_RDONLY: u64 = 0x01;
pub const MOUNT_ATTR_NOSUID: u64 = 0x02;
pub const MOUNT_ATTR_NODEV: u64 = 0x04;

/// `struct mount_attr` of mount_setattr(2).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

const EMPTY: &CStr = c"";

/// Turns a file-descriptor return value into an owned fd.
fn owned(fd: libc::c_long) -> io::Result<OwnedFd> {
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = RawFd::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: the kernel just returned this fd to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn check(ret: libc::c_long) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `open(path, flags | O_CLOEXEC)` of a host path given by the operator.
pub fn open_path(path: &Path, flags: libc::c_int) -> io::Result<OwnedFd> {
    let path = cstring(path.as_os_str().as_bytes())?;
    // SAFETY: path is a valid NUL-terminated string; the result is checked.
    let fd = unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC) };
    owned(fd.into())
}

/// `openat(dir, name, flags | O_CLOEXEC, mode)` of one path component.
pub fn openat(dir: &OwnedFd, name: &str, flags: libc::c_int, mode: u32) -> io::Result<OwnedFd> {
    let name = cstring(name.as_bytes())?;
    // SAFETY: dir is an open fd and name a valid NUL-terminated string; the
    // result is checked.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_CLOEXEC,
            mode,
        )
    };
    owned(fd.into())
}

/// `mkdirat(dir, name, mode)`.
pub fn mkdirat(dir: &OwnedFd, name: &str, mode: u32) -> io::Result<()> {
    let name = cstring(name.as_bytes())?;
    // SAFETY: dir is an open fd and name a valid NUL-terminated string.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) }.into())
}

/// `unlinkat(dir, name, flags)`.
pub fn unlinkat(dir: &OwnedFd, name: &str, flags: libc::c_int) -> io::Result<()> {
    let name = cstring(name.as_bytes())?;
    // SAFETY: dir is an open fd and name a valid NUL-terminated string.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) }.into())
}

/// What identifies a file: type, device, inode and mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    pub mode: u32,
    pub dev: u64,
    pub ino: u64,
    pub mnt_id: u64,
}

impl FileId {
    pub fn is_dir(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFDIR
    }

    pub fn is_file(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFREG
    }

    /// Same file (mount aside).
    pub fn same_inode(&self, other: &Self) -> bool {
        self.dev == other.dev && self.ino == other.ino
    }
}

/// statx(2) of `name` in `dir` (or of `dir` itself when `name` is empty),
/// never following a symlink.
pub fn file_id(dir: &OwnedFd, name: &str) -> io::Result<FileId> {
    let name = cstring(name.as_bytes())?;
    let flags = libc::AT_SYMLINK_NOFOLLOW | libc::AT_EMPTY_PATH;
    let mask = libc::STATX_TYPE | libc::STATX_INO | libc::STATX_MNT_ID;
    // SAFETY: statx is plain old data; all-zero is a valid value.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: dir is an open fd, name a valid string and stx a writable
    // statx the kernel fills; the result is checked.
    let ret = unsafe { libc::statx(dir.as_raw_fd(), name.as_ptr(), flags, mask, &mut stx) };
    check(ret.into())?;
    Ok(FileId {
        mode: u32::from(stx.stx_mode),
        dev: libc::makedev(stx.stx_dev_major, stx.stx_dev_minor),
        ino: stx.stx_ino,
        mnt_id: stx.stx_mnt_id,
    })
}

/// open_tree(2) with `OPEN_TREE_CLONE | AT_RECURSIVE`: a detached copy of
/// the mount tree at `fd`, not visible anywhere until moved.
pub fn clone_tree(fd: &OwnedFd) -> io::Result<OwnedFd> {
    let flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint;
    let flags = flags | (libc::AT_EMPTY_PATH | libc::AT_RECURSIVE) as libc::c_uint;
    // SAFETY: fd is an open fd and the path the empty string; the result is
    // checked and owned.
    owned(unsafe { libc::syscall(libc::SYS_open_tree, fd.as_raw_fd(), EMPTY.as_ptr(), flags) })
}

/// mount_setattr(2) on the whole tree at `fd`: sets `attrs` (MOUNT_ATTR_*)
/// and makes every mount a slave, so nothing mounted in it reaches the host.
pub fn set_tree_attrs(fd: &OwnedFd, attrs: u64) -> io::Result<()> {
    let attr = MountAttr {
        attr_set: attrs,
        attr_clr: 0,
        propagation: libc::MS_SLAVE,
        userns_fd: 0,
    };
    let flags = libc::AT_EMPTY_PATH | libc::AT_RECURSIVE;
    // SAFETY: fd is an open fd, attr a valid mount_attr of the size passed;
    // the result is checked.
    check(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            EMPTY.as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    })
}

/// move_mount(2) of the detached tree `tree` onto the file or directory
/// `target` refers to; no path is resolved.
pub fn move_tree(tree: &OwnedFd, target: &OwnedFd) -> io::Result<()> {
    let flags = MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH;
    // SAFETY: both fds are open and both paths the empty string; the result
    // is checked.
    check(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            EMPTY.as_ptr(),
            target.as_raw_fd(),
            EMPTY.as_ptr(),
            flags,
        )
    })
}

/// umount2(MNT_DETACH) of the mount whose root `root` refers to, through
/// `/proc/self/fd` (no path inside the share is resolved).
pub fn detach_mount(root: &OwnedFd) -> io::Result<()> {
    let path = cstring(format!("/proc/self/fd/{}", root.as_raw_fd()).as_bytes())?;
    // SAFETY: path is a valid NUL-terminated string; the result is checked.
    check(unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) }.into())
}

/// `mount(NULL, "/", NULL, MS_SLAVE | MS_REC, NULL)`.
pub fn make_root_slave() -> io::Result<()> {
    let flags = libc::MS_SLAVE | libc::MS_REC;
    // SAFETY: constant strings and null pointers mount(2) accepts for a
    // propagation change; the result is checked.
    check(
        unsafe {
            libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                flags,
                std::ptr::null(),
            )
        }
        .into(),
    )
}

/// `unshare(CLONE_NEWNS)`.
pub fn unshare_mount_ns() -> io::Result<()> {
    // SAFETY: unshare(2) touches no memory of ours; the result is checked.
    check(unsafe { libc::unshare(libc::CLONE_NEWNS) }.into())
}

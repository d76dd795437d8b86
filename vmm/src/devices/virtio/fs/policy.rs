//! What the VMM refuses before a FUSE request reaches fuse-backend-rs.
//!
//! fuse-backend-rs already keeps the guest inside the share (see the module
//! docs of [`super`]); these checks close what it leaves open or does not
//! bound:
//!
//! - **Unknown opcodes** (`ENOSYS`): fuse-backend-rs logs every request at
//!   trace level through `Opcode::from`, a transmute that is undefined for
//!   the holes in the opcode range (0, 7, 19); we never pass those on.
//! - **Device nodes** (`EPERM`): MKNOD of a character or block device, and
//!   RENAME2 with `RENAME_WHITEOUT` (which makes a 0:0 character device).
//!   The share is `nodev` as well, so even a device node the host put there
//!   never opens as one.
//! - **`O_PATH` opens** (`EINVAL`): CREATE passes the guest's flags to
//!   `openat(..., flags | O_CREAT | O_EXCL)`; with `O_PATH` the kernel drops
//!   `O_CREAT | O_EXCL` and *follows* a symlink at the name, which would give
//!   the guest a handle on a file outside the share. OPEN and OPENDIR get the
//!   same rule.
//! - **Special files** (OPEN: `ELOOP` for a symlink, `EACCES` for a FIFO,
//!   socket or device; OPENDIR: `ENOTDIR`): only regular files and
//!   directories are ever opened host-side, so a crafted OPEN of a FIFO can
//!   never block the fs thread waiting for a writer. We check the inode's
//!   type (an `fstat` of its `O_PATH` fd) instead of adding `O_NONBLOCK`,
//!   which would leak into the regular files' open flags. fuse-backend-rs
//!   0.14 refuses these too (`EBADF`, its `is_safe_inode`); we do not rely
//!   on it.
//! - **Oversized buffers** (`EINVAL`): READDIR sizes over 1 MiB and
//!   GETXATTR / LISTXATTR sizes over 64 KiB, which fuse-backend-rs would
//!   allocate before looking (a guest asking for 4 GiB would abort the VMM).
//!   The Linux client never asks for more.
//! - **DAX** (`ENOSYS`): SETUPMAPPING / REMOVEMAPPING; there is no DAX
//!   window.
//! - **Guest root is not host root** (`EPERM`): a share holds host volumes,
//!   so what the guest makes there must not grant privileges on the host.
//!   CREATE, MKNOD and SETATTR of a mode with the setuid bit, or with the
//!   setgid bit on anything but a directory (where it only passes the
//!   group on), and MKDIR with the setuid bit, are refused, as is SETXATTR
//!   of `security.capability` (file capabilities) or of a `trusted.*` name
//!   (the host's own). Writes and truncations clear the bits of a file the
//!   host made setuid: the VMM runs without `CAP_FSETID` (`privileges.rs`), so
//!   the host kernel kills them as it does for any unprivileged writer,
//!   whatever the guest's `FUSE_WRITE_KILL_PRIV` says.

use std::io::Read;

use fuse_backend_rs::abi::fuse_abi::{
    CreateIn, GetxattrIn, InHeader, MkdirIn, MknodIn, Opcode, OpenIn, ReadIn, Rename2In, SetattrIn,
    SetattrValid, SetxattrIn,
};
use fuse_backend_rs::api::filesystem::{Context, FileSystem};
use fuse_backend_rs::passthrough::PassthroughFs;
use fuse_backend_rs::transport::Reader;
use vm_memory::bitmap::BitmapSlice;

/// The largest READDIR buffer accepted (fuse-backend-rs's MAX_BUFFER_SIZE).
pub const MAX_READDIR_SIZE: u32 = 1 << 20;
/// The largest xattr buffer accepted (XATTR_SIZE_MAX and XATTR_LIST_MAX).
pub const MAX_XATTR_SIZE: u32 = 64 * 1024;

/// The policy's decision on one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Hand it to fuse-backend-rs.
    Allow,
    /// Answer it with this errno.
    Refuse(i32),
}

/// The opcodes fuse-backend-rs has a handler for, less DAX.
fn known(opcode: u32) -> Option<Opcode> {
    use Opcode::*;
    const ALL: &[Opcode] = &[
        Lookup,
        Forget,
        Getattr,
        Setattr,
        Readlink,
        Symlink,
        Mknod,
        Mkdir,
        Unlink,
        Rmdir,
        Rename,
        Link,
        Open,
        Read,
        Write,
        Statfs,
        Release,
        Fsync,
        Setxattr,
        Getxattr,
        Listxattr,
        Removexattr,
        Flush,
        Init,
        Opendir,
        Readdir,
        Releasedir,
        Fsyncdir,
        Getlk,
        Setlk,
        Setlkw,
        Access,
        Create,
        Interrupt,
        Bmap,
        Destroy,
        Ioctl,
        Poll,
        NotifyReply,
        BatchForget,
        Fallocate,
        Readdirplus,
        Rename2,
        Lseek,
    ];
    ALL.iter().copied().find(|op| *op as u32 == opcode)
}

/// Decides on the request whose header is `header`; `body` reads what
/// follows the header (a copy, the request itself is not consumed).
pub fn check<S: BitmapSlice>(
    header: &InHeader,
    body: &mut Reader<'_, S>,
    fs: &PassthroughFs,
) -> Verdict {
    let Some(opcode) = known(header.opcode) else {
        return Verdict::Refuse(libc::ENOSYS);
    };
    let malformed = Verdict::Refuse(libc::EINVAL);
    match opcode {
        Opcode::Mknod => match body.read_obj::<MknodIn>() {
            Ok(args) if is_device(args.mode) || grants_privilege(args.mode, false) => {
                Verdict::Refuse(libc::EPERM)
            }
            Ok(_) => Verdict::Allow,
            Err(_) => malformed,
        },
        Opcode::Mkdir => match body.read_obj::<MkdirIn>() {
            Ok(args) if grants_privilege(args.mode, true) => Verdict::Refuse(libc::EPERM),
            Ok(_) => Verdict::Allow,
            Err(_) => malformed,
        },
        Opcode::Setattr => match body.read_obj::<SetattrIn>() {
            Ok(args) if args.valid & SetattrValid::MODE.bits() != 0 => {
                check_mode_change(fs, header.nodeid, args.mode)
            }
            Ok(_) => Verdict::Allow,
            Err(_) => malformed,
        },
        Opcode::Setxattr => match body.read_obj::<SetxattrIn>() {
            Ok(_) => check_xattr_name(body),
            Err(_) => malformed,
        },
        Opcode::Rename2 => match body.read_obj::<Rename2In>() {
            Ok(args) if args.flags & libc::RENAME_WHITEOUT != 0 => Verdict::Refuse(libc::EPERM),
            Ok(_) => Verdict::Allow,
            Err(_) => malformed,
        },
        Opcode::Create => match body.read_obj::<CreateIn>() {
            Ok(args) if is_o_path(args.flags) => malformed,
            Ok(args) if grants_privilege(args.mode, false) => Verdict::Refuse(libc::EPERM),
            Ok(_) => Verdict::Allow,
            Err(_) => malformed,
        },
        Opcode::Open | Opcode::Opendir => match body.read_obj::<OpenIn>() {
            Ok(args) if is_o_path(args.flags) => malformed,
            Ok(_) => check_open_type(fs, header.nodeid, opcode),
            Err(_) => malformed,
        },
        Opcode::Readdir | Opcode::Readdirplus => match body.read_obj::<ReadIn>() {
            Ok(args) if args.size > MAX_READDIR_SIZE => malformed,
            Ok(_) => Verdict::Allow,
            Err(_) => malformed,
        },
        Opcode::Getxattr | Opcode::Listxattr => match body.read_obj::<GetxattrIn>() {
            Ok(args) if args.size > MAX_XATTR_SIZE => malformed,
            Ok(_) => Verdict::Allow,
            Err(_) => malformed,
        },
        _ => Verdict::Allow,
    }
}

fn is_device(mode: u32) -> bool {
    matches!(mode & libc::S_IFMT, libc::S_IFCHR | libc::S_IFBLK)
}

/// Whether `mode` would make a file setuid, or setgid (group-executable),
/// on the host; for a directory only setuid counts.
fn grants_privilege(mode: u32, directory: bool) -> bool {
    let setuid = mode & libc::S_ISUID != 0;
    let setgid = mode & libc::S_ISGID != 0 && mode & libc::S_IXGRP != 0;
    setuid || (setgid && !directory)
}

/// SETATTR of a mode: refused if it grants a privilege on the node's type.
fn check_mode_change(fs: &PassthroughFs, nodeid: u64, mode: u32) -> Verdict {
    if mode & (libc::S_ISUID | libc::S_ISGID) == 0 {
        return Verdict::Allow;
    }
    let directory = match fs.getattr(&Context::default(), nodeid, None) {
        Ok((st, _)) => st.st_mode & libc::S_IFMT == libc::S_IFDIR,
        Err(err) => return Verdict::Refuse(err.raw_os_error().unwrap_or(libc::EBADF)),
    };
    if grants_privilege(mode, directory) {
        Verdict::Refuse(libc::EPERM)
    } else {
        Verdict::Allow
    }
}

/// The longest xattr name (XATTR_NAME_MAX) and its NUL.
const MAX_XATTR_NAME: usize = 256;

/// SETXATTR: refused for file capabilities and the host's `trusted.*`.
fn check_xattr_name<S: BitmapSlice>(body: &mut Reader<'_, S>) -> Verdict {
    let mut buf = [0u8; MAX_XATTR_NAME];
    let mut len = 0;
    // The name and value follow one another; the name ends at a NUL.
    while len < buf.len() {
        match body.read(&mut buf[len..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => len += n,
        }
    }
    let Some(end) = buf[..len].iter().position(|&b| b == 0) else {
        return Verdict::Refuse(libc::EINVAL);
    };
    let name = &buf[..end];
    if name == b"security.capability" || name.starts_with(b"trusted.") {
        Verdict::Refuse(libc::EPERM)
    } else {
        Verdict::Allow
    }
}

fn is_o_path(flags: u32) -> bool {
    flags & libc::O_PATH as u32 != 0
}

/// OPEN only of regular files (and directories, as fuse-backend-rs allows),
/// OPENDIR only of directories.
fn check_open_type(fs: &PassthroughFs, nodeid: u64, opcode: Opcode) -> Verdict {
    let mode = match fs.getattr(&Context::default(), nodeid, None) {
        Ok((st, _)) => st.st_mode & libc::S_IFMT,
        Err(err) => return Verdict::Refuse(err.raw_os_error().unwrap_or(libc::EBADF)),
    };
    match (opcode, mode) {
        (Opcode::Opendir, libc::S_IFDIR) => Verdict::Allow,
        (Opcode::Opendir, _) => Verdict::Refuse(libc::ENOTDIR),
        (_, libc::S_IFREG | libc::S_IFDIR) => Verdict::Allow,
        (_, libc::S_IFLNK) => Verdict::Refuse(libc::ELOOP),
        _ => Verdict::Refuse(libc::EACCES),
    }
}

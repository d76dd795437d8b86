//! A malicious guest kernel against the shared directory: FUSE requests
//! built by hand, served by a real passthrough file system over a temp dir
//! whose sibling `outside/secret` must stay out of reach. Every case checks
//! that nothing outside the share was read, created or changed.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fuse_backend_rs::abi::fuse_abi::{EntryOut, Opcode, ReadIn};
use vm_memory::ByteValued;

use super::share::SharedDir;
use super::test_client::{
    contains_secret, in_private_mount_ns, populate, FuseClient, ROOT, SECRET,
};

/// A share with the test files of `populate` served to a FUSE client that
/// has done FUSE_INIT; `outside/secret` sits beside it.
pub(super) struct Fixture {
    _dir: tempfile::TempDir,
    pub(super) base: PathBuf,
    pub(super) share: PathBuf,
    _shared: SharedDir,
    pub(super) client: FuseClient,
}

pub(super) fn fixture() -> Fixture {
    super::isolate_thread_fs_context().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().to_path_buf();
    populate(&base).unwrap();
    let share = base.join("share");
    let shared = SharedDir::unmounted(&share).unwrap();
    let client = FuseClient::initialised(&shared.fs_root());
    Fixture {
        _dir: dir,
        base,
        share,
        _shared: shared,
        client,
    }
}

impl Fixture {
    /// Nothing but the secret, unchanged, outside the share; the secret in
    /// no guest memory the test used.
    fn assert_outside_untouched(&self) {
        let outside = self.base.join("outside");
        let names: Vec<_> = std::fs::read_dir(&outside)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            vec!["secret"],
            "something appeared outside the share"
        );
        assert_eq!(std::fs::read(outside.join("secret")).unwrap(), SECRET);
        let mut base_names: Vec<_> = std::fs::read_dir(&self.base)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        base_names.sort();
        assert_eq!(base_names, vec!["outside", "share"]);
        let mem = self.client.q.hiprio.read(0, 16 << 20);
        assert!(!contains_secret(&mem), "the secret reached guest memory");
    }
}

fn mode(entry: &EntryOut) -> u32 {
    entry.attr.mode & libc::S_IFMT
}

#[test]
fn dotdot_at_the_root_is_the_root() {
    let mut f = fixture();
    let up = f.client.lookup(ROOT, b"..").unwrap();
    assert_eq!(up.nodeid, ROOT);
    let dir = f.client.lookup(ROOT, b"dir").unwrap();
    assert_eq!(f.client.lookup(dir.nodeid, b"..").unwrap().nodeid, ROOT);
    let up_up = f.client.lookup(up.nodeid, b"..").unwrap();
    assert_eq!(up_up.nodeid, ROOT);
    assert_eq!(
        f.client.lookup(up.nodeid, b"outside").err(),
        Some(libc::ENOENT)
    );
    f.assert_outside_untouched();
}

#[test]
fn names_with_a_slash_are_refused_everywhere() {
    let mut f = fixture();
    for name in [
        &b"../outside/secret"[..],
        b"dir/inner.txt",
        b"/etc/passwd",
        b"../outside",
    ] {
        assert_eq!(
            f.client.lookup(ROOT, name).err(),
            Some(libc::EINVAL),
            "{name:?}"
        );
    }
    let flags = libc::O_RDWR | libc::O_CREAT;
    assert_eq!(
        f.client.create(ROOT, b"../outside/new", flags, 0o644).err(),
        Some(libc::EINVAL)
    );
    assert_eq!(
        f.client.create(ROOT, b"..", flags, 0o644).err(),
        Some(libc::EINVAL)
    );
    assert_eq!(f.client.mkdir(ROOT, b"../made").err(), Some(libc::EINVAL));
    assert_eq!(f.client.mkdir(ROOT, b"..").err(), Some(libc::EINVAL));
    assert_eq!(
        f.client.symlink(ROOT, b"../evil", b"x").err(),
        Some(libc::EINVAL)
    );
    assert_eq!(
        f.client
            .mknod(ROOT, b"../fifo", libc::S_IFIFO | 0o600, 0)
            .err(),
        Some(libc::EINVAL)
    );
    assert_eq!(
        f.client.unlink(ROOT, b"../outside/secret"),
        Err(libc::EINVAL)
    );
    f.assert_outside_untouched();
}

#[test]
fn symlinks_to_the_secret_are_text_never_followed() {
    let mut f = fixture();
    let secret_path = f.base.join("outside/secret");
    let guest_link = f
        .client
        .symlink(ROOT, b"mine", secret_path.as_os_str().as_encoded_bytes());
    assert!(guest_link.is_ok());
    for (link, text) in [
        (&b"abs-link"[..], secret_path.as_os_str().as_encoded_bytes()),
        (b"rel-link", b"../outside/secret"),
        (b"mine", secret_path.as_os_str().as_encoded_bytes()),
    ] {
        let entry = f.client.lookup(ROOT, link).unwrap();
        assert_eq!(mode(&entry), libc::S_IFLNK, "{link:?} is a symlink inode");
        assert_eq!(f.client.readlink(entry.nodeid).unwrap(), text);
        for flags in [libc::O_RDONLY, libc::O_RDWR, libc::O_WRONLY | libc::O_TRUNC] {
            assert_eq!(
                f.client.open(entry.nodeid, flags),
                Err(libc::ELOOP),
                "{link:?}"
            );
        }
        assert_eq!(f.client.open(entry.nodeid, libc::O_PATH), Err(libc::EINVAL));
        assert_eq!(f.client.opendir(entry.nodeid), Err(libc::ENOTDIR));
        assert_eq!(
            f.client.lookup(entry.nodeid, b"secret").err(),
            Some(libc::ENOTDIR)
        );
        // Creating over the link opens nothing through it.
        let create = |flags| (flags, 0o644);
        for (flags, mode) in [create(libc::O_RDWR), create(libc::O_WRONLY | libc::O_TRUNC)] {
            assert!(
                f.client.create(ROOT, link, flags, mode).is_err(),
                "{link:?}"
            );
        }
        // O_PATH would drop O_CREAT|O_EXCL and follow the link: refused.
        let opath = libc::O_PATH | libc::O_CREAT;
        assert_eq!(
            f.client.create(ROOT, link, opath, 0o644).err(),
            Some(libc::EINVAL)
        );
    }
    // A symlink to a directory outside, used as a directory.
    let up = f.client.symlink(ROOT, b"up", b"..").unwrap();
    assert_eq!(
        f.client.lookup(up.nodeid, b"outside").err(),
        Some(libc::ENOTDIR)
    );
    f.assert_outside_untouched();
}

#[test]
fn hard_links_stay_inside_and_name_only_known_inodes() {
    let mut f = fixture();
    let hello = f.client.lookup(ROOT, b"hello.txt").unwrap();
    let dir = f.client.lookup(ROOT, b"dir").unwrap();
    let linked = f
        .client
        .link(hello.nodeid, dir.nodeid, b"hello-link")
        .unwrap();
    assert_eq!(linked.attr.ino, hello.attr.ino);
    assert!(f.share.join("dir/hello-link").exists());
    assert_eq!(
        f.client.link(hello.nodeid, ROOT, b"../escaped").err(),
        Some(libc::EINVAL)
    );
    assert_eq!(
        f.client.link(hello.nodeid, ROOT, b"..").err(),
        Some(libc::EINVAL)
    );
    // Node ids never handed out.
    for forged in [0, 2_000_000, u64::MAX, 1 << 56] {
        assert_eq!(
            f.client.link(forged, ROOT, b"forged").err(),
            Some(libc::EBADF)
        );
        assert_eq!(
            f.client.link(hello.nodeid, forged, b"forged").err(),
            Some(libc::EBADF)
        );
    }
    // A directory cannot be linked; a symlink links as a symlink.
    assert!(f.client.link(dir.nodeid, ROOT, b"dir-link").is_err());
    let abs = f.client.lookup(ROOT, b"abs-link").unwrap();
    let l2 = f.client.link(abs.nodeid, ROOT, b"abs-link2").unwrap();
    assert_eq!(mode(&l2), libc::S_IFLNK);
    assert_eq!(f.client.open(l2.nodeid, libc::O_RDONLY), Err(libc::ELOOP));
    f.assert_outside_untouched();
}

#[test]
fn renames_with_slash_or_dotdot_fail() {
    let mut f = fixture();
    let dir = f.client.lookup(ROOT, b"dir").unwrap();
    for (old, new) in [
        (&b"hello.txt"[..], &b"../hello.txt"[..]),
        (b"hello.txt", b"../outside/hello.txt"),
        (b"hello.txt", b".."),
        (b"../outside/secret", b"stolen"),
        (b"..", b"x"),
        (b"dir", b"dir/../../x"),
    ] {
        assert_eq!(
            f.client.rename(ROOT, old, ROOT, new),
            Err(libc::EINVAL),
            "{old:?} -> {new:?}"
        );
        assert_eq!(
            f.client.rename2(ROOT, old, dir.nodeid, new, 0),
            Err(libc::EINVAL)
        );
    }
    assert_eq!(
        f.client.rename(ROOT, b"hello.txt", 987_654, b"x"),
        Err(libc::EBADF)
    );
    assert_eq!(
        f.client
            .rename2(ROOT, b"hello.txt", ROOT, b"h2", libc::RENAME_WHITEOUT),
        Err(libc::EPERM)
    );
    // A legitimate rename works and stays inside.
    f.client
        .rename(ROOT, b"hello.txt", dir.nodeid, b"moved.txt")
        .unwrap();
    assert!(f.share.join("dir/moved.txt").exists());
    f.assert_outside_untouched();
}

#[test]
fn a_directory_swapped_for_a_symlink_is_not_followed() {
    let mut f = fixture();
    let dir = f.client.lookup(ROOT, b"dir").unwrap();
    // The host (or a racing client) swaps the directory for a symlink out.
    std::fs::rename(f.share.join("dir"), f.share.join("dir.old")).unwrap();
    std::os::unix::fs::symlink(f.base.join("outside"), f.share.join("dir")).unwrap();
    // The node the guest holds is still the directory it looked up...
    let inner = f.client.lookup(dir.nodeid, b"inner.txt").unwrap();
    assert_eq!(f.client.cat(inner.nodeid).unwrap(), b"inner\n");
    assert_eq!(
        f.client.lookup(dir.nodeid, b"secret").err(),
        Some(libc::ENOENT)
    );
    // ...and the new name is a symlink, never a way through.
    let swapped = f.client.lookup(ROOT, b"dir").unwrap();
    assert_eq!(mode(&swapped), libc::S_IFLNK);
    assert_eq!(
        f.client.lookup(swapped.nodeid, b"secret").err(),
        Some(libc::ENOTDIR)
    );
    assert_eq!(f.client.opendir(swapped.nodeid), Err(libc::ENOTDIR));
    let flags = libc::O_RDWR;
    assert!(f
        .client
        .create(swapped.nodeid, b"planted", flags, 0o644)
        .is_err());
    f.assert_outside_untouched();
}

#[test]
fn forged_node_ids_and_handles_reach_nothing() {
    let mut f = fixture();
    let hello = f.client.lookup(ROOT, b"hello.txt").unwrap();
    let fh = f.client.open(hello.nodeid, libc::O_RDONLY).unwrap();
    assert_eq!(
        f.client.read(hello.nodeid, fh, 100).unwrap(),
        b"hello from the host\n"
    );
    for forged in [0, 3, 999, 1 << 40, u64::MAX] {
        if forged == hello.nodeid {
            continue;
        }
        assert_eq!(
            f.client.getattr(forged).err(),
            Some(libc::EBADF),
            "{forged}"
        );
        assert_eq!(f.client.open(forged, libc::O_RDONLY), Err(libc::EBADF));
        assert_eq!(f.client.lookup(forged, b"secret").err(), Some(libc::EBADF));
        assert_eq!(f.client.readlink(forged), Err(libc::EBADF));
        // A real handle with the wrong node id, and a forged handle.
        assert_eq!(f.client.read(forged, fh, 100), Err(libc::EBADF));
        assert_eq!(f.client.read(hello.nodeid, forged, 100), Err(libc::EBADF));
    }
    f.assert_outside_untouched();
}

#[test]
fn device_nodes_are_refused_fifos_allowed_but_never_opened() {
    let mut f = fixture();
    let null = libc::makedev(1, 3) as u32;
    let chr = f.client.mknod(ROOT, b"null", libc::S_IFCHR | 0o666, null);
    assert_eq!(chr.err(), Some(libc::EPERM));
    let blk = f.client.mknod(
        ROOT,
        b"sda",
        libc::S_IFBLK | 0o600,
        libc::makedev(8, 0) as u32,
    );
    assert_eq!(blk.err(), Some(libc::EPERM));
    let whiteout = f.client.mknod(ROOT, b"wh", libc::S_IFCHR, 0);
    assert_eq!(whiteout.err(), Some(libc::EPERM));
    assert!(!f.share.join("null").exists() && !f.share.join("sda").exists());

    let fifo = f
        .client
        .mknod(ROOT, b"guest-fifo", libc::S_IFIFO | 0o600, 0)
        .unwrap();
    assert!(std::fs::metadata(f.share.join("guest-fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    let host_fifo = f.client.lookup(ROOT, b"fifo").unwrap();
    let started = Instant::now();
    for node in [fifo.nodeid, host_fifo.nodeid] {
        for flags in [libc::O_RDONLY, libc::O_WRONLY, libc::O_RDWR] {
            assert_eq!(f.client.open(node, flags), Err(libc::EACCES));
        }
        assert_eq!(f.client.opendir(node), Err(libc::ENOTDIR));
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "an open blocked"
    );
    // A regular file is not a directory either.
    let hello = f.client.lookup(ROOT, b"hello.txt").unwrap();
    assert_eq!(f.client.opendir(hello.nodeid), Err(libc::ENOTDIR));
    f.assert_outside_untouched();
}

#[test]
fn oversized_buffers_are_refused_before_allocation() {
    let mut f = fixture();
    let fh = f.client.opendir(ROOT).unwrap();
    let args = ReadIn {
        fh,
        size: u32::MAX,
        ..Default::default()
    };
    let r = f.client.send(Opcode::Readdirplus, ROOT, args.as_slice());
    assert_eq!(r.error, -libc::EINVAL);
    let xattr = fuse_backend_rs::abi::fuse_abi::GetxattrIn {
        size: u32::MAX,
        padding: 0,
    };
    let body = [xattr.as_slice(), b"user.x\0"].concat();
    assert_eq!(
        f.client.send(Opcode::Getxattr, ROOT, &body).error,
        -libc::EINVAL
    );
    assert_eq!(
        f.client
            .send(Opcode::Listxattr, ROOT, xattr.as_slice())
            .error,
        -libc::EINVAL
    );
}

/// The share as the VMM serves it: bound onto itself nosuid,nodev in a
/// private mount namespace. A device node and a setuid file the host put
/// there are not honoured, and the bind is gone once the namespace is.
#[test]
fn the_share_is_nosuid_nodev_in_a_private_namespace() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().to_path_buf();
    populate(&base).unwrap();
    let share = base.join("share");
    let null = std::ffi::CString::new(share.join("null").as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: null is a valid path; mknod of /dev/null's numbers (root only).
    let made = unsafe { libc::mknod(null.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) };
    if made != 0 {
        eprintln!("skipped: cannot make a device node (not root)");
        return;
    }
    std::fs::write(share.join("suid"), b"#!/bin/sh\n").unwrap();
    std::fs::set_permissions(
        share.join("suid"),
        std::os::unix::fs::PermissionsExt::from_mode(0o4755),
    )
    .unwrap();
    let share_in = share.clone();
    let ran = in_private_mount_ns(move || {
        super::isolate_thread_fs_context().unwrap();
        let shared = SharedDir::prepare(&share_in).unwrap();
        let flags = statvfs_flags(&share_in);
        assert_ne!(flags & libc::ST_NODEV, 0, "the share is nodev");
        assert_ne!(flags & libc::ST_NOSUID, 0, "the share is nosuid");
        let err = std::fs::File::open(share_in.join("null")).unwrap_err();
        assert_eq!(
            err.raw_os_error(),
            Some(libc::EACCES),
            "a device node never opens"
        );
        assert!(mounted(&share_in), "the bind is in our namespace");
        let mut client = FuseClient::initialised(&shared.fs_root());
        let node = client.lookup(ROOT, b"null").unwrap();
        assert_eq!(node.attr.mode & libc::S_IFMT, libc::S_IFCHR);
        assert_eq!(client.open(node.nodeid, libc::O_RDWR), Err(libc::EACCES));
        let suid = client.lookup(ROOT, b"suid").unwrap();
        assert_ne!(
            suid.attr.mode & libc::S_ISUID,
            0,
            "the bit is shown, not honoured"
        );
        let hello = client.lookup(ROOT, b"hello.txt").unwrap();
        assert_eq!(client.cat(hello.nodeid).unwrap(), b"hello from the host\n");
    });
    if ran.is_some() {
        assert!(
            !mounted(&share),
            "the bind never reached the host's namespace"
        );
    }
    let meta = std::fs::symlink_metadata(share.join("null")).unwrap();
    assert!(meta.file_type().is_char_device() && meta.rdev() == libc::makedev(1, 3));
}

fn statvfs_flags(path: &Path) -> u64 {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: statvfs is plain old data; all-zero is valid.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a valid path and st a writable statvfs.
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
    st.f_flag
}

/// True if `path` is a mount point in the calling thread's namespace.
fn mounted(path: &Path) -> bool {
    let table = std::fs::read_to_string("/proc/thread-self/mountinfo").unwrap();
    let path = path.to_str().unwrap();
    table
        .lines()
        .any(|line| line.split(' ').nth(4) == Some(path))
}

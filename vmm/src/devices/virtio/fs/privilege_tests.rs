//! Guest root is not host root: what a guest makes or changes on a share
//! never becomes setuid, setgid or file-capable on the host.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::containment_tests::fixture;
use super::test_client::ROOT;

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn setuid_and_setgid_modes_are_refused_wherever_the_guest_sets_a_mode() {
    let mut f = fixture();
    let c = &mut f.client;
    let flags = libc::O_WRONLY;
    assert_eq!(
        c.create(ROOT, b"suid", flags, 0o4755).err(),
        Some(libc::EPERM)
    );
    assert_eq!(
        c.create(ROOT, b"sgid", flags, 0o2755).err(),
        Some(libc::EPERM)
    );
    let reg = libc::S_IFREG;
    assert_eq!(
        c.mknod(ROOT, b"suid2", reg | 0o4755, 0).err(),
        Some(libc::EPERM)
    );
    assert_eq!(
        c.mkdir_mode(ROOT, b"suid-dir", 0o4755).err(),
        Some(libc::EPERM)
    );
    for name in ["suid", "sgid", "suid2", "suid-dir"] {
        assert!(!f.share.join(name).exists(), "{name} was made");
    }
    // A setgid directory only passes its group on: allowed. So is a setgid
    // bit without group execute (a mandatory-locking mark, no privilege).
    // (mkdir itself takes setgid from the parent only.)
    let dir = c.mkdir_mode(ROOT, b"shared-group", 0o2775).unwrap();
    c.chmod(dir.nodeid, 0o2770).unwrap();
    assert_eq!(mode(&f.share.join("shared-group")), 0o2770);
    let (file, _) = c.create(ROOT, b"plain", flags, 0o755).unwrap();
    c.chmod(file.nodeid, 0o2644).unwrap();
    // chmod u+s, g+s of a file: refused, the mode unchanged.
    c.chmod(file.nodeid, 0o755).unwrap();
    assert_eq!(c.chmod(file.nodeid, 0o4755), Err(libc::EPERM));
    assert_eq!(c.chmod(file.nodeid, 0o2755), Err(libc::EPERM));
    assert_eq!(c.chmod(dir.nodeid, 0o4755), Err(libc::EPERM));
    assert_eq!(mode(&f.share.join("plain")), 0o755);
}

#[test]
fn file_capabilities_and_trusted_xattrs_are_refused() {
    let mut f = fixture();
    let c = &mut f.client;
    let (file, _) = c.create(ROOT, b"tool", libc::O_WRONLY, 0o755).unwrap();
    // A v2 capability set giving cap_setuid.
    let mut caps = vec![0u8; 20];
    caps[..4].copy_from_slice(&0x0200_0001u32.to_le_bytes());
    caps[4..8].copy_from_slice(&(1u32 << 7).to_le_bytes()); // CAP_SETUID
    assert_eq!(
        c.setxattr(file.nodeid, b"security.capability", &caps),
        Err(libc::EPERM)
    );
    assert_eq!(
        c.setxattr(file.nodeid, b"trusted.overlay.redirect", b"/etc"),
        Err(libc::EPERM)
    );
    assert_eq!(
        xattr(&f.share.join("tool"), "security.capability"),
        None,
        "file capabilities reached the host"
    );
    // A name without its NUL is malformed.
    let args = fuse_backend_rs::abi::fuse_abi::SetxattrIn { size: 0, flags: 0 };
    let reply = c.send(
        fuse_backend_rs::abi::fuse_abi::Opcode::Setxattr,
        file.nodeid,
        vm_memory::ByteValued::as_slice(&args),
    );
    assert_eq!(reply.result().err(), Some(libc::EINVAL));
}

#[test]
fn a_write_by_the_guest_clears_a_host_setuid_bit() {
    let mut f = fixture();
    let path = f.share.join("host-suid");
    std::fs::write(&path, b"#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o6755)).unwrap();
    // As in the VMM, which runs without CAP_FSETID (capabilities are per
    // thread; this test's thread serves the requests).
    caps::drop(None, caps::CapSet::Effective, caps::Capability::CAP_FSETID).unwrap();
    let node = f.client.lookup(ROOT, b"host-suid").unwrap().nodeid;
    let fh = f.client.open(node, libc::O_WRONLY).unwrap();
    f.client.write(node, fh, 0, b"#!/bin/sh\nid\n").unwrap();
    assert_eq!(mode(&path) & 0o6000, 0, "the write left {:o}", mode(&path));
    assert_eq!(std::fs::read(&path).unwrap(), b"#!/bin/sh\nid\n");
}

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let name = std::ffi::CString::new(name).unwrap();
    let mut buf = [0u8; 256];
    // SAFETY: NUL-terminated path and name; buf is writable for its length.
    let n = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    (n >= 0).then(|| buf[..n as usize].to_vec())
}

//! The share as a hostile guest leaves it: symlinks planted where the shim
//! mounts, writes and removes, mounts moved by renaming their parents, and
//! setuid files on a volume. Needs root (mounts); skipped otherwise.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use super::*;

fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

struct Host {
    tmp: tempfile::TempDir,
    share: Option<SharedDir>,
}

impl Host {
    fn new() -> Host {
        let tmp = tempfile::tempdir().unwrap();
        let share = SharedDir::create(&tmp.path().join("shared")).unwrap();
        Host {
            tmp,
            share: Some(share),
        }
    }

    fn share(&self) -> &SharedDir {
        self.share.as_ref().unwrap()
    }

    /// A host directory with one file, outside the share.
    fn volume(&self, name: &str) -> PathBuf {
        let dir = self.tmp.path().join(name);
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("data"), b"host data").unwrap();
        dir
    }

    /// What the guest sees as `relative`, written as the guest would.
    fn guest(&self, relative: &str) -> PathBuf {
        self.share().path().join(relative)
    }
}

/// As root: a share with host volume `vol` bound read-write at
/// `c1/volumes/0`. None when not root (mounts need it).
fn with_bound_volume() -> Option<(Host, PathBuf)> {
    if !root() {
        return None;
    }
    let host = Host::new();
    let src = host.volume("vol");
    host.share()
        .bind(&src, Path::new("c1/volumes/0"), false)
        .unwrap();
    Some((host, src))
}

impl Drop for Host {
    fn drop(&mut self) {
        let path = self.share().path().to_owned();
        drop(self.share.take());
        assert!(
            mounts_under(&path).is_empty(),
            "mounts left under the share"
        );
        assert!(!path.exists(), "the share was left");
    }
}

#[test]
fn a_bound_file_and_dir_show_through_and_go_away() {
    if !root() {
        return;
    }
    let host = Host::new();
    let src = host.volume("vol");
    let file = host.tmp.path().join("hosts");
    fs::write(&file, b"127.0.0.1 x\n").unwrap();

    let dir = host
        .share()
        .bind(&src, Path::new("c1/volumes/0"), true)
        .unwrap();
    assert_eq!(fs::read(dir.join("data")).unwrap(), b"host data");
    assert!(
        fs::write(dir.join("g"), b"no").is_err(),
        "read-only bind was writable"
    );
    let bound = host
        .share()
        .bind(&file, Path::new("c1/volumes/1"), false)
        .unwrap();
    assert_eq!(fs::read(&bound).unwrap(), b"127.0.0.1 x\n");

    host.share().remove(Path::new("c1"));
    assert!(!host.guest("c1").exists());
    assert!(src.join("data").exists(), "the source was touched");
}

#[test]
fn planted_symlinks_are_never_mounted_over_or_written() {
    if !root() {
        return;
    }
    let host = Host::new();
    let src = host.volume("vol");
    let victim_dir = host.volume("etc");
    let victim_file = host.tmp.path().join("passwd");
    fs::write(&victim_file, b"root:x:0:0\n").unwrap();
    fs::create_dir_all(host.guest("c1")).unwrap();
    // Every component the shim walks: the container's dir, volumes/, the
    // volume itself, a file target, the rootfs.
    symlink(&victim_dir, host.guest("c1/volumes")).unwrap();
    symlink(&victim_file, host.guest("c1/hosts")).unwrap();
    symlink(&victim_dir, host.guest("c1/rootfs")).unwrap();
    fs::create_dir_all(host.guest("c2")).unwrap();
    symlink(&victim_dir, host.guest("c2/volumes")).unwrap();
    symlink(&victim_dir, host.guest("c3")).unwrap();

    let cases: [(&str, &Path); 4] = [
        ("c1/volumes/0", &src),
        ("c1/hosts", &victim_file),
        ("c2/volumes/0", &src),
        ("c3/volumes/0", &src),
    ];
    for (target, source) in cases {
        let err = host
            .share()
            .bind(source, Path::new(target), false)
            .unwrap_err();
        assert!(
            matches!(
                err,
                MountError::CreateDir { .. } | MountError::CreateFile { .. }
            ),
            "{target}: {err:?}"
        );
    }
    let bundle = host.tmp.path().join("bundle");
    fs::create_dir_all(bundle.join("rootfs")).unwrap();
    let err = host
        .share()
        .mount_rootfs(&[], &bundle, Path::new("c1/rootfs"))
        .unwrap_err();
    assert!(matches!(err, MountError::CreateDir { .. }), "{err:?}");

    assert!(mounts_under(host.tmp.path())
        .iter()
        .all(|m| m == host.share().path()));
    assert_eq!(fs::read(&victim_file).unwrap(), b"root:x:0:0\n");
    let names: Vec<_> = fs::read_dir(&victim_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["data"], "nothing was made in the host directory");

    // Removing the planted links removes the links, not what they name.
    host.share().remove(Path::new("c1"));
    host.share().remove(Path::new("c3"));
    assert!(!host.guest("c1").exists() && !host.guest("c3").exists());
    assert!(victim_dir.join("data").exists() && victim_file.exists());
}

#[test]
fn a_mount_moved_by_the_guest_keeps_its_data_when_its_new_parent_is_removed() {
    let Some((host, src)) = with_bound_volume() else {
        return;
    };
    // The guest renames the volume's parent into another container's
    // directory, then that container is deleted.
    fs::create_dir_all(host.guest("c2")).unwrap();
    fs::rename(host.guest("c1/volumes"), host.guest("c2/moved")).unwrap();
    host.share().remove(Path::new("c1"));
    // The rename moved the mount with it: c2's removal unmounts it where
    // it now is, then removes; the host volume keeps its data either way.
    host.share().remove(Path::new("c2"));
    assert_eq!(fs::read(src.join("data")).unwrap(), b"host data");
    assert!(!host.guest("c2").exists());
}

#[test]
fn removal_never_crosses_a_mount_that_stays() {
    let Some((host, src)) = with_bound_volume() else {
        return;
    };
    // Only the tree removal, as after an unmount that failed.
    let left = remove::remove_tree(
        host.share().root.as_fd(),
        host.share().path(),
        Path::new("c1"),
    );
    // The mount point, and the directories that hold it.
    assert_eq!(
        left,
        [
            host.guest("c1/volumes/0"),
            host.guest("c1/volumes"),
            host.guest("c1")
        ]
    );
    assert_eq!(fs::read(src.join("data")).unwrap(), b"host data");
    host.share().remove(Path::new("c1"));
    assert!(!host.guest("c1").exists());
}

#[test]
fn host_binds_are_nosuid_and_nodev() {
    if !root() {
        return;
    }
    let host = Host::new();
    let src = host.volume("vol");
    let dir = host
        .share()
        .bind(&src, Path::new("c1/volumes/0"), false)
        .unwrap();
    // The guest makes a setuid-root binary on the volume.
    let planted = dir.join("suid");
    fs::copy("/bin/true", &planted).unwrap();
    fs::set_permissions(&planted, fs::Permissions::from_mode(0o4755)).unwrap();
    for path in [&dir, host.share().path()] {
        let flags = rustix::fs::statvfs(path).unwrap().f_flag;
        assert!(
            flags.contains(rustix::fs::StatVfsMountFlags::NOSUID)
                && flags.contains(rustix::fs::StatVfsMountFlags::NODEV),
            "{}: {flags:?}",
            path.display()
        );
    }
    host.share().remove(Path::new("c1"));
}

#[test]
fn a_dead_shims_container_is_cleaned_and_a_state_dir_removed_with_its_mounts() {
    if !root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let src = tmp.path().join("vol");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("data"), b"host data").unwrap();
    let share = SharedDir::create(&state.join("shared")).unwrap();
    share.bind(&src, Path::new("c1/volumes/0"), false).unwrap();
    share.bind(&src, Path::new("c2/volumes/0"), false).unwrap();
    // The shim dies: its SharedDir is never dropped.
    std::mem::forget(share);
    remove_dead_container(&state.join("shared"), "c1");
    assert!(!state.join("shared/c1").exists());
    assert!(state.join("shared/c2/volumes/0/data").exists());
    remove_dir(&state);
    assert!(!state.exists());
    assert!(mounts_under(tmp.path()).is_empty());
    assert_eq!(fs::read(src.join("data")).unwrap(), b"host data");
}

//! Early guest setup: the filesystems PID 1 mounts.

use std::io;
use std::path::Path;

use crate::sys::{Mount, Sys};

const NOSUID: libc::c_ulong = libc::MS_NOSUID;
const NODEV: libc::c_ulong = libc::MS_NODEV;
const NOEXEC: libc::c_ulong = libc::MS_NOEXEC;

/// What is mounted, in order (parents before children).
pub const MOUNTS: &[Mount] = &[
    Mount {
        source: "proc",
        target: "/proc",
        fstype: "proc",
        flags: NOSUID | NODEV | NOEXEC,
        data: None,
    },
    Mount {
        source: "sysfs",
        target: "/sys",
        fstype: "sysfs",
        flags: NOSUID | NODEV | NOEXEC,
        data: None,
    },
    Mount {
        source: "devtmpfs",
        target: "/dev",
        fstype: "devtmpfs",
        flags: NOSUID,
        data: Some("mode=0755"),
    },
    Mount {
        source: "devpts",
        target: "/dev/pts",
        fstype: "devpts",
        flags: NOSUID | NOEXEC,
        data: Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    },
    Mount {
        source: "mqueue",
        target: "/dev/mqueue",
        fstype: "mqueue",
        flags: NOSUID | NODEV | NOEXEC,
        data: None,
    },
    Mount {
        source: "tmpfs",
        target: "/run",
        fstype: "tmpfs",
        flags: NOSUID | NODEV,
        data: Some("mode=0755"),
    },
    Mount {
        source: "tmpfs",
        target: "/tmp",
        fstype: "tmpfs",
        flags: NOSUID | NODEV,
        data: Some("mode=1777"),
    },
    Mount {
        source: "cgroup2",
        target: "/sys/fs/cgroup",
        fstype: "cgroup2",
        flags: NOSUID | NODEV | NOEXEC,
        data: None,
    },
];

/// Where the agent's root is bound before it is moved over `/`.
pub const NEW_ROOT: &str = "/.vessel-root";

/// Leaves the initramfs (`rootfs`, which `pivot_root` cannot leave): binds
/// it onto [`NEW_ROOT`], moves that over `/` and chroots into it. The agent
/// keeps every file it had; containers can then `pivot_root`. Three mount
/// calls and a chroot, before anything else is mounted.
pub fn leave_initramfs(sys: &dyn Sys) -> Result<(), MountError> {
    let bind = Mount {
        source: "/",
        target: NEW_ROOT,
        fstype: "",
        flags: libc::MS_BIND | libc::MS_REC,
        data: None,
    };
    let fail = |source| MountError {
        fstype: "bind",
        target: NEW_ROOT,
        source,
    };
    match sys.mkdir(Path::new(NEW_ROOT)) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(fail(e)),
    }
    sys.mount(&bind).map_err(fail)?;
    sys.switch_root(NEW_ROOT).map_err(fail)
}

/// A mount that failed.
#[derive(Debug, thiserror::Error)]
#[error("mounting {fstype} on {target}")]
pub struct MountError {
    /// The filesystem type.
    pub fstype: &'static str,
    /// The mount point.
    pub target: &'static str,
    /// Why.
    #[source]
    pub source: io::Error,
}

/// Mounts [`MOUNTS`] in order. Each costs one syscall when its mount point
/// exists; a missing one (ENOENT) is created and the mount retried. A target
/// already mounted (EBUSY, e.g. a kernel-mounted devtmpfs) is left as is.
pub fn mount_all(sys: &dyn Sys) -> Result<(), MountError> {
    MOUNTS.iter().try_for_each(|m| mount_one(sys, m))
}

fn mount_one(sys: &dyn Sys, m: &Mount) -> Result<(), MountError> {
    let fail = |source| MountError {
        fstype: m.fstype,
        target: m.target,
        source,
    };
    match sys.mount(m) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
            match sys.mkdir(Path::new(m.target)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(fail(e)),
            }
            sys.mount(m).map_err(fail)
        }
        Err(e) => Err(fail(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{Call, FakeSys};

    #[test]
    fn mounts_in_order() {
        let sys = FakeSys::default();
        mount_all(&sys).unwrap();
        let targets: Vec<String> = sys
            .calls()
            .into_iter()
            .map(|c| match c {
                Call::Mount(m) => format!("{} {}", m.fstype, m.target),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(
            targets,
            [
                "proc /proc",
                "sysfs /sys",
                "devtmpfs /dev",
                "devpts /dev/pts",
                "mqueue /dev/mqueue",
                "tmpfs /run",
                "tmpfs /tmp",
                "cgroup2 /sys/fs/cgroup",
            ]
        );
        let devpts = MOUNTS.iter().find(|m| m.fstype == "devpts").unwrap();
        assert!(devpts.data.unwrap().contains("newinstance,ptmxmode=0666"));
    }

    #[test]
    fn creates_missing_mount_points_and_skips_busy() {
        let sys = FakeSys::default();
        sys.fail_mount_once("/dev/pts", libc::ENOENT);
        sys.fail_mount_once("/dev", libc::EBUSY);
        mount_all(&sys).unwrap();
        let calls = sys.calls();
        let pts: Vec<_> = calls
            .iter()
            .filter(|c| {
                matches!(c, Call::Mount(m) if m.target == "/dev/pts")
                    || matches!(c, Call::Mkdir(p) if p == "/dev/pts")
            })
            .collect();
        assert_eq!(pts.len(), 3, "mount, mkdir, mount again: {pts:?}");
        assert!(matches!(pts[1], Call::Mkdir(_)));
    }

    #[test]
    fn leaves_the_initramfs_through_a_bind() {
        let sys = FakeSys::default();
        leave_initramfs(&sys).unwrap();
        let calls = sys.calls();
        assert_eq!(calls[0], Call::Mkdir(NEW_ROOT.into()));
        assert!(
            matches!(&calls[1], Call::Mount(m) if m.source == "/" && m.target == NEW_ROOT
            && m.flags == libc::MS_BIND | libc::MS_REC)
        );
        assert_eq!(calls[2], Call::SwitchRoot(NEW_ROOT.into()));
    }

    #[test]
    fn other_errors_stop_setup() {
        let sys = FakeSys::default();
        sys.fail_mount_once("/sys/fs/cgroup", libc::ENODEV);
        let err = mount_all(&sys).unwrap_err();
        assert_eq!(err.to_string(), "mounting cgroup2 on /sys/fs/cgroup");
    }
}

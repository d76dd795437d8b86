//! The pod VM's host cgroup: the VMM runs in the sandbox's
//! `linux.cgroupsPath`, so its CPU, memory and pids count against the pod
//! (as a runc container's processes would).
//!
//! - **Where.** cgroup v2: the one unified hierarchy. cgroup v1 (this
//!   project's development hosts): each hierarchy of `cpu`, `cpuacct`,
//!   `memory`, `pids` and `blkio` that is mounted (`cpuset`, `devices` and
//!   `freezer` are left alone: a new cpuset is empty until configured, and
//!   the VMM needs `/dev/kvm`).
//! - **Which path.** A cgroupfs path (`/default/c1`) is taken from each
//!   hierarchy's root; a systemd one (`slice:prefix:name`) becomes
//!   `a.slice/a-b.slice/prefix-name.scope`, as runc lays it out.
//! - **When.** The VMM joins before it runs a single instruction: the shim
//!   opens each `cgroup.procs` and the forked child writes `0` to it
//!   between fork and exec.
//! - **Cleanup.** The directories the shim made (and only those) are
//!   listed in the state directory's `cgroups` and removed, deepest first,
//!   once the VMM is gone; after a crash `cleanup_dead` reads the list.

use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Component, Path, PathBuf};

/// The v1 controllers whose hierarchies the VMM joins.
const V1_CONTROLLERS: [&str; 5] = ["cpu", "cpuacct", "memory", "pids", "blkio"];

/// The state directory's list of the cgroup directories the shim made.
pub const CGROUPS_FILE: &str = "cgroups";

/// Why the VMM's cgroup could not be made or joined.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cgroupsPath {0:?} is not a cgroup path (it must not hold '..' or be empty)")]
    InvalidPath(String),
    #[error("no cgroup hierarchy is mounted")]
    NoHierarchy,
    #[error("creating the cgroup {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("opening {path} to join it")]
    OpenProcs {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("recording the cgroups in {path}")]
    Record {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The roots of the hierarchies a VMM joins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchies(Vec<PathBuf>);

impl Hierarchies {
    /// This host's, from `/proc/self/mountinfo`.
    pub fn host() -> Hierarchies {
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        Hierarchies::from_mountinfo(&info)
    }

    /// The unified hierarchy if it is mounted at `/sys/fs/cgroup` (v2);
    /// else every v1 hierarchy with one of [`V1_CONTROLLERS`].
    pub fn from_mountinfo(info: &str) -> Hierarchies {
        let mut v1 = Vec::new();
        for line in info.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            let Some(dash) = fields.iter().position(|f| *f == "-") else {
                continue;
            };
            let (Some(point), Some(fstype), Some(options)) =
                (fields.get(4), fields.get(dash + 1), fields.get(dash + 3))
            else {
                continue;
            };
            match *fstype {
                "cgroup2" if *point == "/sys/fs/cgroup" => {
                    return Hierarchies(vec![PathBuf::from(point)]);
                }
                "cgroup" if options.split(',').any(|o| V1_CONTROLLERS.contains(&o)) => {
                    v1.push(PathBuf::from(point));
                }
                _ => {}
            }
        }
        Hierarchies(v1)
    }

    #[cfg(test)]
    pub fn at(roots: Vec<PathBuf>) -> Hierarchies {
        Hierarchies(roots)
    }
}

/// A spec's `cgroupsPath` as a path below a hierarchy's root.
pub fn relative_path(cgroups_path: &str) -> Result<PathBuf, CgroupError> {
    let invalid = || CgroupError::InvalidPath(cgroups_path.to_owned());
    let path = match cgroups_path.split(':').collect::<Vec<_>>()[..] {
        [slice, prefix, name] => {
            if [slice, prefix, name].iter().any(|part| part.contains('/')) {
                return Err(invalid());
            }
            let mut path = PathBuf::new();
            // a-b-c.slice lives in a.slice/a-b.slice/a-b-c.slice.
            if let Some(slice) = slice.strip_suffix(".slice").filter(|s| !s.is_empty()) {
                let parts: Vec<&str> = slice.split('-').collect();
                for n in 1..=parts.len() {
                    path.push(format!("{}.slice", parts[..n].join("-")));
                }
            } else if !slice.is_empty() {
                path.push(slice);
            }
            let scope = if prefix.is_empty() {
                format!("{name}.scope")
            } else {
                format!("{prefix}-{name}.scope")
            };
            path.push(scope);
            path
        }
        [_] => PathBuf::from(cgroups_path.trim_start_matches('/')),
        _ => return Err(invalid()),
    };
    let plain = path.components().all(|c| matches!(c, Component::Normal(_)));
    if path.as_os_str().is_empty() || !plain {
        return Err(invalid());
    }
    Ok(path)
}

/// The VMM's cgroup in every hierarchy, made (where missing) for it.
#[derive(Debug)]
pub struct PodCgroup {
    /// The cgroup in each hierarchy.
    leaves: Vec<PathBuf>,
    /// The directories the shim made, parents first.
    made: Vec<PathBuf>,
}

impl PodCgroup {
    /// Makes `cgroups_path` in each of `hierarchies` and lists what it
    /// made in `state_dir`'s [`CGROUPS_FILE`]. A failure removes what it
    /// made.
    pub fn create(
        hierarchies: &Hierarchies,
        cgroups_path: &str,
        state_dir: &Path,
    ) -> Result<PodCgroup, CgroupError> {
        let relative = relative_path(cgroups_path)?;
        if hierarchies.0.is_empty() {
            return Err(CgroupError::NoHierarchy);
        }
        let mut cgroup = PodCgroup {
            leaves: Vec::new(),
            made: Vec::new(),
        };
        match cgroup.make_all(hierarchies, &relative, state_dir) {
            Ok(()) => Ok(cgroup),
            Err(error) => {
                remove_made(&cgroup.made);
                Err(error)
            }
        }
    }

    /// Makes the cgroup in every hierarchy, then lists what it made.
    fn make_all(
        &mut self,
        hierarchies: &Hierarchies,
        relative: &Path,
        state_dir: &Path,
    ) -> Result<(), CgroupError> {
        for root in &hierarchies.0 {
            self.make_dirs(root, relative)?;
            self.leaves.push(root.join(relative));
        }
        let list = state_dir.join(CGROUPS_FILE);
        let lines: String = self
            .made
            .iter()
            .map(|p| format!("{}\n", p.display()))
            .collect();
        std::fs::write(&list, lines).map_err(|source| CgroupError::Record {
            path: list.clone(),
            source,
        })
    }

    fn make_dirs(&mut self, root: &Path, relative: &Path) -> Result<(), CgroupError> {
        let mut dir = root.to_owned();
        for part in relative.components() {
            dir.push(part);
            match std::fs::create_dir(&dir) {
                Ok(()) => self.made.push(dir.clone()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(source) => {
                    return Err(CgroupError::Create {
                        path: dir.clone(),
                        source,
                    })
                }
            }
        }
        Ok(())
    }

    /// Each cgroup's `cgroup.procs`, open for writing: the VMM's child
    /// side joins with [`join_all`] before it execs.
    pub fn procs_files(&self) -> Result<Vec<File>, CgroupError> {
        self.leaves
            .iter()
            .map(|leaf| {
                let path = leaf.join("cgroup.procs");
                File::options()
                    .write(true)
                    .open(&path)
                    .map_err(|source| CgroupError::OpenProcs { path, source })
            })
            .collect()
    }
}

/// Moves the calling process into the cgroup of each of `fds` (open
/// `cgroup.procs` files) by writing `0`. Async-signal-safe: no allocation,
/// one write(2) each, so it may run between fork and exec.
pub fn join_all(fds: &[RawFd]) -> std::io::Result<()> {
    for &fd in fds {
        // SAFETY: fd is an open file descriptor the caller owns; the
        // buffer is one static byte.
        if unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) } != 1 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The raw fds of `files`, for [`join_all`] in a `pre_exec` hook.
pub fn raw_fds(files: &[File]) -> Vec<RawFd> {
    files.iter().map(AsRawFd::as_raw_fd).collect()
}

/// Removes the cgroup directories `state_dir`'s [`CGROUPS_FILE`] lists,
/// deepest first, once no process is left in them. A directory another
/// pod still uses (a shared parent) stays.
pub fn remove_recorded(state_dir: &Path) {
    let Ok(list) = std::fs::read_to_string(state_dir.join(CGROUPS_FILE)) else {
        return;
    };
    let dirs: Vec<PathBuf> = list.lines().map(PathBuf::from).collect();
    remove_made(&dirs);
    let _ = std::fs::remove_file(state_dir.join(CGROUPS_FILE));
}

/// How long a removal waits for the processes still in a cgroup to leave.
const LEAVE_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Waits at most `grace` until `dir`'s `cgroup.procs` lists no process
/// (at once when it cannot be read: not a cgroup, or gone).
fn wait_emptied(dir: &Path, grace: std::time::Duration) {
    let deadline = std::time::Instant::now() + grace;
    while std::fs::read_to_string(dir.join("cgroup.procs")).is_ok_and(|p| !p.trim().is_empty()) {
        if std::time::Instant::now() >= deadline {
            tracing::warn!(cgroup = %dir.display(), "processes are still in the VMM's cgroup");
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Removes the cgroup directories `made` (parents first in each
/// hierarchy), deepest first.
fn remove_made(made: &[PathBuf]) {
    for dir in made.iter().rev() {
        // A killed VMM may still be leaving its cgroup (its memory being
        // freed): wait a moment for the cgroup to empty.
        wait_emptied(dir, LEAVE_GRACE);
        match std::fs::remove_dir(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            // A parent another pod's cgroup still sits in.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY | libc::ENOTEMPTY)) => {
                tracing::debug!(cgroup = %dir.display(), "a cgroup still in use stays");
            }
            Err(error) => {
                tracing::warn!(cgroup = %dir.display(), %error, "cannot remove the VMM's cgroup")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
28 27 0:25 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
31 28 0:28 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu
32 28 0:29 / /sys/fs/cgroup/cpuacct rw - cgroup cgroup rw,cpuacct
33 28 0:30 / /sys/fs/cgroup/cpuset rw - cgroup cgroup rw,cpuset
34 28 0:31 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
35 28 0:32 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
36 28 0:33 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd
37 28 0:34 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
38 28 0:35 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct";

    #[test]
    fn v1_hierarchies_of_the_controllers_and_v2_alone() {
        let v1 = Hierarchies::from_mountinfo(HYBRID);
        let want: Vec<PathBuf> = [
            "/sys/fs/cgroup/cpu",
            "/sys/fs/cgroup/cpuacct",
            "/sys/fs/cgroup/memory",
            "/sys/fs/cgroup/pids",
            "/sys/fs/cgroup/cpu,cpuacct",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(v1, Hierarchies(want));
        let v2 = "40 1 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate";
        assert_eq!(
            Hierarchies::from_mountinfo(v2),
            Hierarchies(vec!["/sys/fs/cgroup".into()])
        );
    }

    #[test]
    fn cgroupfs_and_systemd_paths() {
        let cases = [
            ("/default/c1", "default/c1"),
            ("k8s/pod1/c1", "k8s/pod1/c1"),
            (
                "kubepods-besteffort-pod12.slice:cri-containerd:abc",
                "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod12.slice/cri-containerd-abc.scope",
            ),
            ("system.slice:vessel:c1", "system.slice/vessel-c1.scope"),
            (":vessel:c1", "vessel-c1.scope"),
        ];
        for (spec, want) in cases {
            assert_eq!(relative_path(spec).unwrap(), PathBuf::from(want), "{spec}");
        }
        for bad in ["", "/", "/a/../../etc", "a:b", "x.slice:p:../n"] {
            assert!(relative_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_removal_waits_for_the_last_process_to_leave() {
        let dir = tempfile::tempdir().unwrap();
        let procs = dir.path().join("cgroup.procs");
        std::fs::write(&procs, "4242\n").unwrap();
        let emptier = {
            let procs = procs.clone();
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(100));
                std::fs::write(procs, "").unwrap();
            })
        };
        let start = std::time::Instant::now();
        wait_emptied(dir.path(), std::time::Duration::from_secs(10));
        assert!(start.elapsed() >= std::time::Duration::from_millis(100));
        emptier.join().unwrap();
        // One that never empties is left after the grace.
        std::fs::write(&procs, "4242\n").unwrap();
        wait_emptied(dir.path(), std::time::Duration::from_millis(50));
        // Not a cgroup: no wait at all.
        wait_emptied(&dir.path().join("gone"), std::time::Duration::from_secs(10));
    }

    #[test]
    fn made_directories_are_listed_and_only_they_are_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let roots: Vec<PathBuf> = ["memory", "pids"]
            .iter()
            .map(|c| tmp.path().join(c))
            .collect();
        for root in &roots {
            std::fs::create_dir_all(root.join("default/other")).unwrap();
        }
        let state = tmp.path().join("state");
        std::fs::create_dir(&state).unwrap();
        let cgroup =
            PodCgroup::create(&Hierarchies::at(roots.clone()), "/default/pod/c1", &state).unwrap();
        assert_eq!(
            cgroup.leaves,
            [
                roots[0].join("default/pod/c1"),
                roots[1].join("default/pod/c1")
            ]
        );
        // A plain directory stands in for cgroupfs: cgroup.procs is a file.
        for leaf in &cgroup.leaves {
            std::fs::write(leaf.join("cgroup.procs"), "").unwrap();
        }
        let files = cgroup.procs_files().unwrap();
        join_all(&raw_fds(&files)).unwrap();
        assert_eq!(
            std::fs::read_to_string(roots[0].join("default/pod/c1/cgroup.procs")).unwrap(),
            "0"
        );
        for leaf in &cgroup.leaves {
            std::fs::remove_file(leaf.join("cgroup.procs")).unwrap();
        }
        remove_recorded(&state);
        for root in &roots {
            assert!(!root.join("default/pod").exists(), "made, so removed");
            assert!(root.join("default/other").exists(), "not ours, so kept");
        }
        assert!(!state.join(CGROUPS_FILE).exists());
    }

    #[test]
    fn a_failure_in_one_hierarchy_takes_back_what_the_others_got() {
        let tmp = tempfile::tempdir().unwrap();
        let memory = tmp.path().join("memory");
        std::fs::create_dir(&memory).unwrap();
        // The second hierarchy's root is missing: its mkdir fails.
        let roots = vec![memory.clone(), tmp.path().join("pids")];
        let err =
            PodCgroup::create(&Hierarchies::at(roots), "/default/c1", tmp.path()).unwrap_err();
        assert!(matches!(err, CgroupError::Create { .. }), "{err}");
        assert!(
            !memory.join("default").exists(),
            "the first hierarchy's cgroup stayed"
        );
        assert!(!tmp.path().join(CGROUPS_FILE).exists());
    }

    #[test]
    fn a_path_with_dotdot_is_refused_before_anything_is_made() {
        let tmp = tempfile::tempdir().unwrap();
        let err = PodCgroup::create(
            &Hierarchies::at(vec![tmp.path().join("memory")]),
            "/a/../../../etc",
            tmp.path(),
        )
        .unwrap_err();
        assert!(matches!(err, CgroupError::InvalidPath(_)), "{err}");
        assert!(!tmp.path().join("memory").exists());
    }
}

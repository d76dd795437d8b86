//! Recording fakes of the engine's seams, for unit tests: a [`ChildSys`]
//! that logs steps, a [`Spawner`] whose "child" is a thread walking the plan
//! with it, and an in-memory [`CgroupFs`].

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{c_char, CString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};

use super::cgroup::CgroupFs;
use super::plan::{ChildSys, Report, Step};
use super::spawn::{pipe, Reports, SpawnRequest, Spawned, Spawner};

/// Logs each step (Debug form); fails the steps it is told to; reads and
/// writes real fds for the flow-control steps.
#[derive(Default)]
pub struct RecordingChildSys {
    pub log: Mutex<Vec<String>>,
    /// Fail the first step whose log line contains this, with this errno.
    pub fail: Option<(String, i32)>,
    /// Paths `executable` says yes to.
    pub executables: BTreeSet<String>,
    /// Set by a successful "exec": a real execve never returns, so nothing
    /// is reported after it.
    pub execed: std::sync::atomic::AtomicBool,
}

impl RecordingChildSys {
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl ChildSys for RecordingChildSys {
    fn step(&self, step: &Step) -> Result<(), i32> {
        let line = format!("{step:?}");
        self.log.lock().unwrap().push(line.clone());
        match &self.fail {
            Some((needle, errno)) if line.contains(needle.as_str()) => Err(*errno),
            _ => Ok(()),
        }
    }

    fn executable(&self, path: &CString) -> bool {
        self.executables.contains(path.to_str().unwrap())
    }

    fn report(&self, fd: RawFd, report: Report) {
        if self.execed.load(Ordering::SeqCst) {
            return;
        }
        // SAFETY: the fd belongs to the caller's pipe; borrowed, not closed.
        let mut file = std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(fd) });
        let _ = file.write_all(&report.encode());
    }

    fn read_byte(&self, fd: RawFd) -> bool {
        // SAFETY: as in `report`.
        let mut file = std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(fd) });
        let mut byte = [0u8];
        matches!(file.read(&mut byte), Ok(1))
    }

    fn exec(&self, path: &CString, _argv: &[*const c_char], _envp: &[*const c_char]) -> i32 {
        self.log
            .lock()
            .unwrap()
            .push(format!("exec {}", path.to_string_lossy()));
        match &self.fail {
            Some((needle, errno)) if needle == "exec" => *errno,
            _ => {
                self.execed.store(true, Ordering::SeqCst);
                0
            }
        }
    }
}

/// What one fake spawn saw.
#[derive(Debug, Clone)]
pub struct SpawnRecord {
    pub namespaces: u64,
    pub cgroup: bool,
    pub pid_ns_of: Option<RawFd>,
    pub steps: Vec<String>,
}

/// Spawns a thread that walks the plan with a [`RecordingChildSys`].
#[derive(Default)]
pub struct FakeSpawner {
    next_pid: AtomicI32,
    pub spawned: Mutex<Vec<SpawnRecord>>,
    /// Passed to each child's RecordingChildSys.
    pub fail: Mutex<Option<(String, i32)>>,
    pub executables: Mutex<BTreeSet<String>>,
}

impl FakeSpawner {
    pub fn with_executables(paths: &[&str]) -> FakeSpawner {
        let spawner = FakeSpawner {
            next_pid: AtomicI32::new(100),
            ..FakeSpawner::default()
        };
        *spawner.executables.lock().unwrap() = paths.iter().map(|p| p.to_string()).collect();
        spawner
    }

    pub fn records(&self) -> Vec<SpawnRecord> {
        self.spawned.lock().unwrap().clone()
    }
}

impl Spawner for FakeSpawner {
    fn spawn(&self, req: SpawnRequest<'_>) -> io::Result<Spawned> {
        let (reports_rx, reports_tx) = pipe()?;
        let (start_rx, start_tx) = pipe()?;
        req.plan.report_fd = std::os::fd::AsRawFd::as_raw_fd(&reports_tx);
        req.plan.start_fd = std::os::fd::AsRawFd::as_raw_fd(&start_rx);
        let pid = self.next_pid.fetch_add(1, Ordering::SeqCst);
        let sys = Arc::new(RecordingChildSys {
            log: Mutex::new(Vec::new()),
            fail: self.fail.lock().unwrap().clone(),
            executables: self.executables.lock().unwrap().clone(),
            ..RecordingChildSys::default()
        });
        // The "child": walks a copy of the plan, then closes its ends (EOF
        // reads as "exec'd").
        let plan = req.plan.clone();
        let plan_steps: Vec<String> = plan.steps.iter().map(|s| format!("{s:?}")).collect();
        let child_sys = sys.clone();
        let child = std::thread::spawn(move || {
            let _ = plan.execute(child_sys.as_ref(), &[], &[]);
            drop(reports_tx);
            drop(start_rx);
        });
        drop(child);
        self.spawned.lock().unwrap().push(SpawnRecord {
            namespaces: req.namespaces,
            cgroup: req.cgroup.is_some(),
            pid_ns_of: req.pid_ns_of,
            steps: plan_steps,
        });
        let mut start = start_tx;
        if req.id_maps.is_some() {
            start.write_all(&[1])?;
        }
        Ok(Spawned {
            pid,
            pidfd: OwnedFd::from(File::open("/dev/null")?),
            start,
            reports: Reports::new(reports_rx),
        })
    }
}

/// An in-memory cgroup tree: directories and file contents.
#[derive(Default)]
pub struct MemCgroupFs {
    pub dirs: Mutex<BTreeSet<PathBuf>>,
    pub files: Mutex<BTreeMap<PathBuf, String>>,
    pub writes: Mutex<Vec<(PathBuf, String)>>,
}

impl MemCgroupFs {
    /// A root with every controller available.
    pub fn with_root(root: &Path) -> MemCgroupFs {
        let fs = MemCgroupFs::default();
        fs.dirs.lock().unwrap().insert(root.to_path_buf());
        fs.files
            .lock()
            .unwrap()
            .insert(root.join("cgroup.controllers"), "cpu io memory pids".into());
        fs
    }

    pub fn has_dir(&self, path: &Path) -> bool {
        self.dirs.lock().unwrap().contains(path)
    }
}

impl CgroupFs for MemCgroupFs {
    fn mkdir(&self, path: &Path) -> io::Result<()> {
        if !self.dirs.lock().unwrap().insert(path.to_path_buf()) {
            return Err(io::ErrorKind::AlreadyExists.into());
        }
        let mut files = self.files.lock().unwrap();
        files.insert(path.join("cgroup.controllers"), "cpu io memory pids".into());
        files.insert(path.join("cgroup.procs"), String::new());
        files.insert(path.join("memory.events"), "oom_kill 0\n".into());
        Ok(())
    }

    fn rmdir(&self, path: &Path) -> io::Result<()> {
        let mut dirs = self.dirs.lock().unwrap();
        if dirs.iter().any(|d| d != path && d.starts_with(path)) {
            return Err(io::Error::from_raw_os_error(libc::ENOTEMPTY));
        }
        if !dirs.remove(path) {
            return Err(io::ErrorKind::NotFound.into());
        }
        self.files
            .lock()
            .unwrap()
            .retain(|f, _| !f.starts_with(path));
        Ok(())
    }

    fn write(&self, path: &Path, data: &str) -> io::Result<()> {
        let parent = path.parent().unwrap_or(Path::new("/"));
        if !self.dirs.lock().unwrap().contains(parent) {
            return Err(io::ErrorKind::NotFound.into());
        }
        self.writes
            .lock()
            .unwrap()
            .push((path.to_path_buf(), data.to_string()));
        self.files
            .lock()
            .unwrap()
            .insert(path.to_path_buf(), data.to_string());
        Ok(())
    }

    fn read(&self, path: &Path) -> io::Result<String> {
        self.files
            .lock()
            .unwrap()
            .get(path)
            .cloned()
            .ok_or_else(|| io::ErrorKind::NotFound.into())
    }

    fn open_dir(&self, _path: &Path) -> io::Result<OwnedFd> {
        Ok(OwnedFd::from(File::open("/dev/null")?))
    }
}

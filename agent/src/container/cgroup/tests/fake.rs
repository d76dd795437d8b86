//! A recording [`CgroupFs`]: a tree of directories and file contents in
//! memory, with scripted failures.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::super::CgroupFs;

/// A call the manager made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Mkdir(String),
    Rmdir(String),
    Write(String, String),
    Read(String),
    OpenDir(String),
}

/// Which call a scripted failure hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Mkdir,
    Rmdir,
    Write,
}

/// Directories (`mkdir` of an existing one fails, of one whose parent is
/// missing too; `rmdir` of one with subdirectories is `EBUSY`, as on
/// cgroupfs), readable files, files whose writes fail `ENOENT`, and errnos
/// to return a number of times.
#[derive(Default)]
pub struct FakeFs {
    ops: Mutex<Vec<Op>>,
    dirs: Mutex<HashSet<PathBuf>>,
    files: Mutex<HashMap<PathBuf, String>>,
    missing: Mutex<HashSet<PathBuf>>,
    failures: Mutex<HashMap<(Kind, PathBuf), (i32, usize)>>,
}

fn show(path: &Path) -> String {
    path.display().to_string()
}

impl FakeFs {
    /// A file system with the directory `root`.
    pub fn with_root(root: &str) -> FakeFs {
        let fs = FakeFs::default();
        fs.add_dir(root);
        fs
    }

    pub fn add_dir(&self, path: &str) {
        self.dirs.lock().unwrap().insert(PathBuf::from(path));
    }

    pub fn has_dir(&self, path: &str) -> bool {
        self.dirs.lock().unwrap().contains(Path::new(path))
    }

    pub fn set_file(&self, path: &str, content: &str) {
        self.files
            .lock()
            .unwrap()
            .insert(PathBuf::from(path), content.to_owned());
    }

    /// Writes to `path` fail with `ENOENT`.
    pub fn remove_file(&self, path: &str) {
        self.missing.lock().unwrap().insert(PathBuf::from(path));
    }

    /// The next `times` `kind` calls on `path` fail with `errno`.
    pub fn fail(&self, kind: Kind, path: &str, errno: i32, times: usize) {
        self.failures
            .lock()
            .unwrap()
            .insert((kind, PathBuf::from(path)), (errno, times));
    }

    pub fn ops(&self) -> Vec<Op> {
        self.ops.lock().unwrap().clone()
    }

    pub fn clear_ops(&self) {
        self.ops.lock().unwrap().clear();
    }

    /// The writes, as `(path, value)`.
    pub fn writes(&self) -> Vec<(String, String)> {
        self.ops()
            .into_iter()
            .filter_map(|op| match op {
                Op::Write(path, value) => Some((path, value)),
                _ => None,
            })
            .collect()
    }

    fn record(&self, op: Op) {
        self.ops.lock().unwrap().push(op);
    }

    fn scripted(&self, kind: Kind, path: &Path) -> io::Result<()> {
        let mut failures = self.failures.lock().unwrap();
        let key = (kind, path.to_owned());
        if let Some((errno, times)) = failures.get_mut(&key) {
            let errno = *errno;
            *times -= 1;
            if *times == 0 {
                failures.remove(&key);
            }
            return Err(io::Error::from_raw_os_error(errno));
        }
        Ok(())
    }
}

impl CgroupFs for FakeFs {
    fn mkdir(&self, path: &Path) -> io::Result<()> {
        self.record(Op::Mkdir(show(path)));
        self.scripted(Kind::Mkdir, path)?;
        let mut dirs = self.dirs.lock().unwrap();
        if dirs.contains(path) {
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        if !path.parent().is_some_and(|p| dirs.contains(p)) {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        }
        dirs.insert(path.to_owned());
        Ok(())
    }

    fn rmdir(&self, path: &Path) -> io::Result<()> {
        self.record(Op::Rmdir(show(path)));
        self.scripted(Kind::Rmdir, path)?;
        let mut dirs = self.dirs.lock().unwrap();
        if !dirs.contains(path) {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        }
        if dirs.iter().any(|d| d.parent() == Some(path)) {
            return Err(io::Error::from_raw_os_error(libc::EBUSY));
        }
        dirs.remove(path);
        Ok(())
    }

    fn write(&self, path: &Path, data: &str) -> io::Result<()> {
        self.record(Op::Write(show(path), data.to_owned()));
        self.scripted(Kind::Write, path)?;
        if self.missing.lock().unwrap().contains(path) {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        }
        Ok(())
    }

    fn read(&self, path: &Path) -> io::Result<String> {
        self.record(Op::Read(show(path)));
        self.files
            .lock()
            .unwrap()
            .get(path)
            .cloned()
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))
    }

    fn open_dir(&self, path: &Path) -> io::Result<OwnedFd> {
        self.record(Op::OpenDir(show(path)));
        Ok(File::open("/dev/null")?.into())
    }
}

//! The system calls the cgroup manager makes, behind a trait so unit tests
//! can record them instead.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// File-system operations on cgroupfs.
///
/// Each call is as few syscalls as the operation allows: on this machine a
/// guest syscall costs milliseconds.
pub trait CgroupFs: Send + Sync {
    /// Creates a directory; an existing one is [`io::ErrorKind::AlreadyExists`].
    fn mkdir(&self, path: &Path) -> io::Result<()>;
    /// Removes an (otherwise empty) directory.
    fn rmdir(&self, path: &Path) -> io::Result<()>;
    /// Replaces the content of an existing file with `data`, in one write.
    fn write(&self, path: &Path, data: &str) -> io::Result<()>;
    /// The whole content of a file.
    fn read(&self, path: &Path) -> io::Result<String>;
    /// An `O_PATH | O_DIRECTORY | O_CLOEXEC` descriptor of a directory, for
    /// `clone3(CLONE_INTO_CGROUP)`.
    fn open_dir(&self, path: &Path) -> io::Result<OwnedFd>;
}

/// The real thing, on std and libc.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealCgroupFs;

/// Read buffer size: every cgroup file the agent reads fits in one (except
/// `cgroup.procs` of a crowded cgroup, which takes a few more reads).
const READ_CHUNK: usize = 8192;

impl CgroupFs for RealCgroupFs {
    fn mkdir(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir(path)
    }

    fn rmdir(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir(path)
    }

    fn write(&self, path: &Path, data: &str) -> io::Result<()> {
        // open(O_WRONLY|O_TRUNC|O_CLOEXEC) + write + close. cgroupfs ignores
        // the truncation; regular files (tests) need it.
        let mut file = OpenOptions::new().write(true).truncate(true).open(path)?;
        // A cgroup file takes its value in one write(2), which it accepts
        // whole or fails.
        let written = file.write(data.as_bytes())?;
        if written != data.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("short write: {written} of {} bytes", data.len()),
            ));
        }
        Ok(())
    }

    fn read(&self, path: &Path) -> io::Result<String> {
        // open + read until EOF + close. Not `fs::read_to_string`, which adds
        // an fstat and, as cgroup files report size 0, a small probe read.
        // A short read is no proof of EOF here: multi-record seq files
        // (`cgroup.procs`) return one kernel buffer per read.
        let mut file = File::open(path)?;
        let mut data = Vec::new();
        let mut chunk = [0u8; READ_CHUNK];
        loop {
            match file.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => data.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        String::from_utf8(data).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8"))
    }

    fn open_dir(&self, path: &Path) -> io::Result<OwnedFd> {
        // std adds O_CLOEXEC; O_RDONLY (0) is ignored with O_PATH.
        let dir = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
            .open(path)?;
        Ok(dir.into())
    }
}

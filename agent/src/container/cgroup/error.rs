//! The cgroup manager's errors.

use std::io;
use std::path::PathBuf;

/// Why a cgroup operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// A sandbox or container id that cannot be a cgroup directory name.
    #[error(
        "invalid cgroup id {0:?}: it must be non-empty, not \".\" or \"..\", without '/' or NUL"
    )]
    InvalidId(String),
    /// [`Cgroups::create`] before [`Cgroups::init`].
    #[error("cgroups are not initialised")]
    NotInitialized,
    /// `mkdir` failed; an existing directory is [`io::ErrorKind::AlreadyExists`].
    #[error("cannot create cgroup {}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// `rmdir` failed.
    #[error("cannot remove cgroup {}", path.display())]
    RemoveDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Opening the cgroup directory (for `CLONE_INTO_CGROUP`) failed.
    #[error("cannot open cgroup {}", path.display())]
    OpenDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Writing a cgroup file failed.
    #[error("cannot write {value:?} to {}", path.display())]
    WriteFile {
        /// The file.
        path: PathBuf,
        /// What was written.
        value: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Reading a cgroup file failed.
    #[error("cannot read {}", path.display())]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A cgroup file has a line this manager cannot parse.
    #[error("cannot parse {}: unexpected line {line:?}", path.display())]
    ParseFile {
        /// The file.
        path: PathBuf,
        /// The offending line.
        line: String,
    },
    /// A cgroup file lacks an entry it always has.
    #[error("{} has no {key:?} entry", path.display())]
    MissingKey {
        /// The file.
        path: PathBuf,
        /// The missing key.
        key: &'static str,
    },
    /// A limit needs a controller the kernel does not have.
    #[error("{field} needs the {controller} cgroup controller, which this kernel lacks")]
    MissingController {
        /// The controller, e.g. `memory`.
        controller: String,
        /// The OCI resource (or `unified` key) asking for it.
        field: String,
    },
    /// A limit's file does not exist: the kernel lacks that feature (e.g.
    /// `io.weight` without BFQ or iocost).
    #[error("{field} is not supported by this kernel: it has no {}", path.display())]
    UnsupportedResource {
        /// The OCI resource, e.g. `blockIO.weight`.
        field: &'static str,
        /// The missing file.
        path: PathBuf,
        /// The OS error (not found).
        #[source]
        source: io::Error,
    },
    /// A resource value this manager refuses.
    #[error("invalid {field}: {reason}")]
    InvalidResource {
        /// The OCI resource, e.g. `memory.limit`.
        field: String,
        /// Why.
        reason: &'static str,
    },
}

impl CgroupError {
    /// The error's kind, for mapping to a ttrpc status: `InvalidInput` for a
    /// bad request, `AlreadyExists` for a stale container cgroup, `NotFound`,
    /// `Unsupported` for what the kernel lacks, or the OS error's kind.
    pub fn kind(&self) -> io::ErrorKind {
        match self {
            CgroupError::InvalidId(_) | CgroupError::InvalidResource { .. } => {
                io::ErrorKind::InvalidInput
            }
            CgroupError::NotInitialized => io::ErrorKind::Other,
            CgroupError::CreateDir { source, .. }
            | CgroupError::RemoveDir { source, .. }
            | CgroupError::OpenDir { source, .. }
            | CgroupError::WriteFile { source, .. }
            | CgroupError::ReadFile { source, .. } => source.kind(),
            CgroupError::ParseFile { .. } | CgroupError::MissingKey { .. } => {
                io::ErrorKind::InvalidData
            }
            CgroupError::MissingController { .. } | CgroupError::UnsupportedResource { .. } => {
                io::ErrorKind::Unsupported
            }
        }
    }
}

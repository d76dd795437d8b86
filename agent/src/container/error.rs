//! Errors of the container engine. They become ttrpc codes in one place,
//! `crate::error::AgentError::code`.

use std::io;
use std::path::PathBuf;

use super::cgroup::CgroupError;
use super::seccomp::SeccompError;

/// A spec (or process) the engine cannot run as given.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The JSON does not parse as an OCI spec.
    #[error("parsing the OCI {what}")]
    Parse {
        /// "runtime spec", "process", "resources".
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// A field is missing or wrong.
    #[error("invalid spec: {0}")]
    Invalid(String),
    /// A path in the rootfs could not be resolved.
    #[error("resolving {path:?} in the container root")]
    ResolvePath {
        /// The path as the spec gives it.
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The seccomp profile cannot be compiled.
    #[error("compiling the seccomp profile")]
    CompileSeccomp(#[source] SeccompError),
}

/// Why a container operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// No container has this id.
    #[error("container {0:?} not found")]
    NotFound(String),
    /// No process of the container has this exec id.
    #[error("process {exec_id:?} of container {container_id:?} not found")]
    ProcessNotFound {
        /// The container.
        container_id: String,
        /// The exec id.
        exec_id: String,
    },
    /// The id is taken.
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// An id is empty or has characters ids may not have.
    #[error(
        "invalid id {0:?}: ids are 1 to 128 characters of [A-Za-z0-9_.-], not starting with '.'"
    )]
    InvalidId(String),
    /// The request does not fit the container's state.
    #[error("container {id:?} is {state}: cannot {action}")]
    WrongState {
        /// The container.
        id: String,
        /// Its state.
        state: &'static str,
        /// What was asked.
        action: &'static str,
    },
    /// The request is malformed.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The spec cannot be run.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// The cgroup could not be set up or read.
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    /// The container process failed during setup.
    #[error("container setup failed while {step}")]
    Setup {
        /// The step, e.g. `mounting proc on "/rootfs/proc"`.
        step: String,
        #[source]
        source: io::Error,
    },
    /// A system call of the agent failed.
    #[error("{what}")]
    Sys {
        /// What the agent was doing.
        what: String,
        #[source]
        source: io::Error,
    },
}

impl ContainerError {
    /// A failed system call while doing `what`.
    pub fn sys(what: impl Into<String>) -> impl FnOnce(io::Error) -> ContainerError {
        move |source| ContainerError::Sys {
            what: what.into(),
            source,
        }
    }
}

/// Checks a container or exec id: the guest contract's rule
/// ([`vessel_agent_protocol::contract::valid_id`]), which the shim applies too.
pub fn check_id(id: &str) -> Result<(), ContainerError> {
    if vessel_agent_protocol::contract::valid_id(id) {
        Ok(())
    } else {
        Err(ContainerError::InvalidId(id.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        for good in ["a", "pod-1_x.y", &"a".repeat(128)] {
            assert!(check_id(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "a/b",
            "a b",
            "a\0",
            &"a".repeat(129),
        ] {
            assert!(check_id(bad).is_err(), "{bad:?}");
        }
    }
}

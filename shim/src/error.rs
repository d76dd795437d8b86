//! The shim's errors, and the one place they become ttrpc statuses.

use std::path::PathBuf;

use containerd_shim::protos::ttrpc::{self, Code};
use vessel_agent_protocol::ClientError;

/// Everything that can go wrong serving a task.
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error("reading the config file {path}")]
    ReadConfig {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing the config file {path}")]
    ParseConfig {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("config: {0}")]
    InvalidConfig(String),
    #[error("{what} {path} does not exist (set it in the vessel config)")]
    MissingFile { what: &'static str, path: PathBuf },
    #[error("annotation {key}: {reason}")]
    InvalidAnnotation { key: String, reason: String },
    #[error("reading the bundle's config.json in {bundle}")]
    ReadSpec {
        bundle: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing the bundle's config.json in {bundle}")]
    ParseSpec {
        bundle: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("invalid OCI spec: {0}")]
    InvalidSpec(String),
    #[error("invalid process spec for exec {exec_id}")]
    ParseProcess {
        exec_id: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("creating {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("mounting {target}")]
    Mount {
        target: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("mounting the rootfs at {target}: {message}")]
    MountRootfs { target: PathBuf, message: String },
    #[error("starting the VMM {path}")]
    SpawnVmm {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("starting a stdio or wait thread")]
    SpawnThread(#[source] std::io::Error),
    #[error("the VM did not answer (console: {console})")]
    ConnectAgent {
        console: PathBuf,
        #[source]
        source: ClientError,
    },
    #[error("the VM of this sandbox has exited")]
    VmExited,
    #[error("agent call failed")]
    Agent(#[source] ClientError),
    #[error("opening the FIFO {path}")]
    OpenFifo {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("container {0} not found")]
    ContainerNotFound(String),
    #[error("process {exec_id} of container {id} not found")]
    ProcessNotFound { id: String, exec_id: String },
    #[error("container {0} already exists")]
    ContainerExists(String),
    #[error("process {exec_id} of container {id} already exists")]
    ProcessExists { id: String, exec_id: String },
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0} is not supported by the vessel runtime")]
    Unsupported(&'static str),
    #[error("a blocking task failed")]
    Join(#[source] tokio::task::JoinError),
    #[error("the VM template")]
    Template(#[source] vessel_template::TemplateError),
    #[error("{0}")]
    MakeTemplate(String),
    #[error("VMM API call {request} failed: {reason}")]
    VmmApi { request: String, reason: String },
}

impl ShimError {
    /// The gRPC code containerd turns into its errdefs.
    pub fn code(&self) -> Code {
        match self {
            ShimError::ContainerNotFound(_) | ShimError::ProcessNotFound { .. } => Code::NOT_FOUND,
            ShimError::ContainerExists(_) | ShimError::ProcessExists { .. } => Code::ALREADY_EXISTS,
            ShimError::InvalidAnnotation { .. }
            | ShimError::InvalidSpec(_)
            | ShimError::ParseSpec { .. }
            | ShimError::ParseProcess { .. } => Code::INVALID_ARGUMENT,
            ShimError::FailedPrecondition(_) | ShimError::VmExited => Code::FAILED_PRECONDITION,
            ShimError::Unsupported(_) => Code::UNIMPLEMENTED,
            ShimError::Agent(e) => e.code().unwrap_or(Code::UNKNOWN),
            _ => Code::UNKNOWN,
        }
    }

    /// The whole chain of causes on one line.
    pub fn chain(&self) -> String {
        let mut text = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        text
    }
}

impl From<ShimError> for ttrpc::Error {
    fn from(e: ShimError) -> Self {
        ttrpc::Error::RpcStatus(ttrpc::get_status(e.code(), e.chain()))
    }
}

impl From<ShimError> for containerd_shim::Error {
    fn from(e: ShimError) -> Self {
        containerd_shim::Error::Other(e.chain())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_containerd_errdefs() {
        assert_eq!(
            ShimError::ContainerNotFound("a".into()).code(),
            Code::NOT_FOUND
        );
        assert_eq!(
            ShimError::Unsupported("Checkpoint").code(),
            Code::UNIMPLEMENTED
        );
        assert_eq!(
            ShimError::InvalidSpec("x".into()).code(),
            Code::INVALID_ARGUMENT
        );
    }

    #[test]
    fn the_status_carries_every_cause() {
        let e = ShimError::OpenFifo {
            path: "/f".into(),
            source: std::io::Error::from_raw_os_error(libc::ENOENT),
        };
        let ttrpc::Error::RpcStatus(status) = ttrpc::Error::from(e) else {
            panic!("not a status");
        };
        assert!(status.message().contains("opening the FIFO /f: "));
        assert!(status.message().contains("No such file"));
    }
}

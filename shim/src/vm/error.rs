//! [`VmError`]: what can go wrong with a pod's VM.

use std::path::PathBuf;

use vessel_agent_protocol::ClientError;
use vessel_vmm_client::template::TemplateError;
use vessel_vmm_client::{ConnectAgentError, ProcessError};

use crate::mounts::MountError;

/// Errors of starting, reaching and ending a pod's VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("creating the sandbox's state directory {path}")]
    CreateStateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("preparing the sandbox's shared directory")]
    PrepareShare(#[source] MountError),
    #[error("the VMM's cgroup")]
    Cgroup(#[source] super::cgroup::CgroupError),
    #[error("creating the VMM's log {path}")]
    CreateLog {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("starting the pod's VMM")]
    SpawnVmm(#[source] ProcessError),
    #[error("opening a pidfd of the VMM")]
    OpenPidFd(#[source] std::io::Error),
    #[error("starting the thread that waits for the VMM")]
    SpawnWaiter(#[source] std::io::Error),
    #[error("the VM did not answer (console: {console})")]
    ConnectAgent {
        console: PathBuf,
        #[source]
        source: Box<ConnectAgentError>,
    },
    #[error("giving the restored guest its clock, entropy and share")]
    AdoptGuest(#[source] Box<ClientError>),
    #[error("a further connection to the agent")]
    Connect(#[source] Box<ConnectAgentError>),
    #[error("the VM template")]
    Template(#[source] Box<TemplateError>),
    #[error("the VM of this sandbox has exited")]
    Exited,
}

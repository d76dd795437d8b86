//! Errors of the task verbs and watchers, the errors of the parts they
//! call (spec, mounts, stdio, the VM, the config, conversions) wrapped
//! as they are. They become ttrpc codes in one place,
//! `crate::error::ShimError::code`.

use vessel_agent_protocol::ClientError;

use crate::config::ConfigError;
use crate::convert::ConvertError;
use crate::mounts::MountError;
use crate::spec::SpecError;
use crate::stdio::StdioError;
use crate::vm::VmError;

/// Refuses an id that is not one plain name: the shim names directories
/// after container and sandbox ids, and the agent refuses the same ids.
pub fn check_id(what: &'static str, id: &str) -> Result<(), TaskError> {
    if vessel_agent_protocol::valid_id(id) {
        Ok(())
    } else {
        Err(TaskError::InvalidId {
            what,
            id: id.to_owned(),
        })
    }
}

/// Why a Task API call failed in the task part itself.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// A container, exec or sandbox id that is not one plain name
    /// (`vessel_agent_protocol::contract::valid_id`).
    #[error("invalid {what} id {id:?}: want 1 to 128 of [A-Za-z0-9_.-], not starting with '.'")]
    InvalidId { what: &'static str, id: String },
    #[error("container {0} not found")]
    ContainerNotFound(String),
    #[error("process {exec_id} of container {id} not found")]
    ProcessNotFound { id: String, exec_id: String },
    #[error("container {0} already exists")]
    ContainerExists(String),
    #[error("process {exec_id} of container {id} already exists")]
    ProcessExists { id: String, exec_id: String },
    /// A container of another pod was sent to this pod's shim.
    #[error("this shim serves sandbox {serves}, not {asked}")]
    OtherSandbox { serves: String, asked: String },
    #[error("container {0} was already started")]
    ContainerStarted(String),
    #[error("exec {exec_id} was already started")]
    ExecStarted { id: String, exec_id: String },
    #[error("process {id}/{exec_id} is still running")]
    ProcessRunning { id: String, exec_id: String },
    /// The agent answered a call with an error, or did not answer.
    #[error("agent call failed")]
    CallAgent(#[source] ClientError),
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Mount(#[from] MountError),
    #[error(transparent)]
    Stdio(#[from] StdioError),
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Convert(#[from] ConvertError),
    #[error("starting the exit waiter of {id}/{exec_id}")]
    SpawnWaiter {
        id: String,
        exec_id: String,
        #[source]
        source: std::io::Error,
    },
}

//! The shim's errors, and the one place they become ttrpc statuses.
//!
//! Each part has its own error enum: [`TaskError`] (the task verbs and
//! watchers, `task/error.rs`, which wraps the errors of what they call:
//! [`SpecError`] of `spec.rs`, [`MountError`] of `mounts.rs`,
//! [`StdioError`] of `stdio.rs`, [`VmError`] of `vm/`, [`ConfigError`] of
//! `config.rs` and [`ConvertError`] of `convert/`). [`ShimError`] is what
//! the service answers: a task's error, or one of the service's own, their
//! text and sources untouched, and [`ShimError::code`] maps every variant,
//! nested ones included, to the code containerd turns into its errdefs.
//! Nothing below imports this module.

use containerd_shim::protos::ttrpc::{self, Code};
use vessel_agent_protocol::ClientError;

use crate::config::ConfigError;
use crate::convert::ConvertError;
use crate::mounts::MountError;
use crate::spec::SpecError;
use crate::stdio::StdioError;
use crate::task::error::TaskError;
use crate::vm::VmError;

/// Everything that can go wrong serving a call.
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error(transparent)]
    Task(#[from] TaskError),
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Convert(#[from] ConvertError),
    #[error("{0} is not supported by the vessel runtime")]
    Unsupported(&'static str),
    #[error("a blocking task failed")]
    RunBlocking(#[source] tokio::task::JoinError),
}

/// The agent's own code for a call it answered with an error status.
fn agent_code(e: &ClientError) -> Code {
    e.code().unwrap_or(Code::UNKNOWN)
}

fn task_code(e: &TaskError) -> Code {
    match e {
        TaskError::InvalidId { .. } => Code::INVALID_ARGUMENT,
        TaskError::ContainerNotFound(_) | TaskError::ProcessNotFound { .. } => Code::NOT_FOUND,
        TaskError::ContainerExists(_) | TaskError::ProcessExists { .. } => Code::ALREADY_EXISTS,
        TaskError::OtherSandbox { .. }
        | TaskError::ContainerStarted(_)
        | TaskError::ExecStarted { .. }
        | TaskError::ProcessRunning { .. } => Code::FAILED_PRECONDITION,
        TaskError::CallAgent(e) => agent_code(e),
        TaskError::Spec(e) => spec_code(e),
        TaskError::Mount(e) => mount_code(e),
        TaskError::Stdio(e) => stdio_code(e),
        TaskError::Vm(e) => vm_code(e),
        TaskError::Config(e) => config_code(e),
        TaskError::Convert(e) => convert_code(e),
        TaskError::SpawnWaiter { .. } => Code::UNKNOWN,
    }
}

fn spec_code(e: &SpecError) -> Code {
    match e {
        SpecError::ParseSpec { .. }
        | SpecError::InvalidSpec(_)
        | SpecError::EncodeSpec(_)
        | SpecError::ParseProcess { .. } => Code::INVALID_ARGUMENT,
        SpecError::ReadSpec { .. } => Code::UNKNOWN,
    }
}

fn mount_code(e: &MountError) -> Code {
    match e {
        MountError::OpenShare { .. }
        | MountError::CloneSource { .. }
        | MountError::SetAttributes { .. }
        | MountError::CreateDir { .. }
        | MountError::CreateFile { .. }
        | MountError::StatSource { .. }
        | MountError::MountPath { .. }
        | MountError::MountRootfs { .. } => Code::UNKNOWN,
    }
}

fn stdio_code(e: &StdioError) -> Code {
    match e {
        StdioError::UnsupportedLogDriver { .. } => Code::INVALID_ARGUMENT,
        StdioError::WriteStdin(e) => agent_code(e),
        StdioError::OpenFifo { .. }
        | StdioError::ReadFifo { .. }
        | StdioError::SpawnPump { .. } => Code::UNKNOWN,
    }
}

fn convert_code(e: &ConvertError) -> Code {
    match e {
        ConvertError::EncodeMetrics(_) => Code::UNKNOWN,
    }
}

fn vm_code(e: &VmError) -> Code {
    match e {
        VmError::Exited => Code::FAILED_PRECONDITION,
        VmError::AdoptGuest(e) => agent_code(e),
        VmError::Cgroup(crate::vm::cgroup::CgroupError::InvalidPath(_)) => Code::INVALID_ARGUMENT,
        VmError::Cgroup(_)
        | VmError::CreateStateDir { .. }
        | VmError::PrepareShare(_)
        | VmError::CreateLog { .. }
        | VmError::SpawnVmm(_)
        | VmError::OpenPidFd(_)
        | VmError::SpawnWaiter(_)
        | VmError::ConnectAgent { .. }
        | VmError::Connect(_)
        | VmError::Template(_) => Code::UNKNOWN,
    }
}

fn config_code(e: &ConfigError) -> Code {
    match e {
        ConfigError::AnnotationNotEnabled { .. }
        | ConfigError::AnnotationUnknownKey { .. }
        | ConfigError::AnnotationValue { .. } => Code::INVALID_ARGUMENT,
        ConfigError::ReadFile { .. }
        | ConfigError::ParseFile { .. }
        | ConfigError::NotAnnotatable { .. }
        | ConfigError::Unset(_)
        | ConfigError::MissingFile { .. }
        | ConfigError::NoVcpus
        | ConfigError::TooLittleMemory
        | ConfigError::SmallConsoleCap
        | ConfigError::SmallLogCap
        | ConfigError::LoadAtStart(_) => Code::UNKNOWN,
    }
}

impl ShimError {
    /// The gRPC code containerd turns into its errdefs: NOT_FOUND,
    /// ALREADY_EXISTS, INVALID_ARGUMENT, FAILED_PRECONDITION,
    /// UNIMPLEMENTED, the agent's own code for its answers, UNKNOWN
    /// otherwise. Every variant is named, so a new one must be placed.
    pub fn code(&self) -> Code {
        match self {
            ShimError::Task(e) => task_code(e),
            ShimError::Spec(e) => spec_code(e),
            ShimError::Config(e) => config_code(e),
            ShimError::Convert(e) => convert_code(e),
            ShimError::Unsupported(_) => Code::UNIMPLEMENTED,
            ShimError::RunBlocking(_) => Code::UNKNOWN,
        }
    }

    /// The whole chain of causes on one line.
    pub fn chain(&self) -> String {
        crate::cause::chain(self)
    }
}

impl From<ShimError> for ttrpc::Error {
    fn from(e: ShimError) -> Self {
        ttrpc::Error::RpcStatus(ttrpc::get_status(e.code(), e.chain()))
    }
}

impl From<TaskError> for ttrpc::Error {
    fn from(e: TaskError) -> Self {
        ShimError::from(e).into()
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
            ShimError::from(TaskError::ContainerNotFound("a".into())).code(),
            Code::NOT_FOUND
        );
        assert_eq!(
            ShimError::Unsupported("Checkpoint").code(),
            Code::UNIMPLEMENTED
        );
        assert_eq!(
            ShimError::from(SpecError::InvalidSpec("x".into())).code(),
            Code::INVALID_ARGUMENT
        );
    }

    #[test]
    fn nested_errors_keep_their_codes() {
        let exists = TaskError::ProcessExists {
            id: "c".into(),
            exec_id: "e".into(),
        };
        assert_eq!(ShimError::from(exists).code(), Code::ALREADY_EXISTS);
        let running = TaskError::ProcessRunning {
            id: "c".into(),
            exec_id: "e".into(),
        };
        assert_eq!(ShimError::from(running).code(), Code::FAILED_PRECONDITION);
        assert_eq!(
            ShimError::from(TaskError::from(VmError::Exited)).code(),
            Code::FAILED_PRECONDITION
        );
        let annotation = ConfigError::AnnotationNotEnabled { key: "k".into() };
        assert_eq!(
            ShimError::from(TaskError::from(annotation)).code(),
            Code::INVALID_ARGUMENT
        );
        let driver = StdioError::UnsupportedLogDriver {
            path: "binary:///x".into(),
            scheme: "binary".into(),
        };
        assert_eq!(
            ShimError::from(TaskError::from(driver)).code(),
            Code::INVALID_ARGUMENT
        );
        let read = SpecError::ReadSpec {
            bundle: "/b".into(),
            source: std::io::Error::from_raw_os_error(libc::ENOENT),
        };
        assert_eq!(ShimError::from(read).code(), Code::UNKNOWN);
    }

    #[test]
    fn the_status_carries_every_cause() {
        let e = ShimError::from(TaskError::from(StdioError::OpenFifo {
            path: "/f".into(),
            source: std::io::Error::from_raw_os_error(libc::ENOENT),
        }));
        let ttrpc::Error::RpcStatus(status) = ttrpc::Error::from(e) else {
            panic!("not a status");
        };
        assert!(status.message().contains("opening the FIFO /f: "));
        assert!(status.message().contains("No such file"));
    }

    #[test]
    fn a_wrapped_error_keeps_its_source_in_the_chain() {
        let e = ShimError::from(TaskError::from(MountError::StatSource {
            path: "/srv/data".into(),
            source: std::io::Error::from_raw_os_error(libc::ENOENT),
        }));
        assert!(
            e.chain()
                .starts_with("reading the bind source /srv/data: No such file"),
            "{}",
            e.chain()
        );
    }
}

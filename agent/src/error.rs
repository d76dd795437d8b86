//! The agent's errors and the one place they become ttrpc status codes.

use std::io;

use crate::container::cgroup::CgroupError;
use crate::container::error::ContainerError;

/// Why an agent operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The request is malformed.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The RPC needs the guest; this agent serves on a host (`--listen`).
    #[error("{call} runs only in the guest: this agent serves on a host")]
    HostMode {
        /// The RPC, e.g. `CreateContainer`.
        call: &'static str,
    },
    /// MountShare named another tag than the share already mounted.
    #[error("the virtio-fs share {mounted:?} is mounted; {asked:?} cannot be")]
    ShareMounted {
        /// The tag mounted.
        mounted: String,
        /// The tag asked for.
        asked: String,
    },
    /// A container call failed.
    #[error(transparent)]
    Container(#[from] ContainerError),
    /// A system call failed.
    #[error("{what} failed")]
    Sys {
        /// What the agent was doing, e.g. `setting the hostname`.
        what: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl AgentError {
    /// A failed system call.
    pub fn sys(what: &'static str) -> impl FnOnce(io::Error) -> AgentError {
        move |source| AgentError::Sys { what, source }
    }

    /// The ttrpc status code of this error.
    pub fn code(&self) -> ttrpc::Code {
        match self {
            AgentError::InvalidArgument(_) => ttrpc::Code::INVALID_ARGUMENT,
            AgentError::HostMode { .. } => ttrpc::Code::UNIMPLEMENTED,
            AgentError::ShareMounted { .. } => ttrpc::Code::FAILED_PRECONDITION,
            AgentError::Sys { source, .. } => io_code(source),
            AgentError::Container(e) => container_code(e),
        }
    }

    /// The message with its sources, for the host that sees only the status.
    pub fn full_message(&self) -> String {
        let mut msg = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(e) = source {
            msg.push_str(": ");
            msg.push_str(&e.to_string());
            source = e.source();
        }
        msg
    }
}

fn io_code(e: &io::Error) -> ttrpc::Code {
    kind_code(e.kind())
}

fn kind_code(kind: io::ErrorKind) -> ttrpc::Code {
    match kind {
        io::ErrorKind::PermissionDenied => ttrpc::Code::PERMISSION_DENIED,
        io::ErrorKind::InvalidInput => ttrpc::Code::INVALID_ARGUMENT,
        io::ErrorKind::NotFound => ttrpc::Code::NOT_FOUND,
        io::ErrorKind::AlreadyExists => ttrpc::Code::ALREADY_EXISTS,
        io::ErrorKind::TimedOut => ttrpc::Code::DEADLINE_EXCEEDED,
        io::ErrorKind::Unsupported => ttrpc::Code::UNIMPLEMENTED,
        _ => ttrpc::Code::INTERNAL,
    }
}

fn container_code(e: &ContainerError) -> ttrpc::Code {
    match e {
        ContainerError::NotFound(_) | ContainerError::ProcessNotFound { .. } => {
            ttrpc::Code::NOT_FOUND
        }
        ContainerError::AlreadyExists(_) => ttrpc::Code::ALREADY_EXISTS,
        ContainerError::InvalidId(_)
        | ContainerError::InvalidRequest(_)
        | ContainerError::Spec(_) => ttrpc::Code::INVALID_ARGUMENT,
        ContainerError::WrongState { .. } => ttrpc::Code::FAILED_PRECONDITION,
        ContainerError::Cgroup(e) => cgroup_code(e),
        // The spec asked for something the guest could not do: ENOENT for a
        // missing command or mount source, EINVAL for bad options.
        ContainerError::Setup { source, .. } => match source.raw_os_error() {
            Some(libc::ENOENT | libc::ENOTDIR | libc::EINVAL | libc::EACCES | libc::EPERM) => {
                ttrpc::Code::INVALID_ARGUMENT
            }
            _ => ttrpc::Code::INTERNAL,
        },
        ContainerError::Sys { source, .. } => io_code(source),
    }
}

fn cgroup_code(e: &CgroupError) -> ttrpc::Code {
    match e.kind() {
        // A limit this guest kernel cannot enforce: the request's fault.
        io::ErrorKind::Unsupported => ttrpc::Code::INVALID_ARGUMENT,
        kind => kind_code(kind),
    }
}

impl From<AgentError> for ttrpc::Error {
    fn from(e: AgentError) -> ttrpc::Error {
        ttrpc::Error::RpcStatus(ttrpc::get_status(e.code(), e.full_message()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_messages() {
        let e = AgentError::HostMode {
            call: "CreateContainer",
        };
        assert_eq!(e.code(), ttrpc::Code::UNIMPLEMENTED);
        assert_eq!(
            e.full_message(),
            "CreateContainer runs only in the guest: this agent serves on a host"
        );

        let e = AgentError::sys("setting the hostname")(io::Error::from_raw_os_error(libc::EPERM));
        assert_eq!(e.code(), ttrpc::Code::PERMISSION_DENIED);
        assert_eq!(e.to_string(), "setting the hostname failed");
        assert!(e
            .full_message()
            .starts_with("setting the hostname failed: "));

        let e = AgentError::InvalidArgument("empty hostname".into());
        assert_eq!(e.code(), ttrpc::Code::INVALID_ARGUMENT);
    }
}

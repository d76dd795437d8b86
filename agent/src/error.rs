//! The agent's errors and the one place they become ttrpc status codes.

use std::io;

/// Why an agent operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The request is malformed.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The RPC exists in the API but not in this agent yet.
    #[error("{call} is not implemented yet")]
    Unimplemented {
        /// The RPC, e.g. `CreateContainer`.
        call: &'static str,
    },
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
            AgentError::Unimplemented { .. } => ttrpc::Code::UNIMPLEMENTED,
            AgentError::Sys { source, .. } => match source.kind() {
                io::ErrorKind::PermissionDenied => ttrpc::Code::PERMISSION_DENIED,
                io::ErrorKind::InvalidInput => ttrpc::Code::INVALID_ARGUMENT,
                io::ErrorKind::NotFound => ttrpc::Code::NOT_FOUND,
                _ => ttrpc::Code::INTERNAL,
            },
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
        let e = AgentError::Unimplemented {
            call: "CreateContainer",
        };
        assert_eq!(e.code(), ttrpc::Code::UNIMPLEMENTED);
        assert_eq!(e.full_message(), "CreateContainer is not implemented yet");

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

//! The API socket's wire types (`--api-sock PATH`), shared by the VMM's
//! server (`vessel_vmm::api`) and [`crate::ApiClient`]: a unix stream
//! socket carrying one JSON object per line each way.
//!
//! ```text
//! → {"action":"pause"}        ← {"ok":true,"state":"paused"}
//! → {"action":"resume"}       ← {"ok":true,"state":"running"}
//! → {"action":"status"}       ← {"ok":true,"state":"running"}
//! → {"action":"shutdown"}     ← {"ok":true,"state":"stopping"}   (then the VMM exits 0)
//! → {"action":"fs_add","source":"/abs/host/path","target":"rel/path","readonly":true}
//!                             ← {"ok":true}
//! → {"action":"fs_remove","target":"rel/path"}
//!                             ← {"ok":true}
//! → {"action":"fs_list"}      ← {"ok":true,"mounts":[{"source":"...","target":"...","readonly":true}]}
//! → {"action":"snapshot","state":"/abs/state","memory":"/abs/memory"}
//!                             ← {"ok":true,"state":"paused","state_bytes":N,"memory_bytes":N,"millis":N}
//! → {"action":"debug_forbidden_syscall"}
//!                             ← nothing: the VMM exits (only with `--debug-api on`)
//! → anything else             ← {"ok":false,"error":"..."}
//! ```
//!
//! A request is written by [`Request`]'s `Serialize` and read by
//! [`Request::parse`], whose errors name the field that is wrong; a reply
//! is one [`Reply`] both ways. A unit test checks that every request the
//! client can write is read back as itself.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The longest request line the VMM accepts, newline included.
pub const MAX_REQUEST_BYTES: u64 = 4096;

/// One request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Request {
    Pause,
    Resume,
    Status,
    Shutdown,
    /// Bind-mounts the host path `source` at `target` (relative to the
    /// share) in the VMM's mount namespace.
    FsAdd {
        source: PathBuf,
        target: String,
        readonly: bool,
    },
    FsRemove {
        target: String,
    },
    FsList,
    /// Writes a paused VM's state and memory files.
    Snapshot {
        state: PathBuf,
        memory: PathBuf,
    },
    /// Debugging only (`--debug-api on`, else refused): the API thread
    /// makes a syscall outside its seccomp policy, which stops the VMM with
    /// [`crate::jail::BAD_SYSCALL_EXIT_CODE`].
    DebugForbiddenSyscall,
}

/// The actions, as their names on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Pause,
    Resume,
    Status,
    Shutdown,
    FsAdd,
    FsRemove,
    FsList,
    Snapshot,
    DebugForbiddenSyscall,
}

impl Action {
    const ALL: [Action; 9] = [
        Action::Pause,
        Action::Resume,
        Action::Status,
        Action::Shutdown,
        Action::FsAdd,
        Action::FsRemove,
        Action::FsList,
        Action::Snapshot,
        Action::DebugForbiddenSyscall,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Status => "status",
            Action::Shutdown => "shutdown",
            Action::FsAdd => "fs_add",
            Action::FsRemove => "fs_remove",
            Action::FsList => "fs_list",
            Action::Snapshot => "snapshot",
            Action::DebugForbiddenSyscall => "debug_forbidden_syscall",
        }
    }

    fn parse(name: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == name)
    }
}

/// Why a request line is not a request. The messages are the replies'.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("request is not JSON: {0}")]
    NotJson(String),
    #[error("request needs a string field \"action\"")]
    NoAction,
    #[error(
        "unknown action {0:?} (expected pause, resume, shutdown, status, snapshot, fs_add, \
         fs_remove, fs_list or debug_forbidden_syscall)"
    )]
    UnknownAction(String),
    /// A field of a known action is missing or of the wrong type.
    #[error("{}", .message)]
    Field { action: Action, message: String },
}

impl Request {
    /// Which action this is.
    pub fn action(&self) -> Action {
        match self {
            Request::Pause => Action::Pause,
            Request::Resume => Action::Resume,
            Request::Status => Action::Status,
            Request::Shutdown => Action::Shutdown,
            Request::FsAdd { .. } => Action::FsAdd,
            Request::FsRemove { .. } => Action::FsRemove,
            Request::FsList => Action::FsList,
            Request::Snapshot { .. } => Action::Snapshot,
            Request::DebugForbiddenSyscall => Action::DebugForbiddenSyscall,
        }
    }

    /// Reads one request line.
    pub fn parse(line: &[u8]) -> Result<Request, RequestError> {
        let value: Value =
            serde_json::from_slice(line).map_err(|e| RequestError::NotJson(e.to_string()))?;
        let name = value
            .get("action")
            .and_then(Value::as_str)
            .ok_or(RequestError::NoAction)?;
        let action =
            Action::parse(name).ok_or_else(|| RequestError::UnknownAction(name.to_owned()))?;
        let field = |key: &str| -> Result<String, RequestError> {
            value
                .get(key)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| RequestError::Field {
                    action,
                    message: format!("{} needs a string field {key:?}", action.as_str()),
                })
        };
        Ok(match action {
            Action::Pause => Request::Pause,
            Action::Resume => Request::Resume,
            Action::Status => Request::Status,
            Action::Shutdown => Request::Shutdown,
            Action::FsList => Request::FsList,
            Action::DebugForbiddenSyscall => Request::DebugForbiddenSyscall,
            Action::FsAdd => {
                let source = PathBuf::from(field("source")?);
                let target = field("target")?;
                let readonly = match value.get("readonly") {
                    None => false,
                    Some(Value::Bool(b)) => *b,
                    Some(_) => {
                        return Err(RequestError::Field {
                            action,
                            message: "fs_add: \"readonly\" must be true or false".into(),
                        })
                    }
                };
                Request::FsAdd {
                    source,
                    target,
                    readonly,
                }
            }
            Action::FsRemove => Request::FsRemove {
                target: field("target")?,
            },
            Action::Snapshot => Request::Snapshot {
                state: PathBuf::from(field("state")?),
                memory: PathBuf::from(field("memory")?),
            },
        })
    }

    /// The request as its line (without the newline).
    pub fn to_line(&self) -> String {
        // A derived Serialize of strings, paths and booleans: cannot fail
        // but for a path that is not UTF-8, which JSON cannot carry.
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"unencodable\":\"{e}\"}}"))
    }
}

/// A VM's run state, as replies name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VmState {
    Running,
    Paused,
    Stopping,
}

/// One bind mount of `fs_list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsMount {
    pub source: PathBuf,
    pub target: String,
    pub readonly: bool,
}

/// One reply. Fields that an action does not answer are left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<VmState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mounts: Option<Vec<FsMount>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub millis: Option<u64>,
}

impl Reply {
    /// `{"ok":true}`.
    pub fn ok() -> Reply {
        Reply {
            ok: true,
            ..Reply::default()
        }
    }

    /// `{"ok":true,"state":...}`.
    pub fn state(state: VmState) -> Reply {
        Reply {
            state: Some(state),
            ..Reply::ok()
        }
    }

    /// `{"ok":false,"error":...}`.
    pub fn error(message: impl Into<String>) -> Reply {
        Reply {
            ok: false,
            error: Some(message.into()),
            ..Reply::default()
        }
    }

    /// The reply as its line (without the newline).
    pub fn to_line(&self) -> String {
        serde_json::to_string(self)
            .unwrap_or_else(|e| format!("{{\"ok\":false,\"error\":\"{e}\"}}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn every_request() -> Vec<Request> {
        vec![
            Request::Pause,
            Request::Resume,
            Request::Status,
            Request::Shutdown,
            Request::FsAdd {
                source: "/host/data".into(),
                target: "mnt/data".into(),
                readonly: true,
            },
            Request::FsRemove {
                target: "mnt/data".into(),
            },
            Request::FsList,
            Request::Snapshot {
                state: "/t/state".into(),
                memory: "/t/memory".into(),
            },
            Request::DebugForbiddenSyscall,
        ]
    }

    #[test]
    fn every_request_reads_back_as_itself() {
        let requests = every_request();
        assert_eq!(requests.len(), Action::ALL.len());
        for request in requests {
            let line = request.to_line();
            assert_eq!(
                Request::parse(line.as_bytes()),
                Ok(request.clone()),
                "{line}"
            );
            let value: Value = serde_json::from_str(&line).unwrap();
            assert_eq!(value["action"], request.action().as_str());
        }
    }

    #[test]
    fn requests_are_the_documented_lines() {
        assert_eq!(Request::Pause.to_line(), r#"{"action":"pause"}"#);
        let add = Request::FsAdd {
            source: "/a".into(),
            target: "b".into(),
            readonly: false,
        };
        assert_eq!(
            serde_json::from_str::<Value>(&add.to_line()).unwrap(),
            json!({"action": "fs_add", "source": "/a", "target": "b", "readonly": false})
        );
        // readonly may be left out.
        assert_eq!(
            Request::parse(br#"{"action":"fs_add","source":"/a","target":"b"}"#),
            Ok(add)
        );
    }

    #[test]
    fn bad_requests_name_what_is_wrong() {
        let message = |line: &[u8]| Request::parse(line).unwrap_err().to_string();
        assert!(message(b"not json").starts_with("request is not JSON"));
        assert_eq!(message(b"{}"), "request needs a string field \"action\"");
        assert!(message(br#"{"action":"reboot"}"#).starts_with("unknown action \"reboot\""));
        assert_eq!(
            message(br#"{"action":"fs_add","target":"x"}"#),
            "fs_add needs a string field \"source\""
        );
        assert_eq!(
            message(br#"{"action":"fs_add","source":"/","target":"x","readonly":"yes"}"#),
            "fs_add: \"readonly\" must be true or false"
        );
        assert_eq!(
            Request::parse(br#"{"action":"snapshot","state":"/s"}"#),
            Err(RequestError::Field {
                action: Action::Snapshot,
                message: "snapshot needs a string field \"memory\"".into()
            })
        );
    }

    #[test]
    fn replies_leave_out_what_they_do_not_answer() {
        assert_eq!(Reply::ok().to_line(), r#"{"ok":true}"#);
        assert_eq!(
            Reply::state(VmState::Paused).to_line(),
            r#"{"ok":true,"state":"paused"}"#
        );
        assert_eq!(Reply::error("no").to_line(), r#"{"ok":false,"error":"no"}"#);
        let listed = Reply {
            mounts: Some(vec![]),
            ..Reply::ok()
        };
        assert_eq!(listed.to_line(), r#"{"ok":true,"mounts":[]}"#);
        let back: Reply = serde_json::from_str(&listed.to_line()).unwrap();
        assert_eq!(back, listed);
    }
}

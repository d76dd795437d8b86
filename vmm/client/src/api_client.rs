//! [`ApiClient`]: one connection to a VMM's API socket, typed by
//! [`crate::api`].

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::api::{FsMount, Reply, Request, VmState};

/// How long a reply may take unless [`ApiClient::with_timeout`] says
/// otherwise (a snapshot writes all of guest memory).
pub const DEFAULT_REPLY_TIMEOUT: Duration = Duration::from_secs(120);

/// Errors of talking to the API socket.
#[derive(Debug, thiserror::Error)]
pub enum ApiClientError {
    #[error("connect to the VMM's API socket {path}")]
    Connect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("VMM API {request}: send the request")]
    Send {
        request: String,
        #[source]
        source: io::Error,
    },
    #[error("VMM API {request}: read the reply")]
    Receive {
        request: String,
        #[source]
        source: io::Error,
    },
    #[error("VMM API {request}: the connection closed before a reply")]
    Closed { request: String },
    #[error("VMM API {request}: the reply {line:?} is not one")]
    DecodeReply {
        request: String,
        line: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("VMM API {request} refused: {message}")]
    Refused { request: String, message: String },
    #[error("VMM API {request}: the reply lacks {field}")]
    MissingField {
        request: String,
        field: &'static str,
    },
}

/// What a snapshot wrote, and how long it took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub state: VmState,
    pub state_bytes: u64,
    pub memory_bytes: u64,
    pub millis: u64,
}

/// A connection to a VMM's API socket.
pub struct ApiClient {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
}

impl ApiClient {
    /// Connects to `path`, retrying for at most `wait` while the VMM
    /// starts (its socket may not exist yet).
    pub fn connect(path: &Path, wait: Duration) -> Result<ApiClient, ApiClientError> {
        let deadline = Instant::now() + wait;
        let connected = loop {
            match UnixStream::connect(path) {
                Ok(stream) => break Ok(stream),
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(err) => break Err(err),
            }
        };
        let connect_error = |source| ApiClientError::Connect {
            path: path.to_owned(),
            source,
        };
        let stream = connected.map_err(connect_error)?;
        let reader = BufReader::new(stream.try_clone().map_err(connect_error)?);
        ApiClient { stream, reader }
            .with_timeout(DEFAULT_REPLY_TIMEOUT)
            .map_err(connect_error)
    }

    /// Replies must come within `timeout`.
    pub fn with_timeout(self, timeout: Duration) -> io::Result<ApiClient> {
        self.stream.set_read_timeout(Some(timeout))?;
        self.stream.set_write_timeout(Some(timeout))?;
        Ok(self)
    }

    /// Sends `request`; returns the reply, refusal or not.
    pub fn request(&mut self, request: &Request) -> Result<Reply, ApiClientError> {
        let line = request.to_line();
        writeln!(self.stream, "{line}").map_err(|source| ApiClientError::Send {
            request: line.clone(),
            source,
        })?;
        let mut reply = String::new();
        let read = self
            .reader
            .read_line(&mut reply)
            .map_err(|source| ApiClientError::Receive {
                request: line.clone(),
                source,
            })?;
        if read == 0 {
            return Err(ApiClientError::Closed { request: line });
        }
        serde_json::from_str(&reply).map_err(|source| ApiClientError::DecodeReply {
            request: line,
            line: reply.trim_end().to_owned(),
            source,
        })
    }

    /// Sends `request`; a refusal is an error.
    pub fn call(&mut self, request: &Request) -> Result<Reply, ApiClientError> {
        let reply = self.request(request)?;
        if !reply.ok {
            return Err(ApiClientError::Refused {
                request: request.to_line(),
                message: reply.error.unwrap_or_default(),
            });
        }
        Ok(reply)
    }

    fn state_of(&mut self, request: Request) -> Result<VmState, ApiClientError> {
        let reply = self.call(&request)?;
        reply.state.ok_or(ApiClientError::MissingField {
            request: request.to_line(),
            field: "state",
        })
    }

    /// Pauses every vCPU; the VM's state after.
    pub fn pause(&mut self) -> Result<VmState, ApiClientError> {
        self.state_of(Request::Pause)
    }

    pub fn resume(&mut self) -> Result<VmState, ApiClientError> {
        self.state_of(Request::Resume)
    }

    pub fn status(&mut self) -> Result<VmState, ApiClientError> {
        self.state_of(Request::Status)
    }

    /// Stops the VM; the VMM exits 0 after the reply.
    pub fn shutdown(&mut self) -> Result<VmState, ApiClientError> {
        self.state_of(Request::Shutdown)
    }

    /// Snapshots the paused VM into `state` and `memory`.
    pub fn snapshot(
        &mut self,
        state: &Path,
        memory: &Path,
    ) -> Result<SnapshotInfo, ApiClientError> {
        let request = Request::Snapshot {
            state: state.to_owned(),
            memory: memory.to_owned(),
        };
        let reply = self.call(&request)?;
        let missing = |field| ApiClientError::MissingField {
            request: request.to_line(),
            field,
        };
        Ok(SnapshotInfo {
            state: reply.state.ok_or_else(|| missing("state"))?,
            state_bytes: reply.state_bytes.ok_or_else(|| missing("state_bytes"))?,
            memory_bytes: reply.memory_bytes.ok_or_else(|| missing("memory_bytes"))?,
            millis: reply.millis.ok_or_else(|| missing("millis"))?,
        })
    }

    /// Bind-mounts `source` at `target` in the share.
    pub fn fs_add(
        &mut self,
        source: &Path,
        target: &str,
        readonly: bool,
    ) -> Result<(), ApiClientError> {
        self.call(&Request::FsAdd {
            source: source.to_owned(),
            target: target.to_owned(),
            readonly,
        })
        .map(drop)
    }

    pub fn fs_remove(&mut self, target: &str) -> Result<(), ApiClientError> {
        self.call(&Request::FsRemove {
            target: target.to_owned(),
        })
        .map(drop)
    }

    pub fn fs_list(&mut self) -> Result<Vec<FsMount>, ApiClientError> {
        let reply = self.call(&Request::FsList)?;
        reply.mounts.ok_or(ApiClientError::MissingField {
            request: Request::FsList.to_line(),
            field: "mounts",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// A server that answers each request line with the next of `replies`.
    fn serve(path: &Path, replies: Vec<&'static str>) -> std::thread::JoinHandle<Vec<String>> {
        let listener = UnixListener::bind(path).unwrap();
        std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut writer = stream;
            let mut seen = Vec::new();
            for reply in replies {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap() == 0 {
                    break;
                }
                seen.push(line.trim_end().to_owned());
                writeln!(writer, "{reply}").unwrap();
            }
            seen
        })
    }

    #[test]
    fn typed_calls_send_the_requests_and_read_the_replies() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let server = serve(
            &path,
            vec![
                r#"{"ok":true,"state":"paused"}"#,
                r#"{"ok":true,"state":"paused","state_bytes":10,"memory_bytes":20,"millis":3}"#,
                r#"{"ok":true,"mounts":[{"source":"/d","target":"t","readonly":true}]}"#,
                r#"{"ok":false,"error":"snapshot: cannot save the vCPUs"}"#,
                r#"{"ok":true}"#,
            ],
        );
        let mut api = ApiClient::connect(&path, Duration::from_secs(5)).unwrap();
        assert_eq!(api.pause().unwrap(), VmState::Paused);
        let info = api
            .snapshot(Path::new("/t/state"), Path::new("/t/memory"))
            .unwrap();
        assert_eq!(
            (info.state_bytes, info.memory_bytes, info.millis),
            (10, 20, 3)
        );
        let mounts = api.fs_list().unwrap();
        assert_eq!(mounts[0].target, "t");
        let refused = api.resume().unwrap_err();
        assert!(
            matches!(&refused, ApiClientError::Refused { message, .. } if message.contains("cannot save")),
            "{refused:?}"
        );
        let missing = api.status().unwrap_err();
        assert!(matches!(
            missing,
            ApiClientError::MissingField { field: "state", .. }
        ));
        drop(api);
        assert_eq!(
            server.join().unwrap(),
            [
                r#"{"action":"pause"}"#,
                r#"{"action":"snapshot","state":"/t/state","memory":"/t/memory"}"#,
                r#"{"action":"fs_list"}"#,
                r#"{"action":"resume"}"#,
                r#"{"action":"status"}"#,
            ]
        );
    }

    #[test]
    fn a_missing_socket_names_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("none.sock");
        let err = ApiClient::connect(&path, Duration::ZERO).err().unwrap();
        assert!(err.to_string().contains("none.sock"), "{err}");
    }

    #[test]
    fn a_reply_that_is_not_json_is_an_error_with_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let _server = serve(&path, vec!["garbage"]);
        let mut api = ApiClient::connect(&path, Duration::from_secs(5)).unwrap();
        let err = api.pause().unwrap_err();
        assert!(
            matches!(&err, ApiClientError::DecodeReply { line, .. } if line == "garbage"),
            "{err:?}"
        );
    }
}

//! The API socket (`--api-sock PATH`): pause, resume, shutdown and status.
//!
//! A unix stream socket carrying one JSON object per line each way:
//!
//! ```text
//! → {"action":"pause"}        ← {"ok":true,"state":"paused"}
//! → {"action":"resume"}       ← {"ok":true,"state":"running"}
//! → {"action":"status"}       ← {"ok":true,"state":"running"}
//! → {"action":"shutdown"}     ← {"ok":true,"state":"stopping"}   (then the VMM exits 0)
//! → anything else             ← {"ok":false,"error":"..."}
//! ```
//!
//! The socket file is removed when the server is dropped.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;

use serde_json::{json, Value};
use tracing::{debug, warn};

use crate::control::VcpuControl;

/// The longest request line accepted.
pub const MAX_REQUEST_BYTES: u64 = 4096;

/// Errors of serving the API.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0} exists and is not a socket")]
    PathInUse(PathBuf),
    #[error("remove the stale socket {0}")]
    RemoveStaleSocket(PathBuf, #[source] std::io::Error),
    #[error("bind the API socket {0}")]
    BindSocket(PathBuf, #[source] std::io::Error),
    #[error("spawn the API thread")]
    SpawnThread(#[source] std::io::Error),
}

/// A running API server.
pub struct ApiServer {
    path: PathBuf,
}

impl ApiServer {
    /// Binds `path` (replacing a stale socket) and serves in a thread.
    pub fn start(path: &Path, control: Arc<VcpuControl>) -> Result<Self, ApiError> {
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.file_type().is_socket() {
                return Err(ApiError::PathInUse(path.to_path_buf()));
            }
            std::fs::remove_file(path)
                .map_err(|e| ApiError::RemoveStaleSocket(path.to_path_buf(), e))?;
        }
        let listener =
            UnixListener::bind(path).map_err(|e| ApiError::BindSocket(path.to_path_buf(), e))?;
        thread::Builder::new()
            .name("vmm-api".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    match conn {
                        Ok(stream) => {
                            let control = Arc::clone(&control);
                            let spawned = thread::Builder::new()
                                .name("vmm-api-conn".into())
                                .spawn(move || serve(stream, &control));
                            if let Err(err) = spawned {
                                warn!(%err, "API: spawn a connection thread");
                            }
                        }
                        Err(err) => warn!(%err, "API: accept"),
                    }
                }
            })
            .map_err(ApiError::SpawnThread)?;
        Ok(Self {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if let Err(err) = std::fs::remove_file(&self.path) {
            warn!(path = %self.path.display(), %err, "API: remove the socket");
        }
    }
}

fn serve(stream: UnixStream, control: &VcpuControl) {
    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        Err(err) => {
            warn!(%err, "API: clone the connection");
            return;
        }
    };
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = Vec::new();
        let read = (&mut reader)
            .take(MAX_REQUEST_BYTES + 1)
            .read_until(b'\n', &mut line);
        match read {
            Ok(0) => return,
            Ok(_) => {}
            Err(err) => {
                debug!(%err, "API: read a request");
                return;
            }
        }
        let too_long = line.len() as u64 > MAX_REQUEST_BYTES;
        let (reply, then_stop) = if too_long {
            (
                error(&format!("request longer than {MAX_REQUEST_BYTES} bytes")),
                false,
            )
        } else {
            handle(&line, control)
        };
        let mut text = reply.to_string();
        text.push('\n');
        if let Err(err) = writer
            .write_all(text.as_bytes())
            .and_then(|()| writer.flush())
        {
            debug!(%err, "API: write a reply");
            return;
        }
        if then_stop {
            control.stop();
            return;
        }
        if too_long {
            return;
        }
    }
}

fn error(message: &str) -> Value {
    json!({ "ok": false, "error": message })
}

/// The reply to one request line, and whether to stop the VM after sending it.
fn handle(line: &[u8], control: &VcpuControl) -> (Value, bool) {
    let request: Value = match serde_json::from_slice(line) {
        Ok(v) => v,
        Err(err) => return (error(&format!("request is not JSON: {err}")), false),
    };
    let Some(action) = request.get("action").and_then(Value::as_str) else {
        return (error("request needs a string field \"action\""), false);
    };
    let ok = |state: &str| json!({ "ok": true, "state": state });
    match action {
        "status" => (ok(control.state().as_str()), false),
        "pause" => match control.pause() {
            Ok(()) => (ok("paused"), false),
            Err(err) => (error(&err.to_string()), false),
        },
        "resume" => match control.resume() {
            Ok(()) => (ok("running"), false),
            Err(err) => (error(&err.to_string()), false),
        },
        "shutdown" => (ok("stopping"), true),
        other => (
            error(&format!(
                "unknown action {other:?} (expected pause, resume, shutdown or status)"
            )),
            false,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(stream: &mut UnixStream, request: &str) -> Value {
        stream.write_all(request.as_bytes()).unwrap();
        let mut line = String::new();
        BufReader::new(stream.try_clone().unwrap())
            .read_line(&mut line)
            .unwrap();
        serde_json::from_str(&line).unwrap()
    }

    #[test]
    fn serves_status_errors_and_shutdown_then_removes_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let control = Arc::new(VcpuControl::new(0));
        let server = ApiServer::start(&path, Arc::clone(&control)).unwrap();
        let mut s = UnixStream::connect(&path).unwrap();
        assert_eq!(
            roundtrip(&mut s, "{\"action\":\"status\"}\n")["state"],
            "running"
        );
        let bad = roundtrip(&mut s, "not json\n");
        assert_eq!(bad["ok"], false);
        assert!(bad["error"]
            .as_str()
            .unwrap()
            .starts_with("request is not JSON"));
        let unknown = roundtrip(&mut s, "{\"action\":\"reboot\"}\n");
        assert!(unknown["error"]
            .as_str()
            .unwrap()
            .contains("unknown action \"reboot\""));
        assert_eq!(roundtrip(&mut s, "{}\n")["ok"], false);
        // With no vCPUs, pause completes at once.
        assert_eq!(
            roundtrip(&mut s, "{\"action\":\"pause\"}\n")["state"],
            "paused"
        );
        assert_eq!(
            roundtrip(&mut s, "{\"action\":\"resume\"}\n")["state"],
            "running"
        );
        assert_eq!(
            roundtrip(&mut s, "{\"action\":\"shutdown\"}\n")["state"],
            "stopping"
        );
        // The reply goes out first; the stop follows at once.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while control.state() != crate::control::RunState::Stopping {
            assert!(
                std::time::Instant::now() < deadline,
                "shutdown never stopped the VM"
            );
            thread::sleep(std::time::Duration::from_millis(1));
        }
        drop(server);
        assert!(!path.exists());
    }

    #[test]
    fn an_overlong_request_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let _server = ApiServer::start(&path, Arc::new(VcpuControl::new(0))).unwrap();
        let mut s = UnixStream::connect(&path).unwrap();
        let long = format!("{}\n", "x".repeat(MAX_REQUEST_BYTES as usize + 10));
        let reply = roundtrip(&mut s, &long);
        assert!(reply["error"]
            .as_str()
            .unwrap()
            .starts_with("request longer than"));
    }

    #[test]
    fn a_regular_file_at_the_path_is_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("precious");
        std::fs::write(&path, "data").unwrap();
        let err = ApiServer::start(&path, Arc::new(VcpuControl::new(0)))
            .err()
            .unwrap();
        assert!(matches!(err, ApiError::PathInUse(_)));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "data");
    }
}

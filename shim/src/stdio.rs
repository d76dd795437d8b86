//! A process's stdio: containerd's FIFOs on the host, pumped to and from
//! the agent's streams by a thread each, on connections of their own.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::Duration;

use vessel_agent_protocol::{AgentClient, ClientError};

/// Bytes per ReadStdout/ReadStderr call.
const READ_CHUNK: u32 = 32 * 1024;
/// Bytes per WriteStdin call: requests that fit one vsock packet
/// (agent/README.md).
const STDIN_CHUNK: usize = 3000;
/// Reads of a process's output block until data or EOF: no timeout.
pub const STREAM_CALL_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

/// Why a process's stdio cannot be pumped.
#[derive(Debug, thiserror::Error)]
pub enum StdioError {
    #[error("stdio {path:?}: the {scheme}:// log driver is not supported")]
    UnsupportedLogDriver { path: String, scheme: String },
    #[error("opening the FIFO {path}")]
    OpenFifo {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading the FIFO {path}")]
    ReadFifo {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing to the process's stdin")]
    WriteStdin(#[source] ClientError),
    #[error("starting the {stream} pump of {id}/{exec_id}")]
    SpawnPump {
        stream: &'static str,
        id: String,
        exec_id: String,
        #[source]
        source: std::io::Error,
    },
}

/// containerd's stdio paths for one process (empty: none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StdioPaths {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

/// Which output stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Stdout,
    Stderr,
}

impl Output {
    fn name(self) -> &'static str {
        match self {
            Output::Stdout => "stdout",
            Output::Stderr => "stderr",
        }
    }
}

/// A FIFO path containerd gave, or `None` for none. Other schemes
/// (`binary://`, `file://`) are log drivers the vessel runtime does not
/// offer.
fn fifo(path: &str) -> Result<Option<PathBuf>, StdioError> {
    if path.is_empty() {
        return Ok(None);
    }
    if let Some((scheme, _)) = path.split_once("://") {
        if scheme != "fifo" {
            return Err(StdioError::UnsupportedLogDriver {
                path: path.to_owned(),
                scheme: scheme.to_owned(),
            });
        }
    }
    Ok(Some(PathBuf::from(
        path.strip_prefix("fifo://").unwrap_or(path),
    )))
}

/// Opens an output FIFO for writing without waiting for a reader: read-write,
/// so a reader that goes away never raises EPIPE here.
pub fn open_output(path: &str) -> Result<Option<File>, StdioError> {
    let Some(path) = fifo(path)? else {
        return Ok(None);
    };
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map(Some)
        .map_err(|source| StdioError::OpenFifo { path, source })
}

/// Checks the stdin path; the pump opens it (that open waits for
/// containerd's writer).
pub fn stdin_path(path: &str) -> Result<Option<PathBuf>, StdioError> {
    fifo(path)
}

/// Copies a process's `which` output into `fifo` until EOF.
pub fn spawn_output(
    agent: AgentClient,
    id: String,
    exec_id: String,
    which: Output,
    mut fifo: File,
) -> Result<JoinHandle<()>, StdioError> {
    let spawn_error = spawn_error(which.name(), &id, &exec_id);
    std::thread::Builder::new()
        .name(format!("{which:?}-{id}"))
        .spawn(move || loop {
            let data = match which {
                Output::Stdout => agent.read_stdout(&id, &exec_id, READ_CHUNK),
                Output::Stderr => agent.read_stderr(&id, &exec_id, READ_CHUNK),
            };
            match data {
                Ok(data) if data.is_empty() => return,
                Ok(data) => {
                    if let Err(error) = fifo.write_all(&data) {
                        tracing::warn!(%id, %exec_id, ?which, %error, "cannot write to containerd's FIFO");
                        return;
                    }
                }
                Err(error) => {
                    tracing::debug!(%id, %exec_id, ?which, %error, "output stream ended");
                    return;
                }
            }
        })
        .map_err(spawn_error)
}

/// The error of a pump thread that did not start.
fn spawn_error(
    stream: &'static str,
    id: &str,
    exec_id: &str,
) -> impl FnOnce(std::io::Error) -> StdioError {
    let (id, exec_id) = (id.to_owned(), exec_id.to_owned());
    move |source| StdioError::SpawnPump {
        stream,
        id,
        exec_id,
        source,
    }
}

/// Copies containerd's stdin FIFO into the process until EOF, then closes
/// the process's stdin.
pub fn spawn_stdin(
    agent: AgentClient,
    id: String,
    exec_id: String,
    path: PathBuf,
) -> Result<JoinHandle<()>, StdioError> {
    let spawn_error = spawn_error("stdin", &id, &exec_id);
    std::thread::Builder::new()
        .name(format!("stdin-{id}"))
        .spawn(move || {
            if let Err(error) = pump_stdin(&agent, &id, &exec_id, &path) {
                tracing::warn!(%id, %exec_id, %error, "stdin stream failed");
            }
            if let Err(error) = agent.close_stdin(&id, &exec_id) {
                tracing::debug!(%id, %exec_id, %error, "CloseStdin after EOF");
            }
        })
        .map_err(spawn_error)
}

fn pump_stdin(agent: &AgentClient, id: &str, exec_id: &str, path: &Path) -> Result<(), StdioError> {
    // Blocks until containerd opens its end for writing.
    let mut fifo = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(|source| StdioError::OpenFifo {
            path: path.to_owned(),
            source,
        })?;
    let mut buf = vec![0u8; STDIN_CHUNK];
    loop {
        let n = match fifo.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(StdioError::ReadFifo {
                    path: path.to_owned(),
                    source,
                })
            }
        };
        let mut done = 0;
        while done < n {
            let took = agent
                .write_stdin(id, exec_id, &buf[done..n])
                .map_err(StdioError::WriteStdin)? as usize;
            if took == 0 {
                return Ok(());
            }
            done += took.min(n - done);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_paths_and_schemes() {
        assert_eq!(fifo("").unwrap(), None);
        assert_eq!(
            fifo("/run/x/a-stdout").unwrap(),
            Some(PathBuf::from("/run/x/a-stdout"))
        );
        assert_eq!(
            fifo("fifo:///run/x").unwrap(),
            Some(PathBuf::from("/run/x"))
        );
        assert!(matches!(
            fifo("binary:///usr/bin/logger?a=b"),
            Err(StdioError::UnsupportedLogDriver { .. })
        ));
    }

    #[test]
    fn an_output_fifo_opens_without_a_reader() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let mut f = open_output(path.to_str().unwrap()).unwrap().unwrap();
        f.write_all(b"x").unwrap();
        assert!(open_output(dir.path().join("missing").to_str().unwrap()).is_err());
    }
}

//! A client of vessel-vmm's API socket: one JSON object per line each way.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

/// How long connecting and each reply may take.
const TIMEOUT: Duration = Duration::from_secs(60);

/// A connection to the API socket.
pub struct VmmApi {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
}

impl VmmApi {
    /// Connects, retrying while the VMM starts (at most a minute).
    pub fn connect(path: &Path) -> Result<Self> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            match UnixStream::connect(path) {
                Ok(stream) => {
                    stream.set_read_timeout(Some(TIMEOUT))?;
                    let reader = BufReader::new(stream.try_clone()?);
                    return Ok(Self { stream, reader });
                }
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(err) => return Err(err).context("connect to the API socket"),
            }
        }
    }

    /// Sends `request`; returns the reply, `ok` or not.
    pub fn request(&mut self, request: &Value) -> Result<Value> {
        writeln!(self.stream, "{request}")?;
        let mut line = String::new();
        self.reader
            .read_line(&mut line)
            .with_context(|| format!("reply to {request}"))?;
        serde_json::from_str(&line).with_context(|| format!("reply {line:?}"))
    }

    /// Sends `request`; an error unless the reply is `ok`.
    pub fn call_json(&mut self, request: &Value) -> Result<Value> {
        let reply = self.request(request)?;
        if reply["ok"] != true {
            bail!("{request} failed: {reply}");
        }
        Ok(reply)
    }

    /// `{"action": action}`, which must succeed.
    pub fn call(&mut self, action: &str) -> Result<Value> {
        self.call_json(&json!({ "action": action }))
    }
}

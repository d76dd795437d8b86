//! A container's stdio through the agent: a terminal with a window size
//! set by TtyWinResize, a byte stream through `cat` (WriteStdin in 3,000-byte chunks,
//! CloseStdin, ReadStdout on another connection at the same time), and
//! back-pressure (output nobody reads for a while is held, not dropped).
//!
//! One VM (2 vCPUs, 512 MiB) serves every case. Every byte crosses the
//! guest kernel several times, at about 0.6 MB/s where its copies are
//! emulated, so the stream is 256 KiB instead of 10 MiB (the benchmark,
//! `bench_container --stdin-mib`, moves the 10 MiB) and the back-pressure
//! output is 200000 bytes. No time is asserted.

use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context, Result};
use serde_json::json;
use vessel_agent_protocol::AgentClient;
use vessel_integration::agent::{
    container_spec, read_to_eof, write_stdin_all, Stream, STDIN_CHUNK,
};
use vessel_integration::cases::SPOILED_BYTES;
use vessel_integration::{AgentVm, Cases, Container};

/// Per call; WaitProcess and reads of a live process block up to this.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Bytes through `cat` (10 MiB in the benchmark).
const STDIN_BYTES: usize = 256 * 1024;
/// What the back-pressure case prints.
const FLOOD_BYTES: usize = 200_000;

#[test]
fn container_stdio() -> Result<()> {
    let vm = AgentVm::restore(CALL_TIMEOUT)?;
    let client = vm.client();
    let mut cases = Cases::new().retry_host_crashes(|| vm.crashes());
    cases.run("terminal and window size", || tty(client));
    cases.run("stdin stream through cat", || stdin_stream(&vm));
    cases.run("back-pressure", || back_pressure(client));
    cases.finish(&vm)
}

fn tty(client: &AgentClient) -> Result<()> {
    // The shell waits for a line, so the size is set before stty reads it.
    let mut spec = container_spec(&["sh", "-c", "read line; stty size"]);
    spec["process"]["terminal"] = json!(true);
    let c = Container::create(client, "tty", &spec)?;
    c.start()?;
    client
        .tty_win_resize(c.id(), "", 33, 101)
        .context("TtyWinResize")?;
    let n = client
        .write_stdin(c.id(), "", b"go\n")
        .context("WriteStdin")?;
    ensure!(n == 3, "WriteStdin took {n} of 3 bytes");
    // The terminal echoes "go" and ends lines with \r\n.
    let out = read_to_eof(client, c.id(), "", Stream::Stdout, 4096)?;
    let text = String::from_utf8_lossy(&out);
    let status = c.wait("")?;
    ensure!(
        text.contains("33 101") && status == 0,
        "stty size on the terminal printed {text:?} (want 33 101), exit status {status}"
    );
    c.remove()
}

/// `len` bytes from a fixed xorshift generator: every value of a byte
/// occurs, so a stream that mangles any (a terminal would) shows.
fn pseudo_random(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 32) as u8
        })
        .collect()
}

fn stdin_stream(vm: &AgentVm) -> Result<()> {
    let client = vm.client();
    let c = Container::create(client, "cat", &container_spec(&["cat"]))?;
    c.start()?;
    // The reader has its own connection: its ReadStdout blocks while the
    // writes go on.
    let reader_client = vm.connect(CALL_TIMEOUT)?;
    let id = c.id().to_owned();
    let reader = std::thread::spawn(move || {
        read_to_eof(&reader_client, &id, "", Stream::Stdout, 2 * STDIN_BYTES)
    });
    let data = pseudo_random(STDIN_BYTES);
    let written = write_stdin_all(client, c.id(), "", &data, STDIN_CHUNK)
        .and_then(|()| Ok(client.close_stdin(c.id(), "")?));
    let read = reader
        .join()
        .map_err(|_| anyhow!("the reader thread panicked"))?;
    written?;
    let got = read?;
    if got != data {
        let first = got.iter().zip(&data).position(|(a, b)| a != b);
        // The same length with other bytes is the emulated-CPL0 host's
        // spoiled copy (Cases retries it there once); a short or long
        // stream is ours.
        let spoiled = match got.len() == data.len() {
            true => format!(", {SPOILED_BYTES}"),
            false => String::new(),
        };
        anyhow::bail!(
            "cat returned {} of {} bytes{spoiled}; first difference at {first:?}",
            got.len(),
            data.len()
        );
    }
    let status = c.wait("")?;
    ensure!(status == 0, "cat ended with {status}");
    c.remove()
}

fn back_pressure(client: &AgentClient) -> Result<()> {
    let script = format!("head -c {FLOOD_BYTES} /dev/zero | tr '\\0' x");
    let c = Container::create(client, "flood", &container_spec(&["sh", "-c", &script]))?;
    c.start()?;
    // Nobody reads for a while: the writer must wait, not lose bytes.
    std::thread::sleep(Duration::from_secs(2));
    let out = read_to_eof(client, c.id(), "", Stream::Stdout, 2 * FLOOD_BYTES)?;
    if out.len() != FLOOD_BYTES {
        let err = read_to_eof(client, c.id(), "", Stream::Stderr, FLOOD_BYTES)?;
        bail!(
            "read {} of {FLOOD_BYTES} bytes; exit status {}, stderr {:?}",
            out.len(),
            c.wait("")?,
            String::from_utf8_lossy(&err)
        );
    }
    ensure!(
        out.iter().all(|&b| b == b'x'),
        "the output holds bytes other than 'x'"
    );
    let status = c.wait("")?;
    ensure!(status == 0, "exit status {status}");
    c.remove()
}

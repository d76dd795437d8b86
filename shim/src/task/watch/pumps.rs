//! A process's stdio pumps, each on a connection of its own to the agent.

use std::thread::JoinHandle;

use crate::stdio::{self, Output, StdioPaths, STREAM_CALL_TIMEOUT};
use crate::task::TaskError;
use crate::vm::Sandbox;

/// Starts the stdio pumps of a process that exists in the guest. The
/// output pumps are returned (an exit waits for them); the stdin pump ends
/// at containerd's EOF or with the process.
pub(in crate::task) fn start(
    sandbox: &Sandbox,
    id: &str,
    exec_id: &str,
    stdio: &StdioPaths,
) -> Result<Vec<JoinHandle<()>>, TaskError> {
    let mut pumps = Vec::new();
    for (which, path) in [
        (Output::Stdout, &stdio.stdout),
        (Output::Stderr, &stdio.stderr),
    ] {
        if let Some(fifo) = stdio::open_output(path)? {
            let agent = sandbox.connect(STREAM_CALL_TIMEOUT)?;
            let pump = stdio::spawn_output(agent, id.to_owned(), exec_id.to_owned(), which, fifo)?;
            pumps.push(pump);
        }
    }
    if let Some(path) = stdio::stdin_path(&stdio.stdin)? {
        let agent = sandbox.connect(STREAM_CALL_TIMEOUT)?;
        stdio::spawn_stdin(agent, id.to_owned(), exec_id.to_owned(), path)?;
    }
    Ok(pumps)
}

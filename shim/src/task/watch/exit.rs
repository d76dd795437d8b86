//! The exit waiter of a process: waits in the guest for its exit, then
//! records it once its output has drained, and tells containerd.

use std::sync::Weak;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use crate::domain::{Exit, ProcessStatus, TaskEvent, VM_GONE_STATUS};
use crate::stdio::STREAM_CALL_TIMEOUT;
use crate::task::{Shared, TaskError};
use crate::vm::Sandbox;

/// How long an exit waits for its output pumps to drain.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Waits in the guest for a process's exit, then records it in `shared`.
/// Started once the process's pumps are stored, so that its exit drains
/// them.
pub(in crate::task) fn spawn_waiter(
    sandbox: &Sandbox,
    shared: Weak<Shared>,
    id: &str,
    exec_id: &str,
) -> Result<(), TaskError> {
    let agent = sandbox.connect(STREAM_CALL_TIMEOUT)?;
    let (id, exec_id) = (id.to_owned(), exec_id.to_owned());
    let spawn_error = {
        let (id, exec_id) = (id.clone(), exec_id.clone());
        move |source| TaskError::SpawnWaiter {
            id,
            exec_id,
            source,
        }
    };
    std::thread::Builder::new()
        .name(format!("wait-{id}"))
        .spawn(move || {
            let status = match agent.wait_process(&id, &exec_id) {
                Ok(resp) => crate::convert::exit_status(&resp),
                Err(error) => {
                    tracing::info!(%id, %exec_id, %error, "WaitProcess failed: the VM is gone");
                    VM_GONE_STATUS
                }
            };
            if let Some(shared) = shared.upgrade() {
                record_exit(&shared, &id, &exec_id, status);
            }
        })
        .map_err(spawn_error)?;
    Ok(())
}

/// Records an exit once output has drained, and tells containerd. A
/// process already gone or already exited is left as it is.
pub(super) fn record_exit(shared: &Shared, id: &str, exec_id: &str, status: u32) {
    let pumps = match shared.process(id, exec_id) {
        Ok(mut found) => std::mem::take(&mut found.get().pumps),
        Err(_) => return,
    };
    join_within(pumps, DRAIN_TIMEOUT);
    let exit = Exit {
        status,
        at: SystemTime::now(),
    };
    let pid = {
        let mut inner = shared.lock();
        let Some(container) = inner.containers.get_mut(id) else {
            return;
        };
        let pid = container.sandbox.vmm_pid();
        let Some(process) = container.processes.get_mut(exec_id) else {
            return;
        };
        if process.exited().is_some() {
            return;
        }
        process.status = ProcessStatus::Stopped;
        process.exit.send_replace(Some(exit));
        pid
    };
    tracing::info!(%id, %exec_id, status, "process exited");
    shared.emit(TaskEvent::Exit {
        id: id.to_owned(),
        exec_id: exec_id.to_owned(),
        pid,
        exit,
    });
}

/// Joins `pumps`, giving up on those still running after `timeout`.
fn join_within(pumps: Vec<JoinHandle<()>>, timeout: Duration) {
    let deadline = std::time::Instant::now() + timeout;
    for pump in pumps {
        while !pump.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if pump.is_finished() {
            let _ = pump.join();
        } else {
            tracing::warn!("an output stream is still open after the exit; leaving it");
        }
    }
}

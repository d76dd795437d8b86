//! The sandbox's OOM long poll: each OOM kill in the guest becomes a
//! TaskOOM event.

use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::domain::TaskEvent;
use crate::stdio::STREAM_CALL_TIMEOUT;
use crate::task::Shared;
use crate::vm::Sandbox;

/// Polls the agent's GetOOMEvent until the VM or `shared` is gone. Without
/// a connection or a thread, the sandbox gets no OOM events (logged).
pub(in crate::task) fn spawn(sandbox: &Arc<Sandbox>, shared: Weak<Shared>) {
    let agent = match sandbox.connect(STREAM_CALL_TIMEOUT) {
        Ok(agent) => agent,
        Err(error) => {
            tracing::warn!(%error, "no OOM events for this sandbox");
            return;
        }
    };
    let exited = sandbox.exited();
    let spawned = std::thread::Builder::new()
        .name("oom".into())
        .spawn(move || loop {
            match agent.get_oom_event() {
                Ok(id) => match shared.upgrade() {
                    Some(shared) => {
                        tracing::info!(%id, "OOM kill in the guest");
                        shared.emit(TaskEvent::Oom { id });
                    }
                    None => return,
                },
                Err(_) if *exited.borrow() => return,
                Err(error) => {
                    tracing::debug!(%error, "GetOOMEvent");
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        });
    if let Err(error) = spawned {
        tracing::warn!(%error, "no OOM events for this sandbox");
    }
}

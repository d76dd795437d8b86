//! The VM's death: every process still running exits then, with
//! [`VM_GONE_STATUS`], and the shim's log says why the VM ended.

use std::sync::Weak;

use super::exit::record_exit;
use crate::domain::VM_GONE_STATUS;
use crate::task::Shared;

/// What the sandbox runs once its VMM has exited.
pub(in crate::task) fn on_exit(shared: Weak<Shared>) -> Box<dyn FnOnce(&str) + Send> {
    Box::new(move |reason| {
        if let Some(shared) = shared.upgrade() {
            vm_exited(&shared, reason);
        }
    })
}

/// The VMM died (`reason` says why): every process still running exits
/// now.
fn vm_exited(shared: &Shared, reason: &str) {
    let running: Vec<(String, String)> = shared
        .lock()
        .containers
        .iter()
        .flat_map(|(id, c)| {
            c.processes
                .values()
                .filter(|p| p.exited().is_none())
                .map(move |p| (id.clone(), p.exec_id.clone()))
        })
        .collect();
    if !running.is_empty() {
        tracing::warn!(
            processes = running.len(),
            reason,
            "the VM exited; its processes are reported killed"
        );
    }
    for (id, exec_id) in running {
        record_exit(shared, &id, &exec_id, VM_GONE_STATUS);
    }
}

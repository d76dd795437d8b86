//! Delete: an exec's record, or a stopped container with its rootfs and
//! volumes (the agent's RemoveContainer, then the share), and the VM with
//! the last container.

use std::path::PathBuf;
use std::time::SystemTime;

use super::error::TaskError;
use super::{Tasks, REMOVE_TIMEOUT_SECS};
use crate::domain::{Exit, ProcessStatus, TaskEvent, VM_GONE_STATUS};
use crate::vm::VmError;

impl Tasks {
    /// Delete. Returns the pid and exit containerd reports.
    pub fn delete(&self, id: &str, exec_id: &str) -> Result<(u32, Exit), TaskError> {
        let sandbox = self.shared.sandbox_of(id)?;
        let exit = {
            let mut found = self.shared.process(id, exec_id)?;
            let process = found.get();
            match (process.status, process.exited()) {
                (_, Some(exit)) => exit,
                (ProcessStatus::Created, None) if !exec_id.is_empty() => Exit {
                    status: 0,
                    at: SystemTime::now(),
                },
                (ProcessStatus::Created, None) => Exit {
                    status: VM_GONE_STATUS,
                    at: SystemTime::now(),
                },
                _ => {
                    return Err(TaskError::ProcessRunning {
                        id: id.to_owned(),
                        exec_id: exec_id.to_owned(),
                    })
                }
            }
        };
        let pid = sandbox.vmm_pid();
        if !exec_id.is_empty() {
            if let Some(c) = self.shared.lock().containers.get_mut(id) {
                c.processes.remove(exec_id);
            }
            return Ok((pid, exit));
        }
        if let Ok(agent) = sandbox.agent() {
            if let Err(error) = agent.remove_container(id, REMOVE_TIMEOUT_SECS) {
                tracing::warn!(%id, %error, "RemoveContainer");
            }
        }
        let _ = sandbox.with_share(|share| {
            share.remove(&PathBuf::from(id));
            Ok::<_, VmError>(())
        });
        let last = {
            let mut inner = self.shared.lock();
            inner.containers.remove(id);
            inner.containers.is_empty()
        };
        self.shared.emit(TaskEvent::Delete {
            id: id.to_owned(),
            pid,
            exit,
        });
        if last {
            self.shared.end_sandbox();
        }
        Ok((pid, exit))
    }
}

//! Start: a container's init (the agent's StartContainer) or a registered
//! exec (ExecProcess, then its stdio pumps and exit waiter).

use std::sync::Arc;

use super::error::TaskError;
use super::{watch, Tasks};
use crate::domain::{ProcessStatus, TaskEvent};

impl Tasks {
    /// Start. Returns the pid containerd sees.
    pub fn start(&self, id: &str, exec_id: &str) -> Result<u32, TaskError> {
        let sandbox = self.shared.sandbox_of(id)?;
        let agent = sandbox.agent()?;
        if exec_id.is_empty() {
            {
                let mut found = self.shared.process(id, "")?;
                if found.get().status != ProcessStatus::Created {
                    return Err(TaskError::ContainerStarted(id.to_owned()));
                }
            }
            agent.start_container(id).map_err(TaskError::CallAgent)?;
            let mut found = self.shared.process(id, "")?;
            let init = found.get();
            // A process that already exited stays Stopped.
            if init.exited().is_none() {
                init.status = ProcessStatus::Running;
            }
            drop(found);
            self.shared.emit(TaskEvent::Start {
                id: id.to_owned(),
                pid: sandbox.vmm_pid(),
            });
            return Ok(sandbox.vmm_pid());
        }
        let (spec, terminal) = {
            let mut found = self.shared.process(id, exec_id)?;
            let process = found.get();
            if process.status != ProcessStatus::Created {
                return Err(TaskError::ExecStarted {
                    id: id.to_owned(),
                    exec_id: exec_id.to_owned(),
                });
            }
            (process.spec.clone(), process.stdio.terminal)
        };
        let guest_pid = agent
            .exec_process(id, exec_id, &spec, terminal)
            .map_err(TaskError::CallAgent)?;
        let stdio = {
            let mut found = self.shared.process(id, exec_id)?;
            let process = found.get();
            process.guest_pid = guest_pid;
            process.status = ProcessStatus::Running;
            process.stdio.clone()
        };
        let pumps = watch::pumps::start(&sandbox, id, exec_id, &stdio)?;
        self.shared.process(id, exec_id)?.get().pumps = pumps;
        watch::exit::spawn_waiter(&sandbox, Arc::downgrade(&self.shared), id, exec_id)?;
        self.shared.emit(TaskEvent::ExecStarted {
            id: id.to_owned(),
            exec_id: exec_id.to_owned(),
            pid: sandbox.vmm_pid(),
        });
        Ok(sandbox.vmm_pid())
    }
}

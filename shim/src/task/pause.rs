//! Pause and Resume: the agent freezes or thaws the container's cgroup.

use super::error::TaskError;
use super::Tasks;
use crate::domain::{ProcessStatus, TaskEvent};

impl Tasks {
    /// Pause (true) or resume (false) a container.
    pub fn pause(&self, id: &str, pause: bool) -> Result<(), TaskError> {
        let sandbox = self.shared.sandbox_of(id)?;
        let agent = sandbox.agent()?;
        if pause {
            agent.pause_container(id).map_err(TaskError::CallAgent)?;
        } else {
            agent.resume_container(id).map_err(TaskError::CallAgent)?;
        }
        let mut found = self.shared.process(id, "")?;
        let init = found.get();
        if init.exited().is_none() {
            init.status = if pause {
                ProcessStatus::Paused
            } else {
                ProcessStatus::Running
            };
        }
        drop(found);
        self.shared.emit(if pause {
            TaskEvent::Paused { id: id.to_owned() }
        } else {
            TaskEvent::Resumed { id: id.to_owned() }
        });
        Ok(())
    }
}

//! Exec: registers a process of a container, to start later (Start).

use super::error::{check_id, TaskError};
use super::Tasks;
use crate::domain::{ExecProcess, Process, TaskEvent};
use crate::spec;

impl Tasks {
    /// Exec.
    pub fn exec(&self, req: ExecProcess) -> Result<(), TaskError> {
        let ExecProcess {
            id,
            exec_id,
            stdio,
            spec,
        } = req;
        check_id("exec", &exec_id)?;
        spec::check_process(&exec_id, &spec)?;
        {
            let mut inner = self.shared.lock();
            let container = inner
                .containers
                .get_mut(&id)
                .ok_or_else(|| TaskError::ContainerNotFound(id.clone()))?;
            if exec_id.is_empty() || container.processes.contains_key(&exec_id) {
                return Err(TaskError::ProcessExists { id, exec_id });
            }
            container
                .processes
                .insert(exec_id.clone(), Process::new(&exec_id, stdio, spec));
        }
        self.shared.emit(TaskEvent::ExecAdded { id, exec_id });
        Ok(())
    }
}

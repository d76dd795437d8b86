//! Kill: a signal to one process, or to all of a container's (the agent's
//! SignalProcess).

use super::error::TaskError;
use super::Tasks;

impl Tasks {
    /// Kill. A process that has exited is gone, unless `all` is asked.
    pub fn kill(&self, id: &str, exec_id: &str, signal: u32, all: bool) -> Result<(), TaskError> {
        let sandbox = self.shared.sandbox_of(id)?;
        let exited = self.shared.process(id, exec_id)?.get().exited();
        if exited.is_some() && !all {
            return Err(TaskError::ProcessNotFound {
                id: id.to_owned(),
                exec_id: exec_id.to_owned(),
            });
        }
        sandbox
            .agent()?
            .signal_process(id, exec_id, signal, all)
            .map_err(TaskError::CallAgent)
    }
}

//! Pids: the guest pids of a container's processes (the agent's
//! ListProcesses).

use super::error::TaskError;
use super::Tasks;
use crate::convert;

impl Tasks {
    /// Pids.
    pub fn pids(&self, id: &str) -> Result<Vec<u32>, TaskError> {
        let list = self
            .shared
            .sandbox_of(id)?
            .agent()?
            .list_processes(id)
            .map_err(TaskError::CallAgent)?;
        Ok(convert::guest_pids(&list))
    }
}

//! State: one process's bundle, pid, status, stdio and exit.

use super::error::TaskError;
use super::Tasks;
use crate::domain::ProcessState;

impl Tasks {
    /// State.
    pub fn state(&self, id: &str, exec_id: &str) -> Result<ProcessState, TaskError> {
        let mut found = self.shared.process(id, exec_id)?;
        let pid = found.sandbox_pid();
        let bundle = found.bundle();
        let process = found.get();
        Ok(ProcessState {
            bundle,
            pid,
            status: process.status,
            stdio: process.stdio.clone(),
            exit: process.exited(),
        })
    }
}

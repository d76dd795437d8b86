//! CloseIO (the process's stdin) and ResizePty: calls on a running
//! process's stdio. The pumps themselves are in `watch/pumps.rs`.

use super::error::TaskError;
use super::Tasks;

impl Tasks {
    /// CloseIO: the process reads EOF once its stdin is consumed.
    pub fn close_stdin(&self, id: &str, exec_id: &str) -> Result<(), TaskError> {
        self.shared.process(id, exec_id)?;
        self.shared
            .sandbox_of(id)?
            .agent()?
            .close_stdin(id, exec_id)
            .map_err(TaskError::CallAgent)
    }

    /// ResizePty: the window size of the process's terminal.
    pub fn resize(
        &self,
        id: &str,
        exec_id: &str,
        rows: u32,
        columns: u32,
    ) -> Result<(), TaskError> {
        self.shared.process(id, exec_id)?;
        self.shared
            .sandbox_of(id)?
            .agent()?
            .tty_win_resize(id, exec_id, rows, columns)
            .map_err(TaskError::CallAgent)
    }
}

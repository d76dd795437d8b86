//! Wait: a process's exit, once it has one. The service awaits the
//! returned watch; the exit waiter (`watch/exit.rs`) fills it.

use tokio::sync::watch;

use super::error::TaskError;
use super::Tasks;
use crate::domain::Exit;

impl Tasks {
    /// The exit of a process, once it has one.
    pub fn exit_watch(
        &self,
        id: &str,
        exec_id: &str,
    ) -> Result<watch::Receiver<Option<Exit>>, TaskError> {
        Ok(self.shared.process(id, exec_id)?.get().exit.subscribe())
    }
}

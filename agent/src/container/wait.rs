//! WaitProcess: the exit status as containerd counts it, for any number of
//! waiters.

use std::time::SystemTime;

use super::error::ContainerError;
use super::Engine;
use crate::reaper::exit_code;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessExit {
    /// The exit code, or 128 + the killing signal.
    pub status: i32,
    /// When.
    pub at: SystemTime,
}

impl Engine {
    /// WaitProcess: blocks until the process exits.
    pub fn wait(&self, id: &str, exec_id: &str) -> Result<ProcessExit, ContainerError> {
        let process = self.get(id)?.process(exec_id)?;
        let exit = process.exit.wait();
        Ok(ProcessExit {
            status: exit_code(exit.status),
            at: exit.at,
        })
    }
}

//! ListProcesses: every process in the container's cgroup, with the exec id
//! of those the agent started.

use super::error::ContainerError;
use super::{lock, Engine};

/// One process of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessEntry {
    /// Its pid in the guest.
    pub pid: i32,
    /// Its exec id; empty for the init and for processes it started.
    pub exec_id: String,
}

impl Engine {
    /// ListProcesses.
    pub fn processes(&self, id: &str) -> Result<Vec<ProcessEntry>, ContainerError> {
        let container = self.get(id)?;
        let execs: Vec<(i32, String)> = lock(&container.execs)
            .values()
            .map(|p| (p.pid, p.exec_id.clone()))
            .collect();
        let mut pids = container.cgroup.pids()?;
        pids.sort_unstable();
        Ok(pids
            .into_iter()
            .map(|pid| ProcessEntry {
                pid,
                exec_id: execs
                    .iter()
                    .find(|(p, _)| *p == pid)
                    .map(|(_, e)| e.clone())
                    .unwrap_or_default(),
            })
            .collect())
    }
}

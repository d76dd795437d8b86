//! Stats: a container's cgroup counters (the agent's StatsContainer).

use super::error::TaskError;
use super::Tasks;
use crate::convert;
use crate::domain::ContainerStats;

impl Tasks {
    /// Stats.
    pub fn stats(&self, id: &str) -> Result<ContainerStats, TaskError> {
        let stats = self
            .shared
            .sandbox_of(id)?
            .agent()?
            .stats_container(id)
            .map_err(TaskError::CallAgent)?;
        Ok(convert::container_stats(&stats))
    }
}

//! StatsContainer: the container's cgroup v2 counters.

use super::cgroup::CgroupStats;
use super::error::ContainerError;
use super::Engine;

/// A container's statistics.
pub type Stats = CgroupStats;

impl Engine {
    /// StatsContainer.
    pub fn stats(&self, id: &str) -> Result<Stats, ContainerError> {
        Ok(self.get(id)?.cgroup.stats()?)
    }
}

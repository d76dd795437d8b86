//! Update: new cgroup limits for a container (the agent's
//! UpdateContainer).

use super::error::TaskError;
use super::Tasks;

impl Tasks {
    /// Update. `resources` is OCI LinuxResources JSON.
    pub fn update(&self, id: &str, resources: &[u8]) -> Result<(), TaskError> {
        self.shared
            .sandbox_of(id)?
            .agent()?
            .update_container(id, resources)
            .map_err(TaskError::CallAgent)
    }
}

//! UpdateContainer: new cgroup limits for a live container.

use oci_spec::runtime::LinuxResources;

use super::error::{ContainerError, SpecError};
use super::{Engine, State};

impl Engine {
    /// UpdateContainer with OCI LinuxResources JSON.
    pub fn update(&self, id: &str, resources: &[u8]) -> Result<(), ContainerError> {
        let resources: LinuxResources =
            serde_json::from_slice(resources).map_err(|source| SpecError::Parse {
                what: "resources",
                source,
            })?;
        let container = self.get(id)?;
        if container.state() == State::Stopped {
            return Err(container.wrong_state("update"));
        }
        container.cgroup.apply(&resources)?;
        tracing::info!(id, "container resources updated");
        Ok(())
    }
}

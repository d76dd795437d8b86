//! PauseContainer and ResumeContainer: the cgroup freezer.

use super::error::ContainerError;
use super::{Engine, State};

impl Engine {
    /// PauseContainer.
    pub fn pause(&self, id: &str) -> Result<(), ContainerError> {
        let container = self.get(id)?;
        if container.state() != State::Running {
            return Err(container.wrong_state("pause"));
        }
        container.cgroup.freeze(true)?;
        container.set_state(State::Paused);
        tracing::info!(id, "container paused");
        Ok(())
    }

    /// ResumeContainer.
    pub fn resume(&self, id: &str) -> Result<(), ContainerError> {
        let container = self.get(id)?;
        if container.state() != State::Paused {
            return Err(container.wrong_state("resume"));
        }
        container.cgroup.freeze(false)?;
        container.set_state(State::Running);
        tracing::info!(id, "container resumed");
        Ok(())
    }
}

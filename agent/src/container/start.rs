//! StartContainer: the init, waiting since create, runs the spec's process.

use std::io::Write;

use super::create::setup_error;
use super::error::ContainerError;
use super::{lock, Engine, State};

impl Engine {
    /// StartContainer.
    pub fn start(&self, id: &str) -> Result<(), ContainerError> {
        let container = self.get(id)?;
        let mut starter_slot = lock(&container.starter);
        if container.state() != State::Created {
            return Err(container.wrong_state("start"));
        }
        let Some(mut starter) = starter_slot.take() else {
            return Err(container.wrong_state("start"));
        };
        starter
            .start
            .write_all(&[1])
            .map_err(ContainerError::sys("telling the init to start"))?;
        // EOF: execve closed the report pipe. A report: it failed.
        match starter.reports.next() {
            Ok(None) => {
                container.set_state(State::Running);
                tracing::info!(id, pid = container.init.pid, "container started");
                Ok(())
            }
            Ok(Some(report)) => {
                container.set_state(State::Stopped);
                Err(setup_error(&starter.plan, report))
            }
            Err(e) => Err(ContainerError::sys("reading the init's start report")(e)),
        }
    }
}

//! RemoveContainer: kills what is left, waits for it, and frees the cgroup
//! and the rootfs overlay. The container's other mounts live in its own
//! mount namespace, which goes with its last process.

use std::time::Duration;

use super::error::ContainerError;
use super::{lock, Engine};

/// How long RemoveContainer waits for the processes after SIGKILL when the
/// request does not say.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

impl Engine {
    /// RemoveContainer.
    pub fn remove(&self, id: &str, timeout_seconds: u32) -> Result<(), ContainerError> {
        let container = self.get(id)?;
        let timeout = match timeout_seconds {
            0 => DEFAULT_TIMEOUT,
            s => Duration::from_secs(s.into()),
        };
        // A frozen cgroup still takes SIGKILL through cgroup.kill.
        container.cgroup.kill()?;
        // An init that never started waits on its start pipe: closing it
        // ends the wait too.
        lock(&container.starter).take();
        if container.init.exit.wait_timeout(timeout).is_none() {
            return Err(ContainerError::sys(
                "waiting for the container's init to exit",
            )(std::io::ErrorKind::TimedOut.into()));
        }
        let execs: Vec<_> = lock(&container.execs).values().cloned().collect();
        for process in execs {
            process.exit.wait_timeout(timeout);
        }
        if let Some(oom) = &self.oom {
            oom.unwatch(id);
        }
        container.cgroup.remove()?;
        // Dropping the overlay unmounts and deletes it.
        lock(&container.overlay).take();
        lock(&self.containers).remove(id);
        let mut pods = lock(&self.pods);
        if pods.get(&container.sandbox_id).map(String::as_str) == Some(id) {
            pods.remove(&container.sandbox_id);
        }
        tracing::info!(id, "container removed");
        Ok(())
    }
}

//! SignalProcess: one process through its pidfd, or every process of the
//! container.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use super::error::ContainerError;
use super::Engine;

/// `pidfd_send_signal`: no pid-reuse race.
pub(super) fn send(pidfd: &OwnedFd, signal: i32) -> io::Result<()> {
    // SAFETY: integer-only syscall on our pidfd; no siginfo.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if ret == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl Engine {
    /// SignalProcess. `all` signals every process in the container's cgroup.
    pub fn signal(
        &self,
        id: &str,
        exec_id: &str,
        signal: u32,
        all: bool,
    ) -> Result<(), ContainerError> {
        let signal = i32::try_from(signal)
            .ok()
            .filter(|s| (1..=64).contains(s))
            .ok_or_else(|| {
                ContainerError::InvalidRequest(format!("signal {signal} is not a signal"))
            })?;
        let container = self.get(id)?;
        if all {
            if signal == libc::SIGKILL {
                return Ok(container.cgroup.kill()?);
            }
            for pid in container.cgroup.pids()? {
                // SAFETY: integer-only syscall.
                if unsafe { libc::kill(pid, signal) } == -1 {
                    let err = io::Error::last_os_error();
                    if err.raw_os_error() != Some(libc::ESRCH) {
                        return Err(ContainerError::sys(format!("signalling pid {pid}"))(err));
                    }
                }
            }
            return Ok(());
        }
        let process = container.process(exec_id)?;
        if process.exit.get().is_some() {
            return Err(ContainerError::ProcessNotFound {
                container_id: id.to_string(),
                exec_id: format!("{exec_id} (it has exited)"),
            });
        }
        send(&process.pidfd, signal).map_err(|e| match e.raw_os_error() {
            Some(libc::ESRCH) => ContainerError::ProcessNotFound {
                container_id: id.to_string(),
                exec_id: format!("{exec_id} (it has exited)"),
            },
            _ => ContainerError::sys(format!("sending signal {signal}"))(e),
        })?;
        tracing::debug!(id, exec_id, signal, "signal sent");
        Ok(())
    }
}

//! Guest-wide operations of the API: clock, hostname, entropy, the
//! virtio-fs share, shutdown.

use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::error::AgentError;
use crate::share;
use crate::sys::Sys;

/// The longest hostname Linux takes (`HOST_NAME_MAX`).
const HOST_NAME_MAX: usize = 64;
/// The most entropy one `ReseedRandom` takes.
pub const MAX_ENTROPY: usize = 4096;
/// How long Shutdown waits after replying before it ends the guest, so the
/// reply leaves first.
pub const SHUTDOWN_DELAY: Duration = Duration::from_millis(50);

/// Guest-wide operations over a [`Sys`].
#[derive(Clone)]
pub struct Guest {
    sys: Arc<dyn Sys>,
    shutdown_delay: Duration,
    /// The tag of the mounted share; the lock also makes two MountShare
    /// calls mount once.
    share: Arc<Mutex<Option<String>>>,
}

impl Guest {
    /// Guest operations through `sys`.
    pub fn new(sys: Arc<dyn Sys>) -> Guest {
        Guest {
            sys,
            shutdown_delay: SHUTDOWN_DELAY,
            share: Arc::default(),
        }
    }

    /// The same, ending the guest `delay` after a Shutdown reply.
    #[cfg(test)]
    pub fn with_shutdown_delay(mut self, delay: Duration) -> Guest {
        self.shutdown_delay = delay;
        self
    }

    /// Sets the wall clock.
    pub fn set_time(&self, seconds: i64, nanos: u32) -> Result<(), AgentError> {
        if seconds < 0 || nanos >= 1_000_000_000 {
            return Err(AgentError::InvalidArgument(format!(
                "time {seconds}.{nanos:09} is out of range"
            )));
        }
        self.sys
            .set_time(seconds, nanos)
            .map_err(AgentError::sys("setting the guest time"))
    }

    /// Sets the hostname.
    pub fn set_hostname(&self, name: &str) -> Result<(), AgentError> {
        if name.is_empty() || name.len() > HOST_NAME_MAX || name.contains('\0') {
            return Err(AgentError::InvalidArgument(format!(
                "hostname {name:?} must be 1 to {HOST_NAME_MAX} bytes without NUL"
            )));
        }
        self.sys
            .set_hostname(name)
            .map_err(AgentError::sys("setting the hostname"))
    }

    /// Adds host entropy to the pool, credited.
    pub fn reseed(&self, data: &[u8]) -> Result<(), AgentError> {
        if data.is_empty() || data.len() > MAX_ENTROPY {
            return Err(AgentError::InvalidArgument(format!(
                "entropy must be 1 to {MAX_ENTROPY} bytes, got {}",
                data.len()
            )));
        }
        self.sys
            .add_entropy(data)
            .map_err(AgentError::sys("adding entropy"))
    }

    /// Mounts the virtio-fs share tagged `tag` at [`share::SHARED_DIR`]
    /// (at boot for `vessel.share=`, or on MountShare). The tag already
    /// mounted is a success; another one is refused.
    pub fn mount_share(&self, tag: &str) -> Result<(), AgentError> {
        if !share::valid_tag(tag) {
            return Err(AgentError::InvalidArgument(format!(
                "virtio-fs tag {tag:?} must be 1 to {} bytes without NUL",
                share::MAX_TAG_LEN
            )));
        }
        let mut mounted = self.share.lock().unwrap_or_else(|p| p.into_inner());
        match mounted.as_deref() {
            Some(t) if t == tag => return Ok(()),
            Some(t) => {
                return Err(AgentError::ShareMounted {
                    mounted: t.to_owned(),
                    asked: tag.to_owned(),
                })
            }
            None => {}
        }
        share::mount(self.sys.as_ref(), tag).map_err(|e| AgentError::Sys {
            what: "mounting the virtio-fs share",
            source: e.source,
        })?;
        tracing::info!(tag, dir = share::SHARED_DIR, "virtio-fs share mounted");
        *mounted = Some(tag.to_owned());
        Ok(())
    }

    /// The kernel release, or "unknown".
    pub fn kernel_release(&self) -> String {
        self.sys
            .kernel_release()
            .unwrap_or_else(|_| "unknown".into())
    }

    /// Ends the guest after the shutdown delay, in the background so the
    /// caller can reply first: sync, then reboot (the VMM's exit).
    pub fn shutdown_later(&self) -> JoinHandle<()> {
        let sys = self.sys.clone();
        let delay = self.shutdown_delay;
        thread::spawn(move || {
            thread::sleep(delay);
            tracing::info!("shutting down the guest");
            sys.sync();
            let err = sys.reboot();
            tracing::error!(error = %err, "reboot failed");
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{Call, FakeSys};

    fn guest() -> (Arc<FakeSys>, Guest) {
        let sys = Arc::new(FakeSys::default());
        let guest = Guest::new(sys.clone()).with_shutdown_delay(Duration::ZERO);
        (sys, guest)
    }

    #[test]
    fn records_time_hostname_entropy() {
        let (sys, guest) = guest();
        guest.set_time(1_700_000_000, 5).unwrap();
        guest.set_hostname("pod-1").unwrap();
        guest.reseed(&[1, 2, 3]).unwrap();
        assert_eq!(
            sys.calls(),
            [
                Call::SetTime(1_700_000_000, 5),
                Call::SetHostname("pod-1".into()),
                Call::AddEntropy(vec![1, 2, 3]),
            ]
        );
    }

    #[test]
    fn the_share_mounts_once_and_keeps_its_tag() {
        let (sys, guest) = guest();
        guest.mount_share("pod").unwrap();
        guest.mount_share("pod").unwrap();
        let mounts = sys
            .calls()
            .iter()
            .filter(|c| matches!(c, Call::Mount(_)))
            .count();
        assert_eq!(mounts, 1, "the second MountShare of one tag mounts nothing");
        let err = guest.mount_share("other").unwrap_err();
        assert_eq!(err.code(), ttrpc::Code::FAILED_PRECONDITION);
        assert_eq!(
            err.to_string(),
            "the virtio-fs share \"pod\" is mounted; \"other\" cannot be"
        );
    }

    #[test]
    fn rejects_bad_arguments_without_syscalls() {
        let (sys, guest) = guest();
        assert!(guest.set_time(-1, 0).is_err());
        assert!(guest.set_time(0, 1_000_000_000).is_err());
        assert!(guest.set_hostname("").is_err());
        assert!(guest.mount_share("").is_err());
        assert!(guest.mount_share(&"t".repeat(37)).is_err());
        assert!(guest.set_hostname(&"h".repeat(65)).is_err());
        let err = guest.reseed(&[]).unwrap_err();
        assert_eq!(err.code(), ttrpc::Code::INVALID_ARGUMENT);
        assert!(guest.reseed(&vec![0; MAX_ENTROPY + 1]).is_err());
        assert!(sys.calls().is_empty());
    }

    #[test]
    fn shutdown_syncs_then_reboots() {
        let (sys, guest) = guest();
        guest.shutdown_later().join().unwrap();
        assert_eq!(sys.calls(), [Call::Sync, Call::Reboot]);
    }

    #[test]
    fn entropy_is_packed_for_the_ioctl() {
        let info = crate::sys::rand_pool_info(&[1, 2, 3, 4, 5]).unwrap();
        assert_eq!(info[0], 40, "credited bits");
        assert_eq!(info[1], 5, "bytes");
        assert_eq!(info.len(), 4);
        assert_eq!(info[2].to_ne_bytes(), [1, 2, 3, 4]);
        assert_eq!(info[3].to_ne_bytes(), [5, 0, 0, 0]);
    }
}

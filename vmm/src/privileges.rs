//! The VMM runs with the least privilege that works.
//!
//! Right after the share is set up (which needs `CAP_SYS_ADMIN` for the
//! private mount namespace) and before the first thread starts, the VMM
//! sets `no_new_privs` and keeps only the capabilities it uses, in every
//! set (effective, permitted, inheritable, ambient, bounding):
//!
//! - **without a share: none.** KVM, the sockets, the console and the
//!   snapshot files are all the VMM's own (uid 0, owner permissions).
//! - **with a share**, what virtio-fs passthrough needs to act for guest
//!   users on host files: `CAP_DAC_OVERRIDE` and `CAP_DAC_READ_SEARCH`
//!   (guest root reads and writes files it does not own, as root does),
//!   `CAP_CHOWN` and `CAP_FOWNER` (chown, chmod and utimes of such files),
//!   `CAP_SETUID` and `CAP_SETGID` (fuse-backend-rs creates files as the
//!   guest's caller with setfsuid/setfsgid), and `CAP_SYS_ADMIN` (the API's
//!   `fs_add` and `fs_remove` mount and unmount in the share).
//!
//! Left out on purpose: `CAP_FSETID`, so the host kernel clears the
//! setuid and setgid bits of a file the guest writes or truncates (as for
//! any unprivileged writer); `CAP_SETFCAP`, so the guest can never give a
//! host file capabilities; `CAP_MKNOD`, so no device node is ever made.

use caps::{CapSet, Capability, CapsHashSet};

/// Why the VMM could not drop its privileges.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegesError {
    #[error("setting no_new_privs")]
    SetNoNewPrivs(#[source] std::io::Error),
    #[error("reading the VMM's capabilities")]
    ReadCapabilities(#[source] caps::errors::CapsError),
    #[error("dropping {capability} from the bounding set")]
    DropBounding {
        capability: Capability,
        #[source]
        source: caps::errors::CapsError,
    },
    #[error("setting the {set:?} capabilities")]
    SetCapabilities {
        set: CapSet,
        #[source]
        source: caps::errors::CapsError,
    },
}

/// The capabilities a VMM keeps: the client crate's
/// [`SHARE_CAPABILITIES`](vessel_vmm_client::privileges::SHARE_CAPABILITIES)
/// with a share, none without.
pub fn needed(share: bool) -> CapsHashSet {
    if !share {
        return CapsHashSet::new();
    }
    vessel_vmm_client::privileges::SHARE_CAPABILITIES
        .iter()
        .filter_map(|name| name.parse::<Capability>().ok())
        .collect()
}

/// Sets `no_new_privs` and drops every capability but [`needed`]`(share)`
/// from the calling thread, and so from every thread it starts later. A
/// VMM started without them (not root) keeps what little it has.
pub fn drop_unneeded(share: bool) -> Result<(), PrivilegesError> {
    // SAFETY: prctl(PR_SET_NO_NEW_PRIVS) takes integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(PrivilegesError::SetNoNewPrivs(
            std::io::Error::last_os_error(),
        ));
    }
    let keep = needed(share);
    let bounding = caps::read(None, CapSet::Bounding).map_err(PrivilegesError::ReadCapabilities)?;
    let effective =
        caps::read(None, CapSet::Effective).map_err(PrivilegesError::ReadCapabilities)?;
    // Dropping from the bounding set takes CAP_SETPCAP, which goes last.
    if effective.contains(&Capability::CAP_SETPCAP) {
        for capability in bounding.difference(&keep) {
            caps::drop(None, CapSet::Bounding, *capability).map_err(|source| {
                PrivilegesError::DropBounding {
                    capability: *capability,
                    source,
                }
            })?;
        }
    }
    caps::clear(None, CapSet::Ambient).map_err(|source| PrivilegesError::SetCapabilities {
        set: CapSet::Ambient,
        source,
    })?;
    for set in [CapSet::Inheritable, CapSet::Effective, CapSet::Permitted] {
        let have = caps::read(None, set).map_err(PrivilegesError::ReadCapabilities)?;
        let kept: CapsHashSet = have.intersection(&keep).copied().collect();
        caps::set(None, set, &kept)
            .map_err(|source| PrivilegesError::SetCapabilities { set, source })?;
    }
    tracing::debug!(share, kept = ?keep, "privileges dropped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// In a thread of its own: capabilities are per thread.
    fn in_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::spawn(f).join().unwrap()
    }

    fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    #[test]
    fn every_named_capability_is_known() {
        assert_eq!(
            needed(true).len(),
            vessel_vmm_client::privileges::SHARE_CAPABILITIES.len()
        );
    }

    #[test]
    fn a_vmm_with_a_share_keeps_only_what_passthrough_needs() {
        if !is_root() {
            return;
        }
        let (effective, permitted, bounding) = in_thread(|| {
            drop_unneeded(true).unwrap();
            (
                caps::read(None, CapSet::Effective).unwrap(),
                caps::read(None, CapSet::Permitted).unwrap(),
                caps::read(None, CapSet::Bounding).unwrap(),
            )
        });
        let want = needed(true);
        assert!(effective.is_subset(&want), "{effective:?}");
        assert!(permitted.is_subset(&want), "{permitted:?}");
        assert!(bounding.is_subset(&want), "{bounding:?}");
        for gone in [
            Capability::CAP_FSETID,
            Capability::CAP_SETFCAP,
            Capability::CAP_MKNOD,
            Capability::CAP_SETPCAP,
            Capability::CAP_NET_ADMIN,
            Capability::CAP_SYS_PTRACE,
        ] {
            assert!(!effective.contains(&gone), "{gone} kept");
        }
        // This thread is untouched.
        assert!(caps::has_cap(None, CapSet::Effective, Capability::CAP_FSETID).unwrap());
    }

    #[test]
    fn a_vmm_without_a_share_keeps_none_and_cannot_gain_any() {
        if !is_root() {
            return;
        }
        let (effective, no_new_privs, raised) = in_thread(|| {
            drop_unneeded(false).unwrap();
            // SAFETY: prctl(PR_GET_NO_NEW_PRIVS) takes integer arguments only.
            let nnp = unsafe { libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) };
            let raised = caps::raise(None, CapSet::Effective, Capability::CAP_SYS_ADMIN);
            (caps::read(None, CapSet::Effective).unwrap(), nnp, raised)
        });
        assert!(effective.is_empty(), "{effective:?}");
        assert_eq!(no_new_privs, 1);
        assert!(raised.is_err(), "a dropped capability came back");
    }
}

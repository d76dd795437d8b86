//! The VMM's jail, in the spirit of Firecracker's jailer, on by default.
//! [`enter`] runs once, from `main`, after the share's private mount
//! namespace is set up and before any thread starts:
//!
//! 1. new network, IPC and pid namespaces ([`namespaces`]);
//! 2. resource limits ([`rlimits`]): open files, no core dumps, and a
//!    file size limit on request;
//! 3. the fork into the pid namespace ([`monitor`]): the child runs the
//!    VM as pid 1 of its namespace; the parent stays as its monitor;
//! 4. `no_new_privs` and only the capabilities the VMM uses
//!    ([`crate::privileges`]);
//! 5. the SIGSYS handler of the seccomp filters ([`seccomp`]), which each
//!    thread then applies to itself as it starts ([`ThreadFilters`]).
//!
//! `--jail off` skips all of it, for debugging only: the VMM then runs
//! with its starter's namespaces, privileges and limits, unfiltered.
//!
//! Not jailed yet: the VMM's root is the host's (no `pivot_root` into a
//! per-VM root), and its uid is 0 (virtio-fs passthrough acts for guest
//! users on host files; see [`crate::privileges`] for what it keeps).

pub mod monitor;
pub mod namespaces;
pub mod rlimits;
pub mod seccomp;

use vessel_vmm_client::jail::JailSpec;

pub use seccomp::{Role, ThreadFilters};

/// Why the VMM could not enter its jail.
#[derive(Debug, thiserror::Error)]
pub enum JailError {
    #[error("enter the VMM's own namespaces")]
    EnterNamespaces(#[source] namespaces::NamespacesError),
    #[error("set the VMM's resource limits")]
    SetRlimits(#[source] rlimits::RlimitsError),
    #[error("start the VMM in its pid namespace")]
    StartMonitor(#[source] monitor::MonitorError),
    #[error("drop the VMM's privileges")]
    DropPrivileges(#[source] crate::privileges::PrivilegesError),
    #[error("prepare the seccomp filters")]
    PrepareSeccomp(#[source] seccomp::SeccompError),
}

/// Jails the VMM as `spec` says (with or without a share), returning the
/// filters its threads apply. The caller must be the VMM's only thread.
/// In the monitor this never returns.
pub fn enter(spec: &JailSpec, share: bool) -> Result<ThreadFilters, JailError> {
    if spec.disabled {
        tracing::warn!("the jail is off (--jail off): for debugging only");
        return Ok(ThreadFilters::OFF);
    }
    namespaces::unshare_all().map_err(JailError::EnterNamespaces)?;
    rlimits::apply(spec, share).map_err(JailError::SetRlimits)?;
    let filters = ThreadFilters::install(spec.seccomp).map_err(JailError::PrepareSeccomp)?;
    monitor::fork_vmm(filters).map_err(JailError::StartMonitor)?;
    crate::privileges::drop_unneeded(share).map_err(JailError::DropPrivileges)?;
    tracing::debug!(share, seccomp = ?spec.seccomp, "jailed");
    Ok(filters)
}

//! The pod's VM, on top of `vessel-vmm-client`:
//!
//! - `launch`: what the config makes of a pod's guest (its `BootSpec`,
//!   and the template it restores from);
//! - `sandbox`: [`Sandbox`], one running pod VM with its state directory,
//!   share and agent connection; cleanup after a dead shim;
//! - `cgroup`: the host cgroup the VMM runs in (the sandbox's
//!   `cgroupsPath`);
//! - `error`: [`VmError`].
//!
//! The task verbs (`crate::task`) use a `Sandbox`; nothing here knows
//! about tasks, and `launch` knows nothing of a running sandbox.

pub mod cgroup;
pub mod error;
pub mod launch;
pub mod sandbox;

pub use error::VmError;
pub use sandbox::{cleanup_dead, state_dir, Sandbox};

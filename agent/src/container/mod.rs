//! The container engine: OCI containers inside the guest.

pub mod caps;
pub mod cgroup;
pub mod oom;
pub mod seccomp;

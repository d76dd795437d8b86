//! vessel-vmm: the KVM microVM monitor that runs one pod.
//!
//! Today this crate holds the host profile (what the guest needs from the host
//! it runs on). The VMM itself is the subject of its own issue.

pub mod profile;

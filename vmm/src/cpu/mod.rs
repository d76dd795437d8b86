//! vCPU configuration (CPUID, MSRs, registers), the vCPU run loop, and
//! pausing, saving and stopping the vCPUs from another thread ([`control`]).
//!
//! Nothing here uses the modules above it (the API, the VM, snapshots): they
//! reach [`control`] through the crate's top-level `control` module.

pub mod control;
pub mod cpuid;
pub mod msr;
pub mod snapshot;
pub mod vcpu;

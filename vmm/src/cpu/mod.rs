//! vCPU configuration (CPUID, MSRs, registers) and the vCPU run loop.

pub mod cpuid;
pub mod msr;
pub mod snapshot;
pub mod vcpu;

//! The harness every integration test shares: it builds (or takes from the
//! cache) the guest kernel, static guest binaries and initramfs images, and
//! runs guests with a timeout and cleanup on drop.
//!
//! Builds are cached on disk and memoised per process, so parallel tests and
//! later runs pay for each only once.

pub mod build;
pub mod guest;
pub mod report;

pub use build::{
    agent_initramfs, guest_kernel, host_binary, static_binary, test_initramfs, vessel_vmm,
};
pub use guest::{GuestOutput, GuestSpec, Runner, RunningGuest};
pub use report::Report;

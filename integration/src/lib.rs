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

/// The value of the one optional `flag N` (a positive number) an example
/// takes, or `default`; anything else on the command line is an error.
pub fn positive_flag(flag: &str, default: u64, usage: &str) -> anyhow::Result<u64> {
    use anyhow::{bail, Context};
    let mut value = default;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg != flag {
            bail!("unknown option {arg}; usage: {usage}");
        }
        let text = args
            .next()
            .with_context(|| format!("{flag}: missing value"))?;
        value = text
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .with_context(|| format!("{flag}: {text:?} is not a positive number"))?;
    }
    Ok(value)
}

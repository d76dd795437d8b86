//! The harness every integration test shares: it builds (or takes from the
//! cache) the guest kernel, static guest binaries and initramfs images, and
//! runs guests with a timeout and cleanup on drop.
//!
//! Builds are cached on disk and memoised per process, so parallel tests and
//! later runs pay for each only once.

pub mod agent;
pub mod build;
pub mod cases;
pub mod container;
pub mod containerd;
pub mod guest;
pub mod image;
pub mod privileges;
pub mod pty;
pub mod report;
pub mod rootfs;
pub mod template;

pub use agent::{connect_while_running, AgentVm};
pub use build::{
    agent_initramfs, guest_kernel, host_binary, static_binary, test_initramfs, vessel_vmm,
};
pub use cases::Cases;
pub use container::{Container, ProcessOutput};
pub use guest::{GuestOutput, Runner, RunningGuest};
pub use report::Report;
pub use rootfs::{
    agent_initramfs_with_rootfs, busybox_rootfs, oci_spec, runc_bundle, GUEST_BUSYBOX_ROOTFS,
};
/// What to boot, and the VMM's API client: the client crate's, re-exported.
pub use vessel_vmm_client::{ApiClient, BootSpec, Endpoints, FsSpec, RestoreSpec, VmState};

/// The value of the one optional `flag N` (a positive number) an example
/// takes, or `default`; anything else on the command line is an error.
pub fn positive_flag(flag: &str, default: u64, usage: &str) -> anyhow::Result<u64> {
    Ok(positive_flags(&[(flag, default)], usage)?[0])
}

/// The values of optional `flag N` options (positive numbers), in the order
/// of `flags` (each a flag and its default); anything else on the command
/// line is an error.
pub fn positive_flags(flags: &[(&str, u64)], usage: &str) -> anyhow::Result<Vec<u64>> {
    parse_positive_flags(std::env::args().skip(1), flags, usage)
}

fn parse_positive_flags(
    args: impl IntoIterator<Item = String>,
    flags: &[(&str, u64)],
    usage: &str,
) -> anyhow::Result<Vec<u64>> {
    use anyhow::{bail, Context};
    let mut values: Vec<u64> = flags.iter().map(|&(_, default)| default).collect();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let Some(slot) = flags.iter().position(|&(flag, _)| flag == arg) else {
            bail!("unknown option {arg}; usage: {usage}");
        };
        let text = args
            .next()
            .with_context(|| format!("{arg}: missing value"))?;
        values[slot] = text
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .with_context(|| format!("{arg}: {text:?} is not a positive number"))?;
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::parse_positive_flags;

    fn parse(args: &[&str]) -> anyhow::Result<Vec<u64>> {
        let args = args.iter().map(|a| a.to_string());
        parse_positive_flags(args, &[("--rounds", 5), ("--mib", 10)], "usage")
    }

    #[test]
    fn flags_take_defaults_and_values() {
        assert_eq!(parse(&[]).unwrap(), [5, 10]);
        assert_eq!(parse(&["--mib", "2"]).unwrap(), [5, 2]);
        assert_eq!(parse(&["--mib", "2", "--rounds", "1"]).unwrap(), [1, 2]);
        assert!(parse(&["--mib", "0"]).is_err());
        assert!(parse(&["--mib"]).is_err());
        assert!(parse(&["--bogus", "1"]).is_err());
    }
}

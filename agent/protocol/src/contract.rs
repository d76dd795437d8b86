//! The guest contract outside the `.proto`: the names and places that the
//! host side (the shim, the test harness, the benchmarks) and the guest
//! agent must agree on. Both sides import them from here, so a change is
//! one edit.

/// The vsock port the agent listens on.
pub const AGENT_VSOCK_PORT: u32 = 1024;

/// The virtio-fs tag of a pod VM's share.
pub const SHARE_TAG: &str = "vessel";

/// Where the agent mounts the share (`nodev`, `nosuid`).
pub const SHARED_DIR: &str = "/run/vessel/shared";

/// The kernel command-line key that makes the agent mount the share tagged
/// with its value at boot (`vessel.share=TAG`); a restored guest gets
/// MountShare instead.
pub const CMDLINE_SHARE: &str = "vessel.share=";

/// The kernel command-line key of the agent's log level
/// (`vessel.log=debug`).
pub const CMDLINE_LOG: &str = "vessel.log=";

/// `vessel.share=TAG`, for a guest's command line.
pub fn share_arg(tag: &str) -> String {
    format!("{CMDLINE_SHARE}{tag}")
}

/// `vessel.log=LEVEL`, for a guest's command line.
pub fn log_arg(level: &str) -> String {
    format!("{CMDLINE_LOG}{level}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_use_the_keys() {
        assert_eq!(share_arg(SHARE_TAG), "vessel.share=vessel");
        assert_eq!(log_arg("debug"), "vessel.log=debug");
    }
}

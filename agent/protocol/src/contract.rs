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

/// The longest container, exec or sandbox id either side accepts.
pub const MAX_ID_LEN: usize = 128;

/// Whether `id` is a container, exec or sandbox id both sides accept: what
/// runc and containerd accept, and always one plain directory name (the
/// host side names state and share directories after it).
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

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
    fn ids_are_one_plain_name() {
        for good in ["c1", "a.b-c_d", &"x".repeat(MAX_ID_LEN)] {
            assert!(valid_id(good), "{good}");
        }
        let long = "x".repeat(MAX_ID_LEN + 1);
        for bad in [
            "", ".", "..", ".hidden", "a/b", "../etc", "a b", "a\0b", &long,
        ] {
            assert!(!valid_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn arguments_use_the_keys() {
        assert_eq!(share_arg(SHARE_TAG), "vessel.share=vessel");
        assert_eq!(log_arg("debug"), "vessel.log=debug");
    }
}

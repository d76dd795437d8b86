//! The host's virtio-fs share: container root filesystems and volumes the
//! host exposes to the guest. The VMM serves one share per VM under a tag;
//! when the kernel command line names it (`vessel.share=TAG`), the agent
//! mounts it at boot at [`SHARED_DIR`], `nodev` and `nosuid`: device nodes
//! and setuid files that come from the host are never honoured in the guest.

use std::io;
use std::path::Path;

use crate::init::MountError;
use crate::sys::{Mount, Sys};

/// Where the share is mounted (the guest contract's).
pub use vessel_agent_protocol::contract::SHARED_DIR;
/// Its parent, created first (`/run` is a fresh tmpfs).
const PARENT: &str = "/run/vessel";
/// The longest virtio-fs tag (the device's config space holds 36 bytes).
pub const MAX_TAG_LEN: usize = 36;

/// Whether a virtio-fs device could carry `tag`.
pub fn valid_tag(tag: &str) -> bool {
    !tag.is_empty() && tag.len() <= MAX_TAG_LEN && !tag.contains('\0')
}

/// The command-line key naming the share's tag (the guest contract's).
pub use vessel_agent_protocol::contract::CMDLINE_SHARE as CMDLINE_KEY;

/// The tag `cmdline` names, if any (the last one wins, like the kernel's
/// own parameters).
pub fn tag_from_cmdline(cmdline: &str) -> Option<&str> {
    cmdline
        .split_whitespace()
        .filter_map(|word| word.strip_prefix(CMDLINE_KEY))
        .next_back()
        .filter(|tag| !tag.is_empty())
}

/// Mounts the share tagged `tag` at [`SHARED_DIR`]: two `mkdir`s and one
/// `mount`.
pub fn mount(sys: &dyn Sys, tag: &str) -> Result<(), MountError> {
    let fail = |source| MountError {
        fstype: "virtiofs",
        target: SHARED_DIR,
        source,
    };
    for dir in [PARENT, SHARED_DIR] {
        match sys.mkdir(Path::new(dir)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(fail(e)),
        }
    }
    // Mount wants 'static strings; the tag lives for the guest's life.
    let source: &'static str = Box::leak(tag.to_owned().into_boxed_str());
    sys.mount(&Mount {
        source,
        target: SHARED_DIR,
        fstype: "virtiofs",
        flags: libc::MS_NODEV | libc::MS_NOSUID,
        data: None,
    })
    .map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{Call, FakeSys};

    #[test]
    fn the_tag_comes_from_the_command_line() {
        assert_eq!(
            tag_from_cmdline("console=ttyS0 vessel.share=pod1 quiet"),
            Some("pod1")
        );
        assert_eq!(tag_from_cmdline("vessel.share=a vessel.share=b"), Some("b"));
        assert_eq!(tag_from_cmdline("vessel.share= quiet"), None);
        assert_eq!(tag_from_cmdline("vessel.sharex=a"), None);
        assert_eq!(tag_from_cmdline("console=ttyS0"), None);
    }

    #[test]
    fn the_share_is_mounted_nodev_nosuid() {
        let sys = FakeSys::default();
        mount(&sys, "vessel").unwrap();
        let mounts: Vec<Mount> = sys
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Mount(m) => Some(m),
                _ => None,
            })
            .collect();
        assert_eq!(mounts.len(), 1);
        let m = &mounts[0];
        assert_eq!(
            (m.source, m.target, m.fstype),
            ("vessel", SHARED_DIR, "virtiofs")
        );
        assert_eq!(m.flags, libc::MS_NODEV | libc::MS_NOSUID);
    }
}

//! A restore from a snapshot instead of a boot: `--restore-state FILE
//! --restore-memory FILE` (config file keys `restore_state` and
//! `restore_memory`).
//!
//! The snapshot holds the guest and everything it saw (kernel, command
//! line, vCPUs, memory, devices, vsock CID), so those settings are refused
//! next to it. What stays the host's to choose: where the console goes, the
//! API socket, the vsock device's unix socket (a snapshot with a vsock
//! device needs one, and every VM restored from one snapshot needs its own),
//! and the directory of a virtio-fs share the guest had not mounted yet
//! (`--fs-dir`, with `--fs-cache` and `--fs-xattr`; its tag is the
//! snapshot's, and an `--fs-tag` must name the same).

use std::fs::File;
use std::path::PathBuf;

use super::{
    check_api_sock, check_vsock_uds, fs_config, serial_output, ConfigError, FileConfig, FsConfig,
    SerialOutput, VmConfig,
};

/// What to start: a boot, or a restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Launch {
    Boot(VmConfig),
    Restore(RestoreConfig),
}

/// Everything needed to restore one VM from a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreConfig {
    /// The snapshot's state file.
    pub state: PathBuf,
    /// The snapshot's memory file, mapped copy-on-write.
    pub memory: PathBuf,
    pub serial: SerialOutput,
    pub api_sock: Option<PathBuf>,
    pub vsock_uds: Option<PathBuf>,
    /// The directory for the snapshot's virtio-fs share. Its `tag` is the
    /// one `--fs-tag` gave, or empty: the snapshot's.
    pub fs: Option<FsConfig>,
}

/// The restore settings of `merged` (flags over the config file), checked.
pub fn config(merged: FileConfig) -> Result<RestoreConfig, ConfigError> {
    let refused = [
        ("--kernel", merged.kernel.is_some()),
        ("--initrd", merged.initrd.is_some()),
        ("--cmdline", merged.cmdline.is_some()),
        ("--vcpus", merged.vcpus.is_some()),
        ("--memory-mib", merged.memory_mib.is_some()),
        ("--guest-cid", merged.guest_cid.is_some()),
    ];
    if let Some((flag, _)) = refused.iter().find(|(_, given)| *given) {
        return Err(ConfigError::NotWithRestore(flag));
    }
    let fs = fs_config(&merged)?.map(|fs| FsConfig {
        tag: merged.fs_tag.clone().unwrap_or_default(),
        ..fs
    });
    let state = merged.restore_state.ok_or(ConfigError::MissingField(
        "--restore-state",
        "restore_state",
    ))?;
    let memory = merged.restore_memory.ok_or(ConfigError::MissingField(
        "--restore-memory",
        "restore_memory",
    ))?;
    for (flag, path) in [("--restore-state", &state), ("--restore-memory", &memory)] {
        File::open(path).map_err(|source| ConfigError::OpenRestoreFile {
            flag,
            path: path.clone(),
            source,
        })?;
    }
    if let Some(sock) = &merged.api_sock {
        check_api_sock(sock)?;
    }
    if let Some(sock) = &merged.vsock_uds {
        check_vsock_uds(sock)?;
    }
    Ok(RestoreConfig {
        state,
        memory,
        serial: serial_output(merged.serial, merged.serial_max_bytes)?,
        api_sock: merged.api_sock,
        vsock_uds: merged.vsock_uds,
        fs,
    })
}

#[cfg(test)]
#[path = "restore_tests.rs"]
mod tests;

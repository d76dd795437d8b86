//! The VMM's resource limits, soft and hard alike (a compromised VMM
//! cannot raise them again without `CAP_SYS_RESOURCE`, which it drops).
//! They only ever lower what the VMM was started with: a limit above the
//! inherited hard limit is cut to it (raising needs `CAP_SYS_RESOURCE`,
//! which a starter may not have either).
//!
//! - `RLIMIT_NOFILE`: the most open files. Without a share the VMM holds a
//!   few dozen plus one per vsock connection ([`NO_SHARE_OPEN_FILES`]);
//!   virtio-fs passthrough also holds one per guest inode it knows of
//!   ([`SHARE_OPEN_FILES`]). `--rlimit-nofile` overrides both.
//! - `RLIMIT_FSIZE`: the largest file the VMM may write, with
//!   `--rlimit-fsize` only: a guest writes files of any size on its
//!   volumes, and a snapshot's memory file is the guest's memory.
//! - `RLIMIT_CORE`: 0. A VMM's core dump would hold the guest's memory.

use vessel_vmm_client::jail::JailSpec;

/// Open files of a VMM without a share, by default.
pub const NO_SHARE_OPEN_FILES: u64 = 4096;
/// Open files of a VMM with a share, by default.
pub const SHARE_OPEN_FILES: u64 = 131_072;

/// Why a resource limit could not be set.
#[derive(Debug, thiserror::Error)]
pub enum RlimitsError {
    #[error("setrlimit({resource}, {value})")]
    SetRlimit {
        resource: &'static str,
        value: u64,
        #[source]
        source: std::io::Error,
    },
}

/// The limits of `spec` for a VMM with or without a share, as
/// (resource, name, value).
pub fn limits(spec: &JailSpec, share: bool) -> Vec<(libc::__rlimit_resource_t, &'static str, u64)> {
    let default_files = if share {
        SHARE_OPEN_FILES
    } else {
        NO_SHARE_OPEN_FILES
    };
    let mut limits = vec![
        (
            libc::RLIMIT_NOFILE,
            "RLIMIT_NOFILE",
            spec.max_open_files.unwrap_or(default_files),
        ),
        (libc::RLIMIT_CORE, "RLIMIT_CORE", 0),
    ];
    if let Some(bytes) = spec.max_file_bytes {
        limits.push((libc::RLIMIT_FSIZE, "RLIMIT_FSIZE", bytes));
    }
    limits
}

/// Sets the limits of `spec` on the VMM, each at most the inherited hard
/// limit.
pub fn apply(spec: &JailSpec, share: bool) -> Result<(), RlimitsError> {
    for (resource, name, wanted) in limits(spec, share) {
        let mut current = libc::rlimit {
            rlim_cur: 0,
            rlim_max: libc::RLIM_INFINITY,
        };
        // SAFETY: getrlimit writes the rlimit it is given.
        if unsafe { libc::getrlimit(resource, &mut current) } != 0 {
            current.rlim_max = libc::RLIM_INFINITY;
        }
        let value = wanted.min(current.rlim_max);
        if value < wanted {
            tracing::debug!(
                resource = name,
                wanted,
                value,
                "rlimit: kept the inherited hard limit"
            );
        }
        let limit = libc::rlimit {
            rlim_cur: value,
            rlim_max: value,
        };
        // SAFETY: setrlimit reads the rlimit it is given.
        if unsafe { libc::setrlimit(resource, &limit) } != 0 {
            return Err(RlimitsError::SetRlimit {
                resource: name,
                value,
                source: std::io::Error::last_os_error(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_share_gets_room_for_passthroughs_inode_fds_and_flags_override() {
        let files = |spec: &JailSpec, share| {
            limits(spec, share)
                .into_iter()
                .find(|(_, name, _)| *name == "RLIMIT_NOFILE")
                .unwrap()
                .2
        };
        let spec = JailSpec::default();
        assert_eq!(files(&spec, false), NO_SHARE_OPEN_FILES);
        assert_eq!(files(&spec, true), SHARE_OPEN_FILES);
        let spec = JailSpec {
            max_open_files: Some(1000),
            max_file_bytes: Some(1 << 20),
            ..JailSpec::default()
        };
        assert_eq!(files(&spec, true), 1000);
        let names: Vec<_> = limits(&spec, true).into_iter().map(|l| l.1).collect();
        assert_eq!(names, ["RLIMIT_NOFILE", "RLIMIT_CORE", "RLIMIT_FSIZE"]);
    }

    /// In a child process: limits cannot be raised again.
    #[test]
    fn limits_only_ever_lower_what_the_vmm_inherited() {
        let mut inherited = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes the rlimit it is given.
        let got = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut inherited) };
        assert_eq!(got, 0);
        // SAFETY: the child only makes syscalls and exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let spec = JailSpec {
                max_open_files: Some(u64::MAX),
                ..JailSpec::default()
            };
            let mut after = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: getrlimit writes `after`; _exit ends the child.
            unsafe {
                let ok = apply(&spec, true).is_ok()
                    && libc::getrlimit(libc::RLIMIT_NOFILE, &mut after) == 0
                    && after.rlim_max <= inherited.rlim_max
                    && libc::getrlimit(libc::RLIMIT_CORE, &mut after) == 0
                    && after.rlim_max == 0;
                libc::_exit(if ok { 0 } else { 1 });
            }
        }
        let mut status = 0;
        // SAFETY: waits for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert_eq!(status, 0);
    }
}

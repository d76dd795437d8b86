//! What a running VMM holds of root's privileges, read from
//! `/proc/<pid>/task/*/status` for every thread of the VMM and of its
//! monitor (the process its starter spawned, in the host's pid namespace;
//! see `vessel_vmm::jail`).

use std::fs;

use anyhow::{ensure, Context, Result};
use vessel_vmm_client::jail::vmm_pid;
use vessel_vmm_client::privileges::SHARE_CAPABILITIES;

/// The `CapEff` mask of [`SHARE_CAPABILITIES`].
fn share_mask() -> Result<u64> {
    SHARE_CAPABILITIES.iter().try_fold(0u64, |mask, name| {
        let cap: caps::Capability = name.parse().with_context(|| format!("capability {name}"))?;
        Ok(mask | cap.bitmask())
    })
}

/// Checks the VMM spawned as `pid` (its monitor) and the VMM proper:
///
/// - every thread of both has `no_new_privs` and a seccomp filter
///   (`Seccomp: 2`), and capabilities (effective, permitted, bounding)
///   within what a VMM with (`share`) or without a share keeps; the
///   monitor keeps none;
/// - the VMM is pid 1 of a pid namespace of its own, and has network and
///   IPC namespaces of its own.
pub fn check_vmm(pid: u32, share: bool) -> Result<()> {
    let vmm = vmm_pid(pid);
    ensure!(
        vmm != pid,
        "VMM {pid} has no child: it did not fork into a pid namespace"
    );
    let threads = check_threads(pid, 0)?;
    ensure!(threads == 1, "the monitor {pid} has {threads} threads");
    let allowed = if share { share_mask()? } else { 0 };
    let threads = check_threads(vmm, allowed)?;
    ensure!(threads > 1, "read {threads} VMM threads");
    let status = fs::read_to_string(format!("/proc/{vmm}/status"))?;
    let nspid = status.lines().find_map(|l| l.strip_prefix("NSpid:"));
    ensure!(
        nspid.and_then(|ids| ids.split_whitespace().last()) == Some("1"),
        "the VMM {vmm} is not pid 1 of its own pid namespace (NSpid: {nspid:?})"
    );
    for kind in ["net", "ipc", "pid"] {
        let ns = |pid: &str| fs::read_link(format!("/proc/{pid}/ns/{kind}"));
        ensure!(
            ns(&vmm.to_string())? != ns("self")?,
            "the VMM is in the host's {kind} namespace"
        );
    }
    Ok(())
}

/// Checks every thread of `pid` against the capability mask `allowed`,
/// `no_new_privs` and seccomp; returns how many threads it read.
fn check_threads(pid: u32, allowed: u64) -> Result<usize> {
    let mut threads = 0;
    for task in fs::read_dir(format!("/proc/{pid}/task")).context("the VMM's threads")? {
        let path = task?.path().join("status");
        let Ok(status) = fs::read_to_string(&path) else {
            continue; // a thread that ended meanwhile
        };
        threads += 1;
        let field = |name: &str| -> Result<&str> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::trim)
                .with_context(|| format!("{name} in {}", path.display()))
        };
        let name = field("Name:")?;
        for set in ["CapEff:", "CapPrm:", "CapBnd:"] {
            let mask = u64::from_str_radix(field(set)?, 16)?;
            ensure!(
                mask & !allowed == 0,
                "{} ({name}): {set} {mask:x} holds more than {allowed:x}",
                path.display()
            );
        }
        ensure!(
            field("NoNewPrivs:")? == "1",
            "{} ({name}): no no_new_privs",
            path.display()
        );
        ensure!(
            field("Seccomp:")? == "2",
            "{} ({name}): no seccomp filter",
            path.display()
        );
    }
    Ok(threads)
}

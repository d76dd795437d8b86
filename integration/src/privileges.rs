//! What a running VMM holds of root's privileges, read from
//! `/proc/<pid>/task/*/status` for every thread.

use std::fs;

use anyhow::{ensure, Context, Result};
use vessel_vmm_client::privileges::SHARE_CAPABILITIES;

/// The `CapEff` mask of [`SHARE_CAPABILITIES`].
fn share_mask() -> Result<u64> {
    SHARE_CAPABILITIES.iter().try_fold(0u64, |mask, name| {
        let cap: caps::Capability = name.parse().with_context(|| format!("capability {name}"))?;
        Ok(mask | cap.bitmask())
    })
}

/// Checks every thread of VMM `pid`: its effective, permitted and bounding
/// capabilities are within what a VMM with (`share`) or without a share
/// keeps, and it has no_new_privs; the VMM has network and IPC
/// namespaces of its own.
pub fn check_vmm(pid: u32, share: bool) -> Result<()> {
    let allowed = if share { share_mask()? } else { 0 };
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
        for set in ["CapEff:", "CapPrm:", "CapBnd:"] {
            let mask = u64::from_str_radix(field(set)?, 16)?;
            ensure!(
                mask & !allowed == 0,
                "{}: {set} {mask:x} holds more than {allowed:x}",
                path.display()
            );
        }
        ensure!(
            field("NoNewPrivs:")? == "1",
            "{}: no no_new_privs",
            path.display()
        );
    }
    ensure!(threads > 1, "read {threads} VMM threads");
    for kind in ["net", "ipc"] {
        let ns = |pid: &str| fs::read_link(format!("/proc/{pid}/ns/{kind}"));
        ensure!(
            ns(&pid.to_string())? != ns("self")?,
            "the VMM is in the host's {kind} namespace"
        );
    }
    Ok(())
}

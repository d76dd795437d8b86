//! The agent VM templates the tests restore instead of booting: the agent
//! VM of [`crate::AgentVm`] (the busybox rootfs in its initramfs, 512 MiB,
//! the host's workload vCPUs), made by `vessel_vmm_client::template` (the
//! shim's maker too) into its cache under `~/.cache/vessel/templates`. One
//! is made per kernel, initramfs, VMM build and size, without or with a
//! virtio-fs device (the pod share's tag, never mounted: each restore
//! names its own directory and the agent mounts it on MountShare); every
//! later test process checks and reuses it.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{anyhow, Result};
use vessel_agent_protocol::SHARE_TAG;
use vessel_vmm_client::template::{self, Template, TemplateCache};
use vessel_vmm_client::{BootSpec, Endpoints, FsSpec, HostProfile, Launch, VmmCommand};

use crate::build::{cache_dir, guest_kernel, vessel_vmm};
use crate::guest::{RunningGuest, BOOT_TIMEOUT};
use crate::rootfs::agent_initramfs_with_rootfs;

/// Guest memory of the agent VMs.
pub const AGENT_VM_MEMORY_MIB: u32 = 512;

/// Two vCPUs, or one where the host loses writes with more
/// (`HostProfile::reliable_vcpus`).
pub fn agent_vm_vcpus() -> Result<u8> {
    Ok(HostProfile::detect()?.workload_vcpus(2))
}

/// The template without a share, checked or made once per process.
pub fn agent_template() -> Result<Template> {
    static TEMPLATE: OnceLock<Result<Template, String>> = OnceLock::new();
    TEMPLATE
        .get_or_init(|| make_or_reuse(false).map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!("the agent VM template: {e}"))
}

/// The template with an unmounted virtio-fs share, checked or made once
/// per process.
pub fn agent_share_template() -> Result<Template> {
    static TEMPLATE: OnceLock<Result<Template, String>> = OnceLock::new();
    TEMPLATE
        .get_or_init(|| make_or_reuse(true).map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!("the agent VM template with a share: {e}"))
}

fn make_or_reuse(share: bool) -> Result<Template> {
    let mut guest = BootSpec::new(guest_kernel()?, agent_initramfs_with_rootfs()?);
    guest.vcpus = agent_vm_vcpus()?;
    guest.memory_mib = AGENT_VM_MEMORY_MIB;
    if share {
        // The maker serves a placeholder directory of its own.
        guest.fs = Some(FsSpec::new("placeholder", SHARE_TAG));
    }
    // A test run can afford to hash the files: check every byte.
    let cache = TemplateCache::new(cache_dir().join("templates")).verify_digests();
    let work = tempfile::tempdir()?;
    Ok(template::get_or_make(
        &cache,
        &VmmCommand::new(vessel_vmm()?),
        &guest,
        &work.path().join("maker"),
        BOOT_TIMEOUT,
    )?)
}

/// Starts a VMM restoring `template`, with its sockets at `uds` and
/// `api_sock`, and `share` as the directory of its virtio-fs share.
pub fn restore(
    template: &Template,
    uds: &Path,
    api_sock: &Path,
    share: Option<&Path>,
) -> Result<RunningGuest> {
    let mut spec = template.restore_spec();
    spec.endpoints = Endpoints {
        api_sock: Some(api_sock.to_owned()),
        vsock_uds: Some(uds.to_owned()),
        ..Endpoints::default()
    };
    spec.fs_dir = share.map(Path::to_owned);
    let mut command = VmmCommand::new(vessel_vmm()?).command(&Launch::Restore(spec));
    RunningGuest::spawn(&mut command)
}

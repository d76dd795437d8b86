//! The agent VM templates the tests restore instead of booting: the agent
//! VM of [`crate::AgentVm`] (the busybox rootfs in its initramfs, 512 MiB,
//! the host's workload vCPUs), booted once to a listening agent, paused and
//! snapshotted into `vessel_template`'s cache under
//! `~/.cache/vessel/templates`. One is made per kernel, initramfs, VMM
//! build and size, without or with a virtio-fs device (tagged
//! [`SHARE_TAG`], never mounted: each restore names its own directory and
//! the agent mounts it on MountShare); every later test process checks and
//! reuses it.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{anyhow, ensure, Context, Result};
use serde_json::json;
use vessel_agent_protocol::AgentClient;
use vessel_template::{Template, TemplateCache, TemplateSpec};
use vessel_vmm::profile::HostProfile;

use crate::agent::{connect_while_running, BOOT_TIMEOUT};
use crate::build::{cache_dir, guest_kernel, vessel_vmm};
use crate::guest::{GuestSpec, Runner, RunningGuest};
use crate::rootfs::agent_initramfs_with_rootfs;
use crate::vmm_api::VmmApi;

/// Guest memory of the agent VMs.
pub const AGENT_VM_MEMORY_MIB: u32 = 512;

/// Two vCPUs, or one where the host loses writes with more
/// (`HostProfile::reliable_vcpus`).
pub fn agent_vm_vcpus() -> Result<u8> {
    Ok(HostProfile::detect()?.workload_vcpus(2))
}

/// The virtio-fs tag of the share template's device.
pub const SHARE_TAG: &str = "vessel";

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
    let recipe = match share {
        false => "the harness's agent VM: its default command line, vsock".to_owned(),
        true => format!("the harness's agent VM: its default command line, vsock, fs {SHARE_TAG}"),
    };
    let spec = TemplateSpec {
        kernel: guest_kernel()?,
        initrd: agent_initramfs_with_rootfs()?,
        vcpus: agent_vm_vcpus()?,
        memory_mib: AGENT_VM_MEMORY_MIB,
        vmm: vessel_vmm()?,
        recipe,
    };
    // A test run can afford to hash the files: check every byte.
    let cache = TemplateCache::new(cache_dir().join("templates")).verify_digests();
    Ok(cache.get_or_create(&spec, |dir: &Path| make(&spec, share, dir))?)
}

/// Boots the agent VM (with a placeholder share if `share`), and once the
/// agent answers, pauses it and writes its snapshot into `dir`; then stops
/// it.
fn make(spec: &TemplateSpec, share: bool, dir: &Path) -> Result<()> {
    let sockets = tempfile::tempdir()?;
    let uds = sockets.path().join("vsock.sock");
    let api_sock = sockets.path().join("api.sock");
    let mut guest_spec = GuestSpec::new(spec.kernel.clone(), spec.initrd.clone());
    guest_spec.vcpus = spec.vcpus;
    guest_spec.memory_mib = spec.memory_mib;
    guest_spec.vsock_uds = Some(uds.clone());
    guest_spec.api_sock = Some(api_sock.clone());
    if share {
        let placeholder = sockets.path().join("share");
        std::fs::create_dir(&placeholder)?;
        guest_spec.fs_dir = Some(placeholder);
        guest_spec.fs_tag = SHARE_TAG.into();
    }
    let mut guest = Runner::VesselVmm.spawn(&guest_spec)?;
    let client = connect_while_running(&mut guest, &uds, BOOT_TIMEOUT)?;
    client.check().context("Check before the snapshot")?;
    drop(client);
    let mut api = VmmApi::connect(&api_sock)?;
    api.call("pause")?;
    let (state, memory) = (dir.join("state"), dir.join("memory"));
    let reply = api.call_json(&json!({"action": "snapshot", "state": state, "memory": memory}))?;
    ensure!(reply["state"] == "paused", "snapshot: {reply}");
    api.call("shutdown")?;
    let out = guest.wait(Duration::from_secs(60))?;
    ensure!(out.status.success(), "the template VMM: {}", out.stderr);
    Ok(())
}

/// Starts a VMM restoring `template`, with its sockets at `uds` and
/// `api_sock`, and `share` as the directory of its virtio-fs share.
pub fn restore(
    template: &Template,
    uds: &Path,
    api_sock: &Path,
    share: Option<&Path>,
) -> Result<RunningGuest> {
    let mut cmd = Command::new(vessel_vmm()?);
    cmd.arg("--restore-state")
        .arg(&template.state)
        .arg("--restore-memory")
        .arg(&template.memory)
        .arg("--api-sock")
        .arg(api_sock)
        .arg("--vsock-uds")
        .arg(uds);
    if let Some(share) = share {
        cmd.arg("--fs-dir").arg(share);
    }
    RunningGuest::spawn(&mut cmd)
}

/// What makes a restored VM its own: the host's clock and fresh entropy
/// ([`AgentClient::give_identity`]).
pub fn give_identity(client: &AgentClient) -> Result<()> {
    client
        .give_identity()
        .context("SetGuestTime and ReseedRandom")
}

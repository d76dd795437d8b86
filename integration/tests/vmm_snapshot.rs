//! Snapshot and restore in vessel-vmm. An agent VM (2 vCPUs, 256 MiB) is
//! paused, snapshotted over the API socket and shut down; three new
//! vessel-vmm processes restore it at once from the same two files (the
//! memory mapped copy-on-write); on each the guest takes the vsock
//! device's TRANSPORT_RESET, the host reconnects and the agent answers,
//! and takes the per-VM identity calls (its clock, fresh host entropy, a
//! hostname of its own); each restored VM shuts down cleanly with status 0. A corrupt
//! state file, one of another format version, a cut memory file, a file
//! that is no snapshot at all and a vsock snapshot restored without a
//! socket are each refused with one line and status 1, and no guest runs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use vessel_agent_protocol::AgentClient;
use vessel_integration::agent::BOOT_TIMEOUT;
use vessel_integration::{
    agent_initramfs, connect_while_running, guest_kernel, vessel_vmm, ApiClient, BootSpec,
    Endpoints, RestoreSpec, Runner, RunningGuest, VmState,
};
use vessel_vmm_client::{template, Launch, Request, VmmCommand};

const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a restored VM may take to answer, and to exit.
const STEP_TIMEOUT: Duration = Duration::from_secs(120);
const MEMORY_MIB: u32 = 256;
/// VMs restored from the one snapshot at once.
const RESTORED: usize = 3;

/// A vessel-vmm that restores `state` and `memory`, with its sockets in
/// `dir` (none for vsock if `vsock` is false).
fn restore_command(state: &Path, memory: &Path, dir: &Path, vsock: bool) -> Result<Command> {
    let mut spec = RestoreSpec::new(state, memory);
    spec.endpoints = Endpoints {
        api_sock: Some(dir.join("api.sock")),
        vsock_uds: vsock.then(|| dir.join("vsock.sock")),
        ..Endpoints::default()
    };
    Ok(VmmCommand::new(vessel_vmm()?).command(&Launch::Restore(spec)))
}

/// Boots the agent VM, pauses it, snapshots it into `dir` and stops it
/// through the API; returns the state and memory paths.
fn snapshot_agent_vm(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let uds = dir.join("vsock.sock");
    let api_sock = dir.join("api.sock");
    let mut spec = BootSpec::new(guest_kernel()?, agent_initramfs()?);
    spec.vcpus = 2;
    spec.memory_mib = MEMORY_MIB;
    spec.endpoints.vsock_uds = Some(uds.clone());
    spec.endpoints.api_sock = Some(api_sock.clone());
    let mut guest = Runner::VesselVmm.spawn(&spec)?;
    let client = connect_while_running(&mut guest, &uds, BOOT_TIMEOUT, CALL_TIMEOUT)?;
    client.check().context("Check before the snapshot")?;

    let (state, memory) = (dir.join("state"), dir.join("memory"));
    let mut api = ApiClient::connect(&api_sock, STEP_TIMEOUT)?;
    let refused = api.request(&Request::Snapshot {
        state: state.clone(),
        memory: memory.clone(),
    })?;
    ensure!(
        !refused.ok
            && refused.error.as_deref()
                == Some("snapshot: cannot save the vCPUs: the VM must be paused first"),
        "a snapshot of a running VM: {refused:?}"
    );
    ensure!(api.pause()? == VmState::Paused);
    let info = api.snapshot(&state, &memory)?;
    ensure!(info.state == VmState::Paused, "{info:?}");
    ensure!(info.memory_bytes == u64::from(MEMORY_MIB) << 20, "{info:?}");
    ensure!(api.status()? == VmState::Paused);
    ensure!(api.shutdown()? == VmState::Stopping);
    drop(client);
    let out = guest.wait(STEP_TIMEOUT)?;
    ensure!(out.status.success(), "the snapshotted VMM: {}", out.stderr);
    Ok((state, memory))
}

/// One restored VM and its socket directory.
struct Restored {
    // Dropped first: the VMM, then its directory.
    guest: RunningGuest,
    uds: PathBuf,
    _dir: tempfile::TempDir,
}

impl Restored {
    fn start(state: &Path, memory: &Path) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut cmd = restore_command(state, memory, dir.path(), true)?;
        // The vsock device logs that the guest took its TRANSPORT_RESET.
        cmd.env("RUST_LOG", "vessel_vmm=info");
        let guest = RunningGuest::spawn(&mut cmd)?;
        Ok(Self {
            guest,
            uds: dir.path().join("vsock.sock"),
            _dir: dir,
        })
    }

    fn connect(&mut self) -> Result<AgentClient> {
        connect_while_running(&mut self.guest, &self.uds, STEP_TIMEOUT, CALL_TIMEOUT)
    }
}

/// Runs `cmd`, which must refuse to start: status 1, one line on stderr
/// containing `expected`, nothing on the console.
fn expect_refusal(mut cmd: Command, expected: &str) -> Result<()> {
    let out = RunningGuest::spawn(&mut cmd)?.wait(STEP_TIMEOUT)?;
    let line = out.stderr.trim();
    ensure!(
        out.status.code() == Some(1),
        "expected a refusal ({expected}), got {}: {line}",
        out.status
    );
    ensure!(
        line.starts_with("vessel-vmm: ") && line.contains(expected) && line.lines().count() == 1,
        "expected one line with {expected:?}, got {line:?}"
    );
    ensure!(out.console.is_empty(), "a guest ran: {}", out.console);
    Ok(())
}

/// A copy of `state` with the byte at `at` changed by `change`.
fn spoiled_copy(state: &Path, dir: &Path, name: &str, at: usize, change: u8) -> Result<PathBuf> {
    let mut bytes = std::fs::read(state)?;
    ensure!(at < bytes.len(), "the state file has {} bytes", bytes.len());
    bytes[at] ^= change;
    let path = dir.join(name);
    std::fs::write(&path, bytes)?;
    Ok(path)
}

#[test]
fn an_agent_vm_restored_from_a_snapshot_answers_and_shuts_down() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (state, memory) = snapshot_agent_vm(dir.path())?;

    let mut vms = (0..RESTORED)
        .map(|_| Restored::start(&state, &memory))
        .collect::<Result<Vec<_>>>()?;
    let mut failures = Vec::new();
    let mut clients = Vec::new();
    for (index, vm) in vms.iter_mut().enumerate() {
        let answered = vm.connect().and_then(|client| {
            client.check().context("Check")?;
            let version = client.version().context("Version")?;
            ensure!(version.api_version == "vessel.agent.v1", "{version:?}");
            ensure!(
                vm.guest
                    .vmm_log()
                    .contains("the guest took TRANSPORT_RESET"),
                "the guest took no TRANSPORT_RESET"
            );
            template::adopt(&client, None).context("SetGuestTime and ReseedRandom")?;
            client
                .set_hostname(&format!("restored-{index}"))
                .context("SetHostname")?;
            Ok(client)
        });
        match answered {
            Ok(client) => clients.push(client),
            Err(err) => failures.push(format!(
                "restored VM {index}: {err:#}\nVMM log:\n{}",
                vm.guest.vmm_log()
            )),
        }
    }
    if !failures.is_empty() {
        bail!("{}", failures.join("\n"));
    }
    // A second connection to a restored guest works as well.
    let again = vms[0].connect()?;
    again.check().context("Check on a second connection")?;
    drop(again);

    for (index, (vm, client)) in vms.into_iter().zip(clients).enumerate() {
        client
            .shutdown()
            .with_context(|| format!("Shutdown of restored VM {index}"))?;
        let out = vm.guest.wait(STEP_TIMEOUT)?;
        ensure!(
            out.status.success(),
            "restored VM {index} exited with {}: {}",
            out.status,
            out.stderr
        );
    }

    // Refusals, each before any guest runs.
    let bad = dir.path();
    let corrupt = spoiled_copy(&state, bad, "corrupt", 4000, 0x01)?;
    expect_refusal(
        restore_command(&corrupt, &memory, bad, true)?,
        "the checksum does not match (the file is corrupt)",
    )?;
    let other_version = spoiled_copy(&state, bad, "other-version", 8, 0x02)?;
    expect_refusal(
        restore_command(&other_version, &memory, bad, true)?,
        "format version 3, but this vessel-vmm reads version 1",
    )?;
    let cut = bad.join("cut-memory");
    std::fs::File::create(&cut)?.set_len(u64::from(MEMORY_MIB / 2) << 20)?;
    expect_refusal(
        restore_command(&state, &cut, bad, true)?,
        &format!(
            "the file is {} bytes, the snapshot's guest memory is {}",
            u64::from(MEMORY_MIB / 2) << 20,
            u64::from(MEMORY_MIB) << 20
        ),
    )?;
    expect_refusal(
        restore_command(&state, &memory, bad, false)?,
        "the snapshot has a vsock device: give it a socket with --vsock-uds",
    )?;
    Ok(())
}

#[test]
fn a_file_that_is_not_a_snapshot_is_refused() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (state, memory) = (dir.path().join("state"), dir.path().join("memory"));
    std::fs::write(&state, b"#!/bin/sh\necho this is not a snapshot\n")?;
    std::fs::File::create(&memory)?.set_len(1 << 20)?;
    expect_refusal(
        restore_command(&state, &memory, dir.path(), true)?,
        "is not a vessel-vmm snapshot state file",
    )
}

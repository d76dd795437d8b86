//! VMs restored from the agent VM template (`vessel_template`, made on
//! first use): three are restored at once; each answers health, takes a
//! hostname of its own, and after ReseedRandom gives random bytes no other
//! gives (without the reseed, clones of one snapshot share the guest's
//! CRNG state); each shuts down with status 0. Their memory is the
//! template's file, mapped copy-on-write. Their VMMs (no share) hold no
//! capability in any thread, with no_new_privs.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use serde_json::json;
use vessel_agent_protocol::agent::check_response::ServingStatus;
use vessel_integration::agent::container_spec;
use vessel_integration::{AgentVm, Container};

const CALL_TIMEOUT: Duration = Duration::from_secs(120);
const RESTORED: usize = 3;

/// The VM's hostname (the container shares the VM's UTS namespace) and 16
/// bytes from its /dev/urandom, in hex.
fn hostname_and_random(vm: &AgentVm) -> Result<(String, String)> {
    let mut spec = container_spec(&[
        "sh",
        "-c",
        "hostname; head -c 16 /dev/urandom | od -An -tx1",
    ]);
    spec["linux"]["namespaces"] = json!([{ "type": "pid" }, { "type": "mount" }]);
    if let Some(spec) = spec.as_object_mut() {
        spec.remove("hostname");
    }
    let out = Container::run(vm.client(), "identity", &spec)?;
    ensure!(
        out.status == 0,
        "exit {}: {}",
        out.status,
        out.stderr_text()
    );
    let text = out.stdout_text();
    let mut lines = text.lines();
    let hostname = lines.next().context("no hostname")?.trim().to_owned();
    let random: String = lines
        .collect::<Vec<_>>()
        .join("")
        .split_whitespace()
        .collect();
    ensure!(random.len() == 32, "16 random bytes in hex: {random:?}");
    Ok((hostname, random))
}

#[test]
fn restored_vms_have_identities_of_their_own() -> Result<()> {
    let vms: Vec<AgentVm> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..RESTORED)
            .map(|_| s.spawn(|| AgentVm::restore(CALL_TIMEOUT)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("restore thread"))
            .collect::<Result<Vec<_>>>()
    })?;
    let pids: std::collections::HashSet<u32> = vms.iter().map(AgentVm::vmm_pid).collect();
    ensure!(pids.len() == RESTORED, "{RESTORED} VMMs");

    let mut seen = Vec::new();
    for (i, vm) in vms.iter().enumerate() {
        ensure!(
            vm.client().check()? == ServingStatus::SERVING,
            "VM {i} is not serving"
        );
        vessel_integration::privileges::check_vmm(vm.vmm_pid(), false)
            .with_context(|| format!("VM {i}'s privileges"))?;
        let name = format!("restored-{i}");
        vm.client().set_hostname(&name).context("SetHostname")?;
        let (hostname, random) = hostname_and_random(vm).with_context(|| format!("VM {i}"))?;
        ensure!(hostname == name, "VM {i} calls itself {hostname:?}");
        seen.push(random);
    }
    let distinct: std::collections::HashSet<&String> = seen.iter().collect();
    ensure!(
        distinct.len() == RESTORED,
        "restored VMs share random bytes: {seen:?}"
    );

    for (i, vm) in vms.into_iter().enumerate() {
        let status = vm.shutdown(CALL_TIMEOUT)?;
        ensure!(status.success(), "VM {i} ended with {status}");
    }
    Ok(())
}

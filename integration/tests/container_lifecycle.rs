//! Containers in the guest through the agent, from create to remove: output
//! and exit codes, stdout and stderr kept apart, exec into a running
//! container (whose PID 1 is its own process), its own hostname, SIGTERM
//! and SIGKILL, ListProcesses, RemoveContainer, and the error codes (an
//! unknown or duplicate id, a bad spec, a second start, a missing rootfs,
//! a command that does not exist).
//!
//! One VM (2 vCPUs, 512 MiB, the busybox rootfs in its initramfs) serves
//! every case; each case has its own container id. Guest syscalls cost
//! milliseconds here, so the commands are tiny and no time is asserted.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use serde_json::json;
use ttrpc::Code;
use vessel_agent_protocol::AgentClient;
use vessel_integration::agent::{
    container_spec, create_request, expect_code, expect_refusal, read_to_eof, read_until, Stream,
};
use vessel_integration::{AgentVm, Cases, Container};

/// Per call; WaitProcess and reads of a live process block up to this.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// What the guest's own hostname is set to; containers must not change it.
const GUEST_HOSTNAME: &str = "vessel-guest";

#[test]
fn container_lifecycle() -> Result<()> {
    let vm = AgentVm::restore(CALL_TIMEOUT)?;
    let client = vm.client();
    client.set_hostname(GUEST_HOSTNAME).context("SetHostname")?;

    let mut cases = Cases::new().retry_host_crashes(|| vm.crashes());
    cases.run("echo hello", || echo_hello(client));
    cases.run("exit code", || exit_code(client));
    cases.run("stderr apart", || stderr_apart(client));
    cases.run("exec into a running container", || exec_into(client));
    cases.run("hostname", || hostname(client));
    cases.run("SIGTERM", || sigterm(client));
    cases.run("SIGKILL", || sigkill(client));
    cases.run("ListProcesses", || list_processes(client));
    cases.run("RemoveContainer", || remove(client));
    cases.run("duplicate id", || duplicate_id(client));
    cases.run("unknown id", || unknown_id(client));
    cases.run("second start", || second_start(client));
    cases.run("invalid spec", || invalid_spec(client));
    cases.run("missing rootfs", || missing_rootfs(client));
    cases.run("nonexistent command", || nonexistent_command(client));
    cases.finish(&vm)
}

fn echo_hello(client: &AgentClient) -> Result<()> {
    let c = Container::create(client, "echo-hello", &container_spec(&["echo", "hello"]))?;
    ensure!(c.pid() > 0, "CreateContainer returned pid 0");
    c.start()?;
    let stdout = read_to_eof(client, c.id(), "", Stream::Stdout, 4096)?;
    ensure!(
        stdout == b"hello\n",
        "stdout {:?}",
        String::from_utf8_lossy(&stdout)
    );
    ensure!(c.wait("")? == 0, "exit status");
    // WaitProcess answers again once the process is gone.
    ensure!(c.wait("")? == 0, "exit status of a second WaitProcess");
    c.remove()
}

fn exit_code(client: &AgentClient) -> Result<()> {
    let out = Container::run(
        client,
        "exit-code",
        &container_spec(&["sh", "-c", "exit 3"]),
    )?;
    ensure!(out.status == 3, "exit status {} (want 3)", out.status);
    Ok(())
}

fn stderr_apart(client: &AgentClient) -> Result<()> {
    let spec = container_spec(&["sh", "-c", "echo out; echo err >&2"]);
    let out = Container::run(client, "stderr-apart", &spec)?;
    ensure!(
        out.stdout == b"out\n" && out.stderr == b"err\n" && out.status == 0,
        "{out:?}"
    );
    Ok(())
}

fn exec_into(client: &AgentClient) -> Result<()> {
    let c = Container::create(client, "exec-into", &container_spec(&["sleep", "1000"]))?;
    c.start()?;
    let out = c.exec_output("echo", &["echo", "exec-ok"])?;
    ensure!(
        out.stdout == b"exec-ok\n" && out.status == 0,
        "exec echo: {out:?}"
    );

    // Isolation: the container's PID 1 is its own init, not the agent.
    let out = c.exec_output("cmdline", &["cat", "/proc/1/cmdline"])?;
    ensure!(
        out.stdout == b"sleep\x001000\x00",
        "/proc/1/cmdline in the container: {:?}",
        out.stdout_text()
    );
    let out = c.exec_output("ps", &["ps"])?;
    let ps = out.stdout_text();
    let init = ps
        .lines()
        .find(|line| line.split_whitespace().next() == Some("1"));
    ensure!(
        init.is_some_and(|line| line.contains("sleep")),
        "ps in the container shows no sleep as PID 1:\n{ps}"
    );
    ensure!(
        !ps.contains("/init") && !ps.contains("vessel-agent"),
        "ps in the container sees guest processes:\n{ps}"
    );
    c.remove()
}

fn hostname(client: &AgentClient) -> Result<()> {
    let mut spec = container_spec(&["hostname"]);
    spec["hostname"] = json!("pod-a");
    let out = Container::run(client, "hostname-a", &spec)?;
    ensure!(out.stdout == b"pod-a\n", "hostname in pod-a: {out:?}");

    // A container without a UTS namespace sees the guest's own hostname,
    // which the pod-a container did not touch.
    let mut spec = container_spec(&["hostname"]);
    if let Some(map) = spec.as_object_mut() {
        map.remove("hostname");
    }
    if let Some(namespaces) = spec["linux"]["namespaces"].as_array_mut() {
        namespaces.retain(|ns| ns["type"] != "uts");
    }
    let out = Container::run(client, "hostname-guest", &spec)?;
    ensure!(
        out.stdout_text() == format!("{GUEST_HOSTNAME}\n"),
        "the guest's hostname changed: {out:?}"
    );
    client.version().context("Version after the containers")?;
    Ok(())
}

fn sigterm(client: &AgentClient) -> Result<()> {
    // "ready" only once the trap is set: a TERM before it would end sh with 143.
    let script = "trap 'exit 42' TERM; echo ready; while true; do sleep 0.1; done";
    let c = Container::create(client, "sigterm", &container_spec(&["sh", "-c", script]))?;
    c.start()?;
    read_until(client, c.id(), "", Stream::Stdout, b"ready\n")?;
    c.signal("", 15)?;
    let status = c.wait("")?;
    ensure!(status == 42, "exit status after SIGTERM {status} (want 42)");
    c.remove()
}

fn sigkill(client: &AgentClient) -> Result<()> {
    let c = Container::create(client, "sigkill", &container_spec(&["sleep", "1000"]))?;
    c.start()?;
    c.signal("", 9)?;
    let status = c.wait("")?;
    ensure!(
        status == 137,
        "exit status after SIGKILL {status} (want 128+9)"
    );
    c.remove()
}

fn list_processes(client: &AgentClient) -> Result<()> {
    let c = Container::create(client, "list", &container_spec(&["sleep", "1000"]))?;
    c.start()?;
    let exec_pid = c.exec("sleeper", &["sleep", "1000"])?;
    let procs = client.list_processes(c.id()).context("ListProcesses")?;
    let listed: Vec<(u32, &str)> = procs.iter().map(|p| (p.pid, p.exec_id.as_str())).collect();
    ensure!(
        listed.contains(&(c.pid(), "")),
        "the init (pid {}) is not listed: {listed:?}",
        c.pid()
    );
    ensure!(
        listed.contains(&(exec_pid, "sleeper")),
        "the exec (pid {exec_pid}) is not listed: {listed:?}"
    );
    c.remove()
}

fn remove(client: &AgentClient) -> Result<()> {
    let id = "removed";
    let c = Container::create(client, id, &container_spec(&["sleep", "1000"]))?;
    c.start()?;
    c.remove()?;
    expect_code(
        "StartContainer",
        client.start_container(id),
        Code::NOT_FOUND,
    )?;
    expect_code("WaitProcess", client.wait_process(id, ""), Code::NOT_FOUND)?;
    expect_code(
        "StatsContainer",
        client.stats_container(id),
        Code::NOT_FOUND,
    )?;
    // The id is free again.
    let out = Container::run(client, id, &container_spec(&["echo", "again"]))?;
    ensure!(out.stdout == b"again\n", "{out:?}");
    Ok(())
}

fn duplicate_id(client: &AgentClient) -> Result<()> {
    let spec = container_spec(&["sleep", "1000"]);
    let c = Container::create(client, "dup", &spec)?;
    expect_code(
        "a second CreateContainer",
        Container::create_with(client, &create_request("dup", &spec)),
        Code::ALREADY_EXISTS,
    )?;
    c.remove()
}

fn unknown_id(client: &AgentClient) -> Result<()> {
    let id = "no-such-container";
    expect_code(
        "StartContainer",
        client.start_container(id),
        Code::NOT_FOUND,
    )?;
    expect_code(
        "SignalProcess",
        client.signal_process(id, "", 9, false),
        Code::NOT_FOUND,
    )?;
    expect_code("WaitProcess", client.wait_process(id, ""), Code::NOT_FOUND)?;
    Ok(())
}

fn second_start(client: &AgentClient) -> Result<()> {
    let c = Container::create(client, "twice", &container_spec(&["sleep", "1000"]))?;
    c.start()?;
    expect_code(
        "a second StartContainer",
        client.start_container(c.id()),
        Code::FAILED_PRECONDITION,
    )?;
    c.remove()
}

fn invalid_spec(client: &AgentClient) -> Result<()> {
    let mut req = create_request("bad-spec", &container_spec(&["true"]));
    req.oci_spec = b"{ not json".to_vec();
    expect_code(
        "a spec that is not JSON",
        Container::create_with(client, &req),
        Code::INVALID_ARGUMENT,
    )?;
    req.oci_spec = br#"{"ociVersion": 5, "process": "sh"}"#.to_vec();
    expect_code(
        "JSON that is not a runtime spec",
        Container::create_with(client, &req),
        Code::INVALID_ARGUMENT,
    )?;
    Ok(())
}

fn missing_rootfs(client: &AgentClient) -> Result<()> {
    let missing = "/vessel/rootfs/missing";
    let spec = container_spec(&["echo", "recovered"]);
    let mut req = create_request("rootfs", &spec);
    req.rootfs_path = missing.into();
    expect_refusal(
        "CreateContainer on a missing rootfs",
        Container::create_with(client, &req),
        missing,
    )?;
    // Nothing was left behind: the same id works.
    let out = Container::run(client, "rootfs", &spec)?;
    ensure!(out.stdout == b"recovered\n" && out.status == 0, "{out:?}");
    Ok(())
}

fn nonexistent_command(client: &AgentClient) -> Result<()> {
    let command = "no-such-command";
    let req = create_request("no-command", &container_spec(&[command]));
    // Refused at create (the engine looks the command up) or at start.
    match Container::create_with(client, &req) {
        Err(err) => {
            expect_refusal::<()>("CreateContainer", Err(err), command)?;
        }
        Ok(c) => {
            expect_refusal("StartContainer", client.start_container(c.id()), command)?;
            c.remove()?;
        }
    }
    Ok(())
}

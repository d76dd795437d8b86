//! A container in an agent VM, driven from tests and benchmarks: created
//! from a spec, started, exec'd into, read to EOF, waited for, and removed
//! on drop.

use anyhow::{Context, Result};
use serde_json::Value;
use vessel_agent_protocol::agent::{CreateContainerRequest, StatsContainerResponse};
use vessel_agent_protocol::{AgentClient, ClientError};

use crate::agent::{create_request, process_spec, read_to_eof, Stream};

/// What a process left: both streams to EOF and its exit status.
#[derive(Debug, Clone)]
pub struct ProcessOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub status: i32,
}

impl ProcessOutput {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// The most output [`Container::output`] takes per stream.
const MAX_OUTPUT: usize = 1024 * 1024;

/// A container created through the agent; removed (best effort) when
/// dropped, so a failing case leaves nothing running.
pub struct Container {
    client: AgentClient,
    id: String,
    pid: u32,
    removed: bool,
}

impl Container {
    /// Creates container `id` from `spec` on the busybox rootfs (see
    /// [`create_request`]); its process runs only on [`Container::start`].
    pub fn create(client: &AgentClient, id: &str, spec: &Value) -> Result<Container> {
        Container::create_with(client, &create_request(id, spec))
            .with_context(|| format!("create container {id}"))
    }

    /// Creates a container from a request as given.
    pub fn create_with(
        client: &AgentClient,
        req: &CreateContainerRequest,
    ) -> Result<Container, ClientError> {
        let pid = client.create_container(req)?;
        Ok(Container {
            client: client.clone(),
            id: req.container_id.clone(),
            pid,
            removed: false,
        })
    }

    /// Creates and starts container `id`, then takes its init's output.
    pub fn run(client: &AgentClient, id: &str, spec: &Value) -> Result<ProcessOutput> {
        Container::run_request(client, &create_request(id, spec))
    }

    /// [`Container::run`] of a request as given.
    pub fn run_request(
        client: &AgentClient,
        req: &CreateContainerRequest,
    ) -> Result<ProcessOutput> {
        let container = Container::create_with(client, req)
            .with_context(|| format!("create container {}", req.container_id))?;
        container.start()?;
        let out = container.output("")?;
        container.remove()?;
        Ok(out)
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The init's pid in the guest, as CreateContainer returned it.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn client(&self) -> &AgentClient {
        &self.client
    }

    pub fn start(&self) -> Result<()> {
        self.client
            .start_container(&self.id)
            .with_context(|| format!("start {}", self.id))
    }

    /// Starts `args` in the container as exec `exec_id`; returns its pid.
    pub fn exec(&self, exec_id: &str, args: &[&str]) -> Result<u32> {
        let process = process_spec(args).to_string();
        self.client
            .exec_process(&self.id, exec_id, process.as_bytes(), false)
            .with_context(|| format!("exec {exec_id} {args:?} in {}", self.id))
    }

    /// Runs `args` as exec `exec_id` and takes its output.
    pub fn exec_output(&self, exec_id: &str, args: &[&str]) -> Result<ProcessOutput> {
        self.exec(exec_id, args)?;
        self.output(exec_id)
    }

    /// Stdout then stderr of the process to EOF (so for small outputs:
    /// a pipe the process fills while we read the other would stall),
    /// then its exit status.
    pub fn output(&self, exec_id: &str) -> Result<ProcessOutput> {
        let stdout = read_to_eof(&self.client, &self.id, exec_id, Stream::Stdout, MAX_OUTPUT)?;
        let stderr = read_to_eof(&self.client, &self.id, exec_id, Stream::Stderr, MAX_OUTPUT)?;
        let status = self.wait(exec_id)?;
        Ok(ProcessOutput {
            stdout,
            stderr,
            status,
        })
    }

    /// The process's exit status (128+signal if killed).
    pub fn wait(&self, exec_id: &str) -> Result<i32> {
        let resp = self
            .client
            .wait_process(&self.id, exec_id)
            .with_context(|| format!("wait for {}/{exec_id:?}", self.id))?;
        Ok(resp.exit_status)
    }

    pub fn signal(&self, exec_id: &str, signal: u32) -> Result<()> {
        self.client
            .signal_process(&self.id, exec_id, signal, false)
            .with_context(|| format!("signal {signal} to {}/{exec_id:?}", self.id))
    }

    pub fn stats(&self) -> Result<StatsContainerResponse> {
        self.client
            .stats_container(&self.id)
            .with_context(|| format!("stats of {}", self.id))
    }

    /// Removes the container (kills what is left) and checks the agent
    /// took it.
    pub fn remove(mut self) -> Result<()> {
        self.removed = true;
        self.client
            .remove_container(&self.id, 0)
            .with_context(|| format!("remove {}", self.id))
    }
}

impl std::fmt::Debug for Container {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Container")
            .field("id", &self.id)
            .field("pid", &self.pid)
            .finish()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if !self.removed {
            let _ = self.client.remove_container(&self.id, 0);
        }
    }
}

//! The ttrpc service: `vessel.agent.v1.AgentService`.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use ttrpc::TtrpcContext;
use vessel_agent_protocol::agent::{self, check_response::ServingStatus};
use vessel_agent_protocol::{create_agent_service, AgentService, API_VERSION};

use crate::container::create::CreateRequest;
use crate::container::stdio::Output;
use crate::container::{Engine, Stats};
use crate::error::AgentError;
use crate::guest::Guest;

/// The agent's implementation of the API.
pub struct Service {
    guest: Guest,
    /// `None` on a host (`--listen`): containers run only in the guest.
    engine: Option<Arc<Engine>>,
}

impl Service {
    /// The service over `guest` and, in the guest, the container `engine`.
    pub fn new(guest: Guest, engine: Option<Arc<Engine>>) -> Service {
        Service { guest, engine }
    }
}

/// Workers each connection starts with: enough for the blocking calls one
/// client makes at once (a read of each stream, a wait), so few are started
/// later, while requests are in flight.
const WORKERS_AT_CONNECT: usize = 4;
/// Idle workers a connection keeps instead of ending them. Starting and
/// ending threads changes the address space, which on an emulated-CPL0 host
/// can spoil a concurrent receive (see `emulated.rs`): keep them.
const MAX_IDLE_WORKERS: usize = 32;

/// Starts serving `service` on `addr` (`vsock://-1:1024`, `unix:///path`);
/// the server runs on its own threads until dropped or shut down.
pub fn start(addr: &str, service: Service) -> ttrpc::Result<ttrpc::Server> {
    let service: Arc<dyn AgentService + Send + Sync> = Arc::new(service);
    let mut server = ttrpc::Server::new()
        .set_thread_count_default(WORKERS_AT_CONNECT)
        .set_thread_count_min(1)
        .set_thread_count_max(MAX_IDLE_WORKERS)
        .bind(addr)?
        .register_service(create_agent_service(service));
    server.start()?;
    Ok(server)
}

/// A timestamp as seconds and nanoseconds since the epoch.
fn epoch(at: SystemTime) -> (i64, u32) {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    (since.as_secs() as i64, since.subsec_nanos())
}

impl Service {
    fn engine(&self, call: &'static str) -> Result<&Engine, AgentError> {
        self.engine.as_deref().ok_or(AgentError::HostMode { call })
    }

    fn read(
        &self,
        req: &agent::ReadStreamRequest,
        which: Output,
    ) -> ttrpc::Result<agent::ReadStreamResponse> {
        let call = match which {
            Output::Stdout => "ReadStdout",
            Output::Stderr => "ReadStderr",
        };
        let data = self
            .engine(call)?
            .read_output(&req.container_id, &req.exec_id, which, req.len as usize)
            .map_err(AgentError::from)?;
        let mut resp = agent::ReadStreamResponse::new();
        resp.data = data;
        Ok(resp)
    }
}

impl AgentService for Service {
    fn check(
        &self,
        _ctx: &TtrpcContext,
        _req: agent::CheckRequest,
    ) -> ttrpc::Result<agent::CheckResponse> {
        let mut resp = agent::CheckResponse::new();
        resp.status = ServingStatus::SERVING.into();
        Ok(resp)
    }

    fn version(
        &self,
        _ctx: &TtrpcContext,
        _req: agent::VersionRequest,
    ) -> ttrpc::Result<agent::VersionResponse> {
        let mut resp = agent::VersionResponse::new();
        resp.agent_version = env!("CARGO_PKG_VERSION").into();
        resp.api_version = API_VERSION.into();
        resp.kernel_release = self.guest.kernel_release();
        Ok(resp)
    }

    fn set_guest_time(
        &self,
        _ctx: &TtrpcContext,
        req: agent::SetGuestTimeRequest,
    ) -> ttrpc::Result<agent::SetGuestTimeResponse> {
        self.guest.set_time(req.seconds, req.nanos)?;
        Ok(agent::SetGuestTimeResponse::new())
    }

    fn set_hostname(
        &self,
        _ctx: &TtrpcContext,
        req: agent::SetHostnameRequest,
    ) -> ttrpc::Result<agent::SetHostnameResponse> {
        self.guest.set_hostname(&req.hostname)?;
        Ok(agent::SetHostnameResponse::new())
    }

    fn mount_share(
        &self,
        _ctx: &TtrpcContext,
        req: agent::MountShareRequest,
    ) -> ttrpc::Result<agent::MountShareResponse> {
        self.engine("MountShare")?;
        self.guest.mount_share(&req.tag)?;
        Ok(agent::MountShareResponse::new())
    }

    fn reseed_random(
        &self,
        _ctx: &TtrpcContext,
        req: agent::ReseedRandomRequest,
    ) -> ttrpc::Result<agent::ReseedRandomResponse> {
        self.guest.reseed(&req.data)?;
        Ok(agent::ReseedRandomResponse::new())
    }

    fn shutdown(
        &self,
        _ctx: &TtrpcContext,
        _req: agent::ShutdownRequest,
    ) -> ttrpc::Result<agent::ShutdownResponse> {
        tracing::info!("shutdown requested");
        // Detached: it ends the guest after the reply has gone out.
        drop(self.guest.shutdown_later());
        Ok(agent::ShutdownResponse::new())
    }

    fn create_container(
        &self,
        _ctx: &TtrpcContext,
        req: agent::CreateContainerRequest,
    ) -> ttrpc::Result<agent::CreateContainerResponse> {
        let container = self
            .engine("CreateContainer")?
            .create(CreateRequest {
                id: req.container_id,
                sandbox_id: req.sandbox_id,
                spec: req.oci_spec,
                rootfs: req.rootfs_path,
                terminal: req.terminal,
                overlay: req.rootfs_overlay,
            })
            .map_err(AgentError::from)?;
        let mut resp = agent::CreateContainerResponse::new();
        resp.pid = container.init.pid as u32;
        Ok(resp)
    }

    fn start_container(
        &self,
        _ctx: &TtrpcContext,
        req: agent::StartContainerRequest,
    ) -> ttrpc::Result<agent::StartContainerResponse> {
        self.engine("StartContainer")?
            .start(&req.container_id)
            .map_err(AgentError::from)?;
        Ok(agent::StartContainerResponse::new())
    }

    fn remove_container(
        &self,
        _ctx: &TtrpcContext,
        req: agent::RemoveContainerRequest,
    ) -> ttrpc::Result<agent::RemoveContainerResponse> {
        self.engine("RemoveContainer")?
            .remove(&req.container_id, req.timeout_seconds)
            .map_err(AgentError::from)?;
        Ok(agent::RemoveContainerResponse::new())
    }

    fn pause_container(
        &self,
        _ctx: &TtrpcContext,
        req: agent::PauseContainerRequest,
    ) -> ttrpc::Result<agent::PauseContainerResponse> {
        self.engine("PauseContainer")?
            .pause(&req.container_id)
            .map_err(AgentError::from)?;
        Ok(agent::PauseContainerResponse::new())
    }

    fn resume_container(
        &self,
        _ctx: &TtrpcContext,
        req: agent::ResumeContainerRequest,
    ) -> ttrpc::Result<agent::ResumeContainerResponse> {
        self.engine("ResumeContainer")?
            .resume(&req.container_id)
            .map_err(AgentError::from)?;
        Ok(agent::ResumeContainerResponse::new())
    }

    fn update_container(
        &self,
        _ctx: &TtrpcContext,
        req: agent::UpdateContainerRequest,
    ) -> ttrpc::Result<agent::UpdateContainerResponse> {
        self.engine("UpdateContainer")?
            .update(&req.container_id, &req.resources)
            .map_err(AgentError::from)?;
        Ok(agent::UpdateContainerResponse::new())
    }

    fn exec_process(
        &self,
        _ctx: &TtrpcContext,
        req: agent::ExecProcessRequest,
    ) -> ttrpc::Result<agent::ExecProcessResponse> {
        let pid = self
            .engine("ExecProcess")?
            .exec(&req.container_id, &req.exec_id, &req.process, req.terminal)
            .map_err(AgentError::from)?;
        let mut resp = agent::ExecProcessResponse::new();
        resp.pid = pid as u32;
        Ok(resp)
    }

    fn signal_process(
        &self,
        _ctx: &TtrpcContext,
        req: agent::SignalProcessRequest,
    ) -> ttrpc::Result<agent::SignalProcessResponse> {
        self.engine("SignalProcess")?
            .signal(&req.container_id, &req.exec_id, req.signal, req.all)
            .map_err(AgentError::from)?;
        Ok(agent::SignalProcessResponse::new())
    }

    fn wait_process(
        &self,
        _ctx: &TtrpcContext,
        req: agent::WaitProcessRequest,
    ) -> ttrpc::Result<agent::WaitProcessResponse> {
        let exit = self
            .engine("WaitProcess")?
            .wait(&req.container_id, &req.exec_id)
            .map_err(AgentError::from)?;
        let mut resp = agent::WaitProcessResponse::new();
        resp.exit_status = exit.status;
        (resp.exited_at_seconds, resp.exited_at_nanos) = epoch(exit.at);
        Ok(resp)
    }

    fn list_processes(
        &self,
        _ctx: &TtrpcContext,
        req: agent::ListProcessesRequest,
    ) -> ttrpc::Result<agent::ListProcessesResponse> {
        let entries = self
            .engine("ListProcesses")?
            .processes(&req.container_id)
            .map_err(AgentError::from)?;
        let mut resp = agent::ListProcessesResponse::new();
        resp.processes = entries
            .into_iter()
            .map(|e| {
                let mut info = agent::ProcessInfo::new();
                info.pid = e.pid as u32;
                info.exec_id = e.exec_id;
                info
            })
            .collect();
        Ok(resp)
    }

    fn read_stdout(
        &self,
        _ctx: &TtrpcContext,
        req: agent::ReadStreamRequest,
    ) -> ttrpc::Result<agent::ReadStreamResponse> {
        self.read(&req, Output::Stdout)
    }

    fn read_stderr(
        &self,
        _ctx: &TtrpcContext,
        req: agent::ReadStreamRequest,
    ) -> ttrpc::Result<agent::ReadStreamResponse> {
        self.read(&req, Output::Stderr)
    }

    fn write_stdin(
        &self,
        _ctx: &TtrpcContext,
        req: agent::WriteStreamRequest,
    ) -> ttrpc::Result<agent::WriteStreamResponse> {
        let len = self
            .engine("WriteStdin")?
            .write_stdin(&req.container_id, &req.exec_id, &req.data)
            .map_err(AgentError::from)?;
        let mut resp = agent::WriteStreamResponse::new();
        resp.len = len as u32;
        Ok(resp)
    }

    fn close_stdin(
        &self,
        _ctx: &TtrpcContext,
        req: agent::CloseStdinRequest,
    ) -> ttrpc::Result<agent::CloseStdinResponse> {
        self.engine("CloseStdin")?
            .close_stdin(&req.container_id, &req.exec_id)
            .map_err(AgentError::from)?;
        Ok(agent::CloseStdinResponse::new())
    }

    fn tty_win_resize(
        &self,
        _ctx: &TtrpcContext,
        req: agent::TtyWinResizeRequest,
    ) -> ttrpc::Result<agent::TtyWinResizeResponse> {
        self.engine("TtyWinResize")?
            .resize(&req.container_id, &req.exec_id, req.rows, req.columns)
            .map_err(AgentError::from)?;
        Ok(agent::TtyWinResizeResponse::new())
    }

    fn stats_container(
        &self,
        _ctx: &TtrpcContext,
        req: agent::StatsContainerRequest,
    ) -> ttrpc::Result<agent::StatsContainerResponse> {
        let stats = self
            .engine("StatsContainer")?
            .stats(&req.container_id)
            .map_err(AgentError::from)?;
        Ok(stats_response(&stats))
    }

    fn get_oom_event(
        &self,
        _ctx: &TtrpcContext,
        _req: agent::GetOOMEventRequest,
    ) -> ttrpc::Result<agent::GetOOMEventResponse> {
        let id = self
            .engine("GetOOMEvent")?
            .next_oom()
            .map_err(AgentError::from)?;
        let mut resp = agent::GetOOMEventResponse::new();
        resp.container_id = id;
        Ok(resp)
    }
}

/// The API's form of cgroup statistics.
fn stats_response(stats: &Stats) -> agent::StatsContainerResponse {
    let mut cpu = agent::CpuStats::new();
    cpu.usage_total_ns = stats.cpu.usage_usec * 1000;
    cpu.usage_user_ns = stats.cpu.user_usec * 1000;
    cpu.usage_system_ns = stats.cpu.system_usec * 1000;
    cpu.throttled_periods = stats.cpu.nr_throttled;
    cpu.throttled_time_ns = stats.cpu.throttled_usec * 1000;
    let mut memory = agent::MemoryStats::new();
    memory.usage_bytes = stats.memory.current;
    memory.limit_bytes = stats.memory.limit.unwrap_or(0);
    memory.max_usage_bytes = stats.memory.peak;
    memory.oom_kills = stats.memory.oom_kills;
    let mut pids = agent::PidsStats::new();
    pids.current = stats.pids.current;
    pids.limit = stats.pids.limit.unwrap_or(0);
    let mut io = agent::IoStats::new();
    io.read_bytes = stats.io.rbytes;
    io.write_bytes = stats.io.wbytes;
    io.read_ios = stats.io.rios;
    io.write_ios = stats.io.wios;
    let mut resp = agent::StatsContainerResponse::new();
    resp.cpu = Some(cpu).into();
    resp.memory = Some(memory).into();
    resp.pids = Some(pids).into();
    resp.io = Some(io).into();
    resp
}

#[cfg(test)]
mod tests;

//! The ttrpc service: `vessel.agent.v1.AgentService`.

use std::sync::Arc;

use ttrpc::TtrpcContext;
use vessel_agent_protocol::agent::{self, check_response::ServingStatus};
use vessel_agent_protocol::{create_agent_service, AgentService, API_VERSION};

use crate::error::AgentError;
use crate::guest::Guest;

/// The agent's implementation of the API.
pub struct Service {
    guest: Guest,
}

impl Service {
    /// The service over `guest`.
    pub fn new(guest: Guest) -> Service {
        Service { guest }
    }
}

/// Starts serving `service` on `addr` (`vsock://-1:1024`, `unix:///path`);
/// the server runs on its own threads until dropped or shut down.
pub fn start(addr: &str, service: Service) -> ttrpc::Result<ttrpc::Server> {
    let service: Arc<dyn AgentService + Send + Sync> = Arc::new(service);
    let mut server = ttrpc::Server::new()
        .bind(addr)?
        .register_service(create_agent_service(service));
    server.start()?;
    Ok(server)
}

fn unimplemented<T>(call: &'static str) -> ttrpc::Result<T> {
    Err(AgentError::Unimplemented { call }.into())
}

/// Container RPCs: defined in the API, implemented in a later issue.
macro_rules! not_yet {
    ($($method:ident($req:ident) -> $resp:ident = $name:literal;)*) => {
        $(
            fn $method(
                &self,
                _ctx: &TtrpcContext,
                _req: agent::$req,
            ) -> ttrpc::Result<agent::$resp> {
                unimplemented($name)
            }
        )*
    };
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

    not_yet! {
        create_container(CreateContainerRequest) -> CreateContainerResponse = "CreateContainer";
        start_container(StartContainerRequest) -> StartContainerResponse = "StartContainer";
        remove_container(RemoveContainerRequest) -> RemoveContainerResponse = "RemoveContainer";
        pause_container(PauseContainerRequest) -> PauseContainerResponse = "PauseContainer";
        resume_container(ResumeContainerRequest) -> ResumeContainerResponse = "ResumeContainer";
        update_container(UpdateContainerRequest) -> UpdateContainerResponse = "UpdateContainer";
        exec_process(ExecProcessRequest) -> ExecProcessResponse = "ExecProcess";
        signal_process(SignalProcessRequest) -> SignalProcessResponse = "SignalProcess";
        wait_process(WaitProcessRequest) -> WaitProcessResponse = "WaitProcess";
        list_processes(ListProcessesRequest) -> ListProcessesResponse = "ListProcesses";
        read_stdout(ReadStreamRequest) -> ReadStreamResponse = "ReadStdout";
        read_stderr(ReadStreamRequest) -> ReadStreamResponse = "ReadStderr";
        write_stdin(WriteStreamRequest) -> WriteStreamResponse = "WriteStdin";
        close_stdin(CloseStdinRequest) -> CloseStdinResponse = "CloseStdin";
        tty_win_resize(TtyWinResizeRequest) -> TtyWinResizeResponse = "TtyWinResize";
        stats_container(StatsContainerRequest) -> StatsContainerResponse = "StatsContainer";
        get_oom_event(GetOOMEventRequest) -> GetOOMEventResponse = "GetOOMEvent";
    }
}

#[cfg(test)]
mod tests;

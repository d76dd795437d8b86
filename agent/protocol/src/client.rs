//! The host side of the agent API: connect through the VMM's hybrid vsock
//! socket and call the agent with typed methods.
//!
//! Hybrid vsock (as in Firecracker): the VMM listens on a unix socket; a host
//! client connects, writes `CONNECT <port>\n` and reads one line back.
//! `OK <hostport>\n` means the stream now reaches the guest's vsock `port`;
//! anything else, or EOF, means nobody listens there yet (the agent is still
//! booting), so [`AgentClient::connect`] retries until its timeout.

use std::io::{self, Read, Write};
use std::os::unix::io::IntoRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::agent::{
    check_response::ServingStatus, CheckRequest, CloseStdinRequest, CreateContainerRequest,
    ExecProcessRequest, GetOOMEventRequest, ListProcessesRequest, MountShareRequest,
    PauseContainerRequest, ProcessInfo, ReadStreamRequest, RemoveContainerRequest,
    ReseedRandomRequest, ResumeContainerRequest, SetGuestTimeRequest, SetHostnameRequest,
    ShutdownRequest, SignalProcessRequest, StartContainerRequest, StatsContainerRequest,
    StatsContainerResponse, TtyWinResizeRequest, UpdateContainerRequest, VersionRequest,
    VersionResponse, WaitProcessRequest, WaitProcessResponse, WriteStreamRequest,
};
use crate::AgentServiceClient;

/// The per-call timeout unless [`AgentClient::with_call_timeout`] says otherwise.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Bytes of host entropy [`AgentClient::give_identity`] sends.
pub const IDENTITY_ENTROPY_BYTES: usize = 64;

/// The longest handshake reply line we read.
const MAX_REPLY_LEN: usize = 128;
/// First and last pause between connection attempts.
const FIRST_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_millis(200);

/// Why talking to the agent failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The VMM's unix socket could not be connected.
    #[error("cannot connect to the VMM's vsock socket {path}")]
    ConnectSocket {
        /// The unix socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Writing `CONNECT` or reading the reply failed.
    #[error("vsock handshake with the VMM failed")]
    HandshakeIo(#[source] io::Error),
    /// The VMM answered something other than `OK <hostport>`, or closed the
    /// connection (empty `reply`): no listener on the guest port yet.
    #[error("the VMM refused CONNECT, replying {reply:?}")]
    Handshake {
        /// The line it sent, without the newline.
        reply: String,
    },
    /// The agent was not reachable within the connect timeout.
    #[error("the agent was not reachable after {waited:?}")]
    Timeout {
        /// How long we tried.
        waited: Duration,
        /// The last attempt's failure.
        #[source]
        last: Box<ClientError>,
    },
    /// The ttrpc client could not be set up on the connected stream.
    #[error("cannot start a ttrpc client on the vsock stream")]
    Ttrpc(#[source] ttrpc::Error),
    /// An RPC failed: transport error or an error status from the agent
    /// (see [`ClientError::code`]).
    #[error("agent call {method} failed")]
    Rpc {
        /// The RPC, e.g. `Check`.
        method: &'static str,
        /// The ttrpc error.
        #[source]
        source: ttrpc::Error,
    },
    /// The time to set lies before the Unix epoch.
    #[error("the time to set lies before the Unix epoch")]
    TimeBeforeEpoch,
    /// The host's random source could not be read.
    #[error("cannot read host entropy from /dev/urandom")]
    ReadEntropy(#[source] io::Error),
}

impl ClientError {
    /// The status code of an RPC the agent answered with an error.
    pub fn code(&self) -> Option<ttrpc::Code> {
        match self {
            ClientError::Rpc {
                source: ttrpc::Error::RpcStatus(status),
                ..
            } => Some(status.code()),
            _ => None,
        }
    }

    /// The agent's message of an RPC it answered with an error.
    pub fn status_message(&self) -> Option<&str> {
        match self {
            ClientError::Rpc {
                source: ttrpc::Error::RpcStatus(status),
                ..
            } => Some(status.message()),
            _ => None,
        }
    }
}

/// Performs the hybrid vsock handshake on a connected stream: writes
/// `CONNECT <port>\n`, reads one line and returns the host port of `OK <n>`.
/// Reads byte by byte so nothing after the line is consumed.
pub fn handshake(stream: &mut UnixStream, port: u32) -> Result<u32, ClientError> {
    stream
        .write_all(format!("CONNECT {port}\n").as_bytes())
        .map_err(ClientError::HandshakeIo)?;
    let mut line = Vec::with_capacity(16);
    let mut byte = [0u8; 1];
    loop {
        match stream.read(&mut byte) {
            Ok(0) => break,
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) if line.len() >= MAX_REPLY_LEN => break,
            Ok(_) => line.push(byte[0]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ClientError::HandshakeIo(e)),
        }
    }
    let reply = String::from_utf8_lossy(&line).into_owned();
    reply
        .strip_prefix("OK ")
        .and_then(|n| n.trim().parse::<u32>().ok())
        .ok_or(ClientError::Handshake { reply })
}

/// A connected agent: typed calls with a per-call timeout.
#[derive(Clone)]
pub struct AgentClient {
    service: AgentServiceClient,
    call_timeout: Duration,
}

impl AgentClient {
    /// Connects to guest vsock `port` through the VMM's hybrid vsock socket
    /// `uds_path`, retrying with a short backoff until `timeout` has passed.
    pub fn connect(
        uds_path: impl AsRef<Path>,
        port: u32,
        timeout: Duration,
    ) -> Result<AgentClient, ClientError> {
        let path = uds_path.as_ref();
        let start = Instant::now();
        let mut backoff = FIRST_BACKOFF;
        loop {
            let last = match Self::try_connect(path, port, start + timeout) {
                Ok(stream) => return Self::from_stream(stream),
                Err(e) => e,
            };
            let waited = start.elapsed();
            if waited >= timeout {
                return Err(ClientError::Timeout {
                    waited,
                    last: Box::new(last),
                });
            }
            thread::sleep(backoff.min(timeout - waited));
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    fn try_connect(path: &Path, port: u32, deadline: Instant) -> Result<UnixStream, ClientError> {
        let mut stream =
            UnixStream::connect(path).map_err(|source| ClientError::ConnectSocket {
                path: path.to_owned(),
                source,
            })?;
        // A VMM that neither answers nor closes must not outlast the deadline.
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        stream
            .set_read_timeout(Some(left))
            .map_err(ClientError::HandshakeIo)?;
        handshake(&mut stream, port)?;
        stream
            .set_read_timeout(None)
            .map_err(ClientError::HandshakeIo)?;
        Ok(stream)
    }

    /// Wraps a stream already connected to the agent (after the handshake,
    /// or a plain unix socket the agent serves in test mode).
    pub fn from_stream(stream: UnixStream) -> Result<AgentClient, ClientError> {
        // ttrpc::Client owns the fd from here and closes it on drop.
        let client = ttrpc::Client::new(stream.into_raw_fd()).map_err(ClientError::Ttrpc)?;
        Ok(AgentClient {
            service: AgentServiceClient::new(client),
            call_timeout: DEFAULT_CALL_TIMEOUT,
        })
    }

    /// Sets the timeout of each call.
    pub fn with_call_timeout(mut self, timeout: Duration) -> AgentClient {
        self.call_timeout = timeout;
        self
    }

    /// The generated client, for RPCs without a typed method here yet.
    pub fn service(&self) -> &AgentServiceClient {
        &self.service
    }

    /// A ttrpc context carrying the per-call timeout.
    pub fn context(&self) -> ttrpc::context::Context {
        ttrpc::context::with_duration(self.call_timeout)
    }

    fn rpc<T>(method: &'static str, result: ttrpc::Result<T>) -> Result<T, ClientError> {
        result.map_err(|source| ClientError::Rpc { method, source })
    }

    /// `Check`: the agent's health.
    pub fn check(&self) -> Result<ServingStatus, ClientError> {
        let resp = Self::rpc(
            "Check",
            self.service.check(self.context(), &CheckRequest::new()),
        )?;
        Ok(resp.status.enum_value_or_default())
    }

    /// `Version`: agent version, API version, guest kernel release.
    pub fn version(&self) -> Result<VersionResponse, ClientError> {
        Self::rpc(
            "Version",
            self.service.version(self.context(), &VersionRequest::new()),
        )
    }

    /// `SetGuestTime`: sets the guest's wall clock to `time`.
    pub fn set_guest_time(&self, time: SystemTime) -> Result<(), ClientError> {
        let since = time
            .duration_since(UNIX_EPOCH)
            .map_err(|_| ClientError::TimeBeforeEpoch)?;
        let mut req = SetGuestTimeRequest::new();
        req.seconds = i64::try_from(since.as_secs()).unwrap_or(i64::MAX);
        req.nanos = since.subsec_nanos();
        Self::rpc(
            "SetGuestTime",
            self.service.set_guest_time(self.context(), &req),
        )?;
        Ok(())
    }

    /// `SetHostname`: sets the guest's hostname.
    pub fn set_hostname(&self, hostname: &str) -> Result<(), ClientError> {
        let mut req = SetHostnameRequest::new();
        req.hostname = hostname.to_owned();
        Self::rpc(
            "SetHostname",
            self.service.set_hostname(self.context(), &req),
        )?;
        Ok(())
    }

    /// What makes a guest restored from a template its own: the host's
    /// clock (`SetGuestTime`) and [`IDENTITY_ENTROPY_BYTES`] fresh bytes of
    /// host entropy (`ReseedRandom`), since two VMs of one template must
    /// never share random numbers.
    pub fn give_identity(&self) -> Result<(), ClientError> {
        self.set_guest_time(SystemTime::now())?;
        let mut entropy = [0u8; IDENTITY_ENTROPY_BYTES];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut entropy))
            .map_err(ClientError::ReadEntropy)?;
        self.reseed_random(&entropy)
    }

    /// `ReseedRandom`: adds host entropy to the guest's pool, credited.
    pub fn reseed_random(&self, entropy: &[u8]) -> Result<(), ClientError> {
        let mut req = ReseedRandomRequest::new();
        req.data = entropy.to_vec();
        Self::rpc(
            "ReseedRandom",
            self.service.reseed_random(self.context(), &req),
        )?;
        Ok(())
    }

    /// `MountShare`: the agent mounts the virtio-fs share tagged `tag`.
    pub fn mount_share(&self, tag: &str) -> Result<(), ClientError> {
        let mut req = MountShareRequest::new();
        req.tag = tag.to_owned();
        Self::rpc("MountShare", self.service.mount_share(self.context(), &req))?;
        Ok(())
    }

    /// `Shutdown`: the agent replies, then syncs and ends the guest.
    pub fn shutdown(&self) -> Result<(), ClientError> {
        Self::rpc(
            "Shutdown",
            self.service
                .shutdown(self.context(), &ShutdownRequest::new()),
        )?;
        Ok(())
    }

    // Container calls: thin wrappers, one per RPC. A process is named by
    // its container and exec id; exec id "" is the container's init.

    /// `CreateContainer`: returns the init's pid in the guest.
    pub fn create_container(&self, req: &CreateContainerRequest) -> Result<u32, ClientError> {
        let resp = Self::rpc(
            "CreateContainer",
            self.service.create_container(self.context(), req),
        )?;
        Ok(resp.pid)
    }

    /// `StartContainer`: runs the created container's init.
    pub fn start_container(&self, container_id: &str) -> Result<(), ClientError> {
        let mut req = StartContainerRequest::new();
        req.container_id = container_id.to_owned();
        Self::rpc(
            "StartContainer",
            self.service.start_container(self.context(), &req),
        )?;
        Ok(())
    }

    /// `RemoveContainer`: kills what is left and frees everything;
    /// `timeout_seconds` 0 is the agent's default.
    pub fn remove_container(
        &self,
        container_id: &str,
        timeout_seconds: u32,
    ) -> Result<(), ClientError> {
        let mut req = RemoveContainerRequest::new();
        req.container_id = container_id.to_owned();
        req.timeout_seconds = timeout_seconds;
        Self::rpc(
            "RemoveContainer",
            self.service.remove_container(self.context(), &req),
        )?;
        Ok(())
    }

    /// `PauseContainer`: freezes every process of the container.
    pub fn pause_container(&self, container_id: &str) -> Result<(), ClientError> {
        let mut req = PauseContainerRequest::new();
        req.container_id = container_id.to_owned();
        Self::rpc(
            "PauseContainer",
            self.service.pause_container(self.context(), &req),
        )?;
        Ok(())
    }

    /// `ResumeContainer`: thaws a paused container.
    pub fn resume_container(&self, container_id: &str) -> Result<(), ClientError> {
        let mut req = ResumeContainerRequest::new();
        req.container_id = container_id.to_owned();
        Self::rpc(
            "ResumeContainer",
            self.service.resume_container(self.context(), &req),
        )?;
        Ok(())
    }

    /// `UpdateContainer`: `resources` is an OCI LinuxResources as JSON.
    pub fn update_container(
        &self,
        container_id: &str,
        resources: &[u8],
    ) -> Result<(), ClientError> {
        let mut req = UpdateContainerRequest::new();
        req.container_id = container_id.to_owned();
        req.resources = resources.to_vec();
        Self::rpc(
            "UpdateContainer",
            self.service.update_container(self.context(), &req),
        )?;
        Ok(())
    }

    /// `ExecProcess`: `process` is an OCI Process as JSON; returns its pid.
    pub fn exec_process(
        &self,
        container_id: &str,
        exec_id: &str,
        process: &[u8],
        terminal: bool,
    ) -> Result<u32, ClientError> {
        let mut req = ExecProcessRequest::new();
        req.container_id = container_id.to_owned();
        req.exec_id = exec_id.to_owned();
        req.process = process.to_vec();
        req.terminal = terminal;
        let resp = Self::rpc(
            "ExecProcess",
            self.service.exec_process(self.context(), &req),
        )?;
        Ok(resp.pid)
    }

    /// `SignalProcess`: sends `signal` to the process, or with `all` to
    /// every process of the container.
    pub fn signal_process(
        &self,
        container_id: &str,
        exec_id: &str,
        signal: u32,
        all: bool,
    ) -> Result<(), ClientError> {
        let mut req = SignalProcessRequest::new();
        req.container_id = container_id.to_owned();
        req.exec_id = exec_id.to_owned();
        req.signal = signal;
        req.all = all;
        Self::rpc(
            "SignalProcess",
            self.service.signal_process(self.context(), &req),
        )?;
        Ok(())
    }

    /// `WaitProcess`: blocks (up to the call timeout) until the process exits.
    pub fn wait_process(
        &self,
        container_id: &str,
        exec_id: &str,
    ) -> Result<WaitProcessResponse, ClientError> {
        let mut req = WaitProcessRequest::new();
        req.container_id = container_id.to_owned();
        req.exec_id = exec_id.to_owned();
        Self::rpc(
            "WaitProcess",
            self.service.wait_process(self.context(), &req),
        )
    }

    /// `ListProcesses`: the container's processes.
    pub fn list_processes(&self, container_id: &str) -> Result<Vec<ProcessInfo>, ClientError> {
        let mut req = ListProcessesRequest::new();
        req.container_id = container_id.to_owned();
        let resp = Self::rpc(
            "ListProcesses",
            self.service.list_processes(self.context(), &req),
        )?;
        Ok(resp.processes)
    }

    fn read_request(container_id: &str, exec_id: &str, len: u32) -> ReadStreamRequest {
        let mut req = ReadStreamRequest::new();
        req.container_id = container_id.to_owned();
        req.exec_id = exec_id.to_owned();
        req.len = len;
        req
    }

    /// `ReadStdout`: at most `len` bytes (0: the agent's default); blocks
    /// until there are some; empty means EOF.
    pub fn read_stdout(
        &self,
        container_id: &str,
        exec_id: &str,
        len: u32,
    ) -> Result<Vec<u8>, ClientError> {
        let req = Self::read_request(container_id, exec_id, len);
        let resp = Self::rpc("ReadStdout", self.service.read_stdout(self.context(), &req))?;
        Ok(resp.data)
    }

    /// `ReadStderr`: as [`AgentClient::read_stdout`], for stderr.
    pub fn read_stderr(
        &self,
        container_id: &str,
        exec_id: &str,
        len: u32,
    ) -> Result<Vec<u8>, ClientError> {
        let req = Self::read_request(container_id, exec_id, len);
        let resp = Self::rpc("ReadStderr", self.service.read_stderr(self.context(), &req))?;
        Ok(resp.data)
    }

    /// `WriteStdin`: returns how many bytes of `data` were taken.
    pub fn write_stdin(
        &self,
        container_id: &str,
        exec_id: &str,
        data: &[u8],
    ) -> Result<u32, ClientError> {
        let mut req = WriteStreamRequest::new();
        req.container_id = container_id.to_owned();
        req.exec_id = exec_id.to_owned();
        req.data = data.to_vec();
        let resp = Self::rpc("WriteStdin", self.service.write_stdin(self.context(), &req))?;
        Ok(resp.len)
    }

    /// `CloseStdin`: the process reads EOF once the written data is consumed.
    pub fn close_stdin(&self, container_id: &str, exec_id: &str) -> Result<(), ClientError> {
        let mut req = CloseStdinRequest::new();
        req.container_id = container_id.to_owned();
        req.exec_id = exec_id.to_owned();
        Self::rpc("CloseStdin", self.service.close_stdin(self.context(), &req))?;
        Ok(())
    }

    /// `TtyWinResize`: sets the window size of the process's terminal.
    pub fn tty_win_resize(
        &self,
        container_id: &str,
        exec_id: &str,
        rows: u32,
        columns: u32,
    ) -> Result<(), ClientError> {
        let mut req = TtyWinResizeRequest::new();
        req.container_id = container_id.to_owned();
        req.exec_id = exec_id.to_owned();
        req.rows = rows;
        req.columns = columns;
        Self::rpc(
            "TtyWinResize",
            self.service.tty_win_resize(self.context(), &req),
        )?;
        Ok(())
    }

    /// `StatsContainer`: the container's cgroup counters.
    pub fn stats_container(
        &self,
        container_id: &str,
    ) -> Result<StatsContainerResponse, ClientError> {
        let mut req = StatsContainerRequest::new();
        req.container_id = container_id.to_owned();
        Self::rpc(
            "StatsContainer",
            self.service.stats_container(self.context(), &req),
        )
    }

    /// `GetOOMEvent`: blocks (up to the call timeout) until a container
    /// hits an OOM kill; returns its id.
    pub fn get_oom_event(&self) -> Result<String, ClientError> {
        let resp = Self::rpc(
            "GetOOMEvent",
            self.service
                .get_oom_event(self.context(), &GetOOMEventRequest::new()),
        )?;
        Ok(resp.container_id)
    }
}

#[cfg(test)]
mod tests;

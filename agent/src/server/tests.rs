//! The service in-process on a unix socket, called through the real client.

use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use vessel_agent_protocol::agent::{check_response::ServingStatus, CreateContainerRequest};
use vessel_agent_protocol::AgentClient;

use super::{start, Service};
use crate::fake::{Call, FakeSys};
use crate::guest::Guest;

struct Running {
    _dir: tempfile::TempDir,
    server: Option<ttrpc::Server>,
    client: AgentClient,
    sys: Arc<FakeSys>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown();
        }
    }
}

fn serve() -> Running {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.sock");
    let sys = Arc::new(FakeSys::default());
    let guest = Guest::new(sys.clone()).with_shutdown_delay(Duration::ZERO);
    let server = start(
        &format!("unix://{}", path.display()),
        Service::new(guest, None),
    )
    .unwrap();
    let stream = UnixStream::connect(&path).unwrap();
    let client = AgentClient::from_stream(stream)
        .unwrap()
        .with_call_timeout(Duration::from_secs(5));
    Running {
        _dir: dir,
        server: Some(server),
        client,
        sys,
    }
}

#[test]
fn check_and_version() {
    let agent = serve();
    assert_eq!(agent.client.check().unwrap(), ServingStatus::SERVING);
    let v = agent.client.version().unwrap();
    assert_eq!(v.api_version, "vessel.agent.v1");
    assert_eq!(v.agent_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(v.kernel_release, "6.1.0-vessel");
}

#[test]
fn guest_calls_reach_sys() {
    let agent = serve();
    let t = UNIX_EPOCH + Duration::new(1_700_000_000, 42);
    agent.client.set_guest_time(t).unwrap();
    agent.client.set_hostname("vessel").unwrap();
    agent.client.reseed_random(&[9; 32]).unwrap();
    agent.client.shutdown().unwrap();
    // Shutdown acts after its reply, on another thread.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !agent.sys.calls().contains(&Call::Reboot) {
        assert!(std::time::Instant::now() < deadline, "no reboot recorded");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        agent.sys.calls(),
        [
            Call::SetTime(1_700_000_000, 42),
            Call::SetHostname("vessel".into()),
            Call::AddEntropy(vec![9; 32]),
            Call::Sync,
            Call::Reboot,
        ]
    );
}

#[test]
fn errors_carry_codes_and_messages() {
    let agent = serve();
    let err = agent.client.set_hostname("").unwrap_err();
    assert_eq!(err.code(), Some(ttrpc::Code::INVALID_ARGUMENT));

    let err = agent
        .client
        .service()
        .create_container(agent.client.context(), &CreateContainerRequest::new())
        .unwrap_err();
    match err {
        ttrpc::Error::RpcStatus(status) => {
            assert_eq!(status.code(), ttrpc::Code::UNIMPLEMENTED);
            assert_eq!(
                status.message(),
                "CreateContainer runs only in the guest: this agent serves on a host"
            );
        }
        other => panic!("expected a status, got {other:?}"),
    }
}

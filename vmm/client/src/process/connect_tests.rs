//! `connect_agent` against a fake VMM socket that does the hybrid vsock
//! handshake and forwards to a ttrpc agent on a unix socket, dropping the
//! requests of the first `lost` connections as an emulated-CPL0 guest can.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use vessel_agent_protocol::agent::{check_response::ServingStatus, CheckRequest, CheckResponse};
use vessel_agent_protocol::{create_agent_service, AgentService};

use super::*;

/// Answers Check with SERVING, or with an error status when `refuse`.
struct FakeAgent {
    refuse: bool,
    checks: Arc<AtomicUsize>,
}

impl AgentService for FakeAgent {
    fn check(
        &self,
        _ctx: &ttrpc::TtrpcContext,
        _req: CheckRequest,
    ) -> ttrpc::Result<CheckResponse> {
        self.checks.fetch_add(1, Ordering::SeqCst);
        if self.refuse {
            return Err(ttrpc::Error::RpcStatus(ttrpc::get_status(
                ttrpc::Code::FAILED_PRECONDITION,
                "not yet",
            )));
        }
        let mut resp = CheckResponse::new();
        resp.status = ServingStatus::SERVING.into();
        Ok(resp)
    }
}

/// A ttrpc agent on `dir/agent.sock` and a fake VMM on `dir/vsock.sock`
/// whose first `lost` connections swallow what the client writes.
fn serve(dir: &Path, lost: usize, refuse: bool) -> (ttrpc::Server, Arc<AtomicUsize>) {
    let agent_sock = dir.join("agent.sock");
    let checks = Arc::new(AtomicUsize::new(0));
    let service: Arc<dyn AgentService + Send + Sync> = Arc::new(FakeAgent {
        refuse,
        checks: checks.clone(),
    });
    let mut server = ttrpc::Server::new()
        .bind(&format!("unix://{}", agent_sock.display()))
        .unwrap()
        .register_service(create_agent_service(service));
    server.start().unwrap();
    let listener = UnixListener::bind(dir.join("vsock.sock")).unwrap();
    std::thread::spawn(move || {
        for (n, conn) in listener.incoming().enumerate() {
            let Ok(conn) = conn else { return };
            let agent_sock = agent_sock.clone();
            std::thread::spawn(move || forward(conn, &agent_sock, n < lost));
        }
    });
    (server, checks)
}

fn forward(conn: UnixStream, agent_sock: &Path, swallow: bool) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert_eq!(line, format!("CONNECT {AGENT_VSOCK_PORT}\n"));
    let mut host = conn;
    host.write_all(b"OK 1\n").unwrap();
    if swallow {
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
        return;
    }
    let agent = UnixStream::connect(agent_sock).unwrap();
    let mut to_host = agent.try_clone().unwrap();
    let mut from_host = agent;
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut reader, &mut from_host);
    });
    let _ = std::io::copy(&mut to_host, &mut host);
}

#[test]
fn a_lost_first_check_is_tried_again_on_a_new_connection() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, checks) = serve(dir.path(), 2, false);
    let agent = connect_agent(
        &dir.path().join("vsock.sock"),
        Duration::from_secs(30),
        Duration::from_millis(300),
        || false,
    )
    .unwrap();
    assert_eq!(
        checks.load(Ordering::SeqCst),
        1,
        "only the third got through"
    );
    agent.check().unwrap();
}

#[test]
fn an_agent_that_answers_with_an_error_is_not_asked_again() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, checks) = serve(dir.path(), 0, true);
    let err = connect_agent(
        &dir.path().join("vsock.sock"),
        Duration::from_secs(30),
        Duration::from_secs(5),
        || false,
    )
    .err()
    .unwrap();
    assert!(matches!(err, ConnectAgentError::Check(_)), "{err:?}");
    assert_eq!(checks.load(Ordering::SeqCst), 1);
}

#[test]
fn unanswered_checks_end_at_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, checks) = serve(dir.path(), usize::MAX, false);
    let err = connect_agent(
        &dir.path().join("vsock.sock"),
        Duration::from_secs(1),
        Duration::from_millis(200),
        || false,
    )
    .err()
    .unwrap();
    assert!(matches!(err, ConnectAgentError::Check(_)), "{err:?}");
    assert_eq!(checks.load(Ordering::SeqCst), 0);
}

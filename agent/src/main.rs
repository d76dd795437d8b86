//! `vessel-agent`: PID 1 in the guest. It will serve the agent API over vsock;
//! that is the subject of its own issue, so today it refuses to start.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!(
        "vessel-agent {}: the agent API is not implemented yet",
        vessel_agent_protocol::API_VERSION
    );
    ExitCode::FAILURE
}

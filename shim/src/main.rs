//! `containerd-shim-vessel-v2`: the containerd runtime v2 shim. Its Task
//! service is the subject of its own issue, so today it refuses every command.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!("containerd-shim-vessel-v2: io.containerd.vessel.v2 is not implemented yet");
    ExitCode::FAILURE
}

//! Calls a running agent: `agent-ctl <unix socket> [vsock port] <command>`.
//!
//! With a port, the socket is the VMM's hybrid vsock socket (handshake
//! first); without, it is an agent serving directly (`vessel-agent --listen`).
//! Commands: check, version, time, hostname=NAME, reseed, shutdown.

use std::os::unix::net::UnixStream;
use std::time::{Duration, SystemTime};

use vessel_agent_protocol::{AgentClient, ClientError};

fn main() -> Result<(), ClientError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (client, cmds) = match args.as_slice() {
        [path, port, cmds @ ..] if port.parse::<u32>().is_ok() => (
            AgentClient::connect(path, port.parse().unwrap_or(1024), Duration::from_secs(10))?,
            cmds,
        ),
        [path, cmds @ ..] => {
            let stream =
                UnixStream::connect(path).map_err(|source| ClientError::ConnectSocket {
                    path: path.into(),
                    source,
                })?;
            (AgentClient::from_stream(stream)?, cmds)
        }
        [] => {
            eprintln!("usage: agent-ctl <socket> [port] <command>...");
            std::process::exit(2);
        }
    };
    for cmd in cmds {
        match cmd.as_str() {
            "check" => println!("check: {:?}", client.check()?),
            "version" => {
                let v = client.version()?;
                println!(
                    "version: agent {} api {} kernel {}",
                    v.agent_version, v.api_version, v.kernel_release
                );
            }
            "time" => client.set_guest_time(SystemTime::now())?,
            "reseed" => client.reseed_random(&[0x5a; 64])?,
            "shutdown" => client.shutdown()?,
            other => match other.strip_prefix("hostname=") {
                Some(name) => client.set_hostname(name)?,
                None => eprintln!("unknown command {other:?}"),
            },
        }
        println!("{cmd}: ok");
    }
    Ok(())
}

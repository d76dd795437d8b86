//! vessel-vmm-client: the contract between whoever starts a vessel-vmm
//! (the shim, the test harness, the benchmarks) and the VMM itself. Each
//! piece exists once, here:
//!
//! - [`spec`]: what to start, a [`BootSpec`] or a [`RestoreSpec`] with its
//!   [`Endpoints`], turned into the VMM's flags and [`std::process::Command`];
//! - [`api`]: the API socket's requests and replies, which the VMM's server
//!   reads and writes with the same types, and [`ApiClient`] to send them;
//! - [`process`]: [`VmmProcess`], the started VMM (wait, kill, killed on
//!   drop), and [`connect_agent`], reaching the guest's agent once it
//!   answers while the VMM lives;
//! - [`jail`]: how the VMM is jailed ([`JailSpec`]) and why a VMM exited
//!   ([`jail::exit_reason`]);
//! - [`profile`]: the host profile ([`HostProfile`]), which changes what
//!   a guest needs on this host (std only: no KVM here);
//! - [`template`]: VM templates, their cache and their one maker.
//!
//! The guest side of the contract (the agent's vsock port, the share's tag
//! and mount point, the command-line keys) is
//! `vessel_agent_protocol::contract`.

pub mod api;
pub mod api_client;
pub mod jail;
pub mod privileges;
#[cfg(feature = "launch")]
pub mod process;
pub mod profile;
pub mod spec;
#[cfg(feature = "launch")]
pub mod template;

pub use api::{FsMount, Reply, Request, VmState};
pub use api_client::{ApiClient, ApiClientError, SnapshotInfo};
pub use jail::{JailSpec, SeccompMode};
#[cfg(feature = "launch")]
pub use process::{
    connect_agent, ConnectAgentError, OutputTail, PidFd, ProcessError, ProcessIdentity, VmmProcess,
};
pub use profile::HostProfile;
pub use spec::{BootSpec, Endpoints, FsSpec, Launch, RestoreSpec, VmmCommand};

//! The Vessel agent API, package `vessel.agent.v1`.
//!
//! Messages ([`agent`]) and ttrpc stubs ([`agent_ttrpc`]) are generated from
//! `proto/agent.proto` at build time.

/// The protobuf package of the agent API.
pub const API_VERSION: &str = "vessel.agent.v1";

pub mod contract;
pub use contract::{valid_id, AGENT_VSOCK_PORT, SHARED_DIR, SHARE_TAG};

/// Everything generated from `proto/agent.proto`, under one set of allows.
#[allow(
    missing_docs,
    dead_code,
    unused_mut,
    unused_imports,
    unused_results,
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    unknown_lints,
    clippy::all,
    clippy::pedantic,
    clippy::undocumented_unsafe_blocks
)]
mod generated {
    /// Generated messages of `vessel.agent.v1`.
    pub mod agent {
        include!(concat!(env!("OUT_DIR"), "/agent.rs"));
    }

    /// Generated ttrpc client (`AgentServiceClient`) and server trait
    /// (`AgentService`, `create_agent_service`).
    pub mod agent_ttrpc {
        include!(concat!(env!("OUT_DIR"), "/agent_ttrpc.rs"));
    }
}

pub use agent_ttrpc::{create_agent_service, AgentService, AgentServiceClient};
pub use generated::{agent, agent_ttrpc};

pub mod client;
pub use client::{AgentClient, ClientError};

//! The Vessel agent API, package `vessel.agent.v1`.
//!
//! The `.proto` and its ttrpc code generation arrive with the vsock and agent
//! issue; until then this crate only names the API version.

/// The protobuf package of the agent API.
pub const API_VERSION: &str = "vessel.agent.v1";

//! virtio-vsock (virtio 1.2 §5.10) with Firecracker-style "hybrid vsock":
//! the host side of every guest socket is a unix stream.
//!
//! Queues: rx (0) carries packets to the guest, tx (1) packets from it, the
//! event queue (2) only TRANSPORT_RESET ([`Vsock::send_transport_reset`]).
//!
//! Host-initiated connections: a host client connects to `uds_path` and
//! writes `CONNECT <port>\n`; the device sends the guest a REQUEST from a
//! fresh host port (from [`muxer::FIRST_LOCAL_PORT`]) and, on the guest's
//! RESPONSE, writes `OK <hostport>\n` back and proxies bytes. An RST or no
//! answer within [`muxer::CONNECT_TIMEOUT`] closes the client. Guest-initiated
//! connections to CID 2, port P, connect to the unix socket `<uds_path>_<P>`:
//! RESPONSE on success, RST on failure.
//!
//! Events the device handles, in its event loop ([`event_handler`]):
//! - **activate event**: the transport activated or reset the device; the
//!   handler adds or removes the three queue events.
//! - **tx queue event**: the guest posted packets; each is parsed
//!   ([`packet`]) and handed to the [`muxer::Muxer`], then replies go out.
//! - **rx queue event**: the guest posted receive buffers; waiting control
//!   packets and host stream data fill them (within the guest's credit).
//! - **event queue event**: buffers stay for TRANSPORT_RESET. After a
//!   snapshot restore the device sends one
//!   ([`VirtioDevice::restored`](super::VirtioDevice::restored)) and serves
//!   no host client until the guest posts an event buffer again, its sign
//!   that it has reset its old connections (which would otherwise take the
//!   new ones along), or [`device::RESET_TIMEOUT`] passes.
//! - **listener readable**: a host client connected; its `CONNECT` line is
//!   read without blocking.
//! - **host stream readable / writable**: data for the guest, or room for
//!   the guest's buffered data. Watching follows what can progress, so a
//!   level-triggered fd never spins.
//! - **timer**: a host `CONNECT` line or a guest answer is overdue, or a
//!   winding-down connection made no progress: one the guest shut down
//!   whose last bytes the host stream does not take
//!   ([`muxer::CLOSE_TIMEOUT`]), or one whose host stream reached end of file
//!   with no guest data moving ([`muxer::HALF_CLOSED_TIMEOUT`]); or, after
//!   a restore, the guest has not taken its TRANSPORT_RESET within
//!   [`device::RESET_TIMEOUT`].
//!
//! Flow control: every packet the device sends carries its `buf_alloc`
//! ([`connection::BUF_ALLOC`]) and `fwd_cnt`; it never sends more payload
//! than the guest's credit, answers CREDIT_REQUEST, and sends CREDIT_UPDATE
//! after forwarding half its buffer. Guest input is checked and counted
//! ([`VsockCounters`]); nothing the guest or a host client sends can make
//! the device panic or buffer more than its advertised credit.

pub mod connection;
pub mod counters;
pub mod device;
pub mod event_handler;
pub mod muxer;
pub mod packet;
#[cfg(any(test, feature = "test-utils"))]
pub mod test_utils;
#[cfg(test)]
mod tests;
mod unix;

pub use device::{Vsock, VsockError};
pub use muxer::VsockCounters;

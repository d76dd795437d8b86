//! virtio-rng (virtio 1.2 §5.4): one request queue; the guest posts
//! write-only buffers and the device fills them with host entropy.
//!
//! Events the device handles, in its event loop ([`event_handler`]):
//! - **activate event**: the transport activated or reset the device; the
//!   handler adds or removes the queue event from its epoll set.
//! - **queue event**: the guest notified the request queue (an ioeventfd on
//!   QueueNotify); the device fills every available buffer, returns it on the
//!   used ring and interrupts the guest if the driver wants it.
//!
//! Guest-controlled input is the descriptor chains. Read-only descriptors,
//! descriptors outside guest memory and oversized requests are counted and
//! skipped; nothing the guest posts can make the device panic or allocate
//! more than [`device::MAX_BYTES_PER_REQUEST`].

pub mod device;
pub mod event_handler;

pub use device::{Rng, RngCounters, RngError};

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
//! Guest-controlled input is the descriptor chains. Read-only descriptors
//! and descriptors outside guest memory are counted and skipped; a request
//! gets at most [`device::MAX_BYTES_PER_REQUEST`] bytes, however long its
//! buffers. Nothing the guest posts can make the device panic.
//!
//! The device keeps no state beyond its features and queues, so it can
//! always be snapshotted.

pub mod device;
pub mod event_handler;
#[cfg(any(test, feature = "test-utils"))]
pub mod test_utils;

pub use device::{Rng, RngCounters, RngError};

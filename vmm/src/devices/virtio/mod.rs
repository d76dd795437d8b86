//! Virtio devices on the virtio-mmio transport.
//!
//! A device implements [`VirtioDevice`]; [`mmio::MmioTransport`] gives it
//! the register interface, queue set-up, feature negotiation and the status
//! state machine of virtio 1.2 §4.2 (virtio-mmio version 2). The guest's
//! queue notifications arrive on one `EventFd` per queue (registered with KVM
//! as ioeventfds), and the device raises its interrupt through an
//! [`IrqTrigger`] whose `EventFd` is a KVM irqfd.
//!
//! For a snapshot, each device saves a [`DeviceState`] beside its
//! transport's registers ([`mmio::TransportState`]); a device that cannot
//! be saved now says why ([`VirtioDevice::save_state`]) and the snapshot is
//! refused.
//!
//! Each device model has its own folder (`rng`, `vsock`, `fs`): the device,
//! its event loop handler, its tests, and a `test_utils` module (tests and
//! the `test-utils` feature) with its queue set, its activation and its
//! fuzz driver. The driver-side virtqueue they all build on is in this
//! folder's `test_utils`; the transport's fuzz driver is in
//! `mmio::test_utils`.

pub mod fs;
pub mod mmio;
pub mod rng;
#[cfg(any(test, feature = "test-utils"))]
pub mod test_utils;
pub mod vsock;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use virtio_queue::{Queue, QueueState};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

/// Device status bits (virtio 1.2 §2.1).
pub mod status {
    pub const ACKNOWLEDGE: u32 = 1;
    pub const DRIVER: u32 = 2;
    pub const DRIVER_OK: u32 = 4;
    pub const FEATURES_OK: u32 = 8;
    pub const DEVICE_NEEDS_RESET: u32 = 64;
    pub const FAILED: u32 = 128;
}

/// Feature bit every modern device offers and every driver must accept.
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;

/// Device type ids (virtio 1.2 §5).
pub mod device_type {
    pub const NET: u32 = 1;
    pub const BLOCK: u32 = 2;
    pub const RNG: u32 = 4;
    pub const VSOCK: u32 = 19;
    pub const FS: u32 = 26;
}

/// Errors of activating a device.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    #[error("the device expects {expected} queues, the driver set up {got}")]
    QueueCount { expected: usize, got: usize },
    #[error("queue {0} is not ready or its rings lie outside guest memory")]
    InvalidQueue(usize),
    #[error("clone a queue event")]
    CloneEvent(#[source] std::io::Error),
    #[error("signal the device's event loop")]
    SignalActivate(#[source] std::io::Error),
    #[error("the device is already active")]
    AlreadyActive,
}

/// What a device receives when the driver sets DRIVER_OK.
pub struct Activation {
    pub mem: GuestMemoryMmap,
    pub queues: Vec<Queue>,
    /// One per queue, signalled when the guest notifies it.
    pub queue_evts: Vec<EventFd>,
    pub irq: Arc<IrqTrigger>,
}

impl Activation {
    /// Checks that the driver set up exactly `expected` queues, each with
    /// its queue event.
    pub fn check_queue_count(&self, expected: usize) -> Result<(), ActivateError> {
        if self.queues.len() != expected || self.queue_evts.len() != expected {
            return Err(ActivateError::QueueCount {
                expected,
                got: self.queues.len(),
            });
        }
        Ok(())
    }
}

/// A virtqueue's set-up and ring positions, for snapshots (virtio-queue's
/// `QueueState`, which does not serialise). Untrusted when read back:
/// [`QueueSnapshot::to_queue`] checks it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSnapshot {
    pub max_size: u16,
    pub size: u16,
    pub ready: bool,
    pub desc_table: u64,
    pub avail_ring: u64,
    pub used_ring: u64,
    pub next_avail: u16,
    pub next_used: u16,
    pub event_idx_enabled: bool,
}

impl From<QueueState> for QueueSnapshot {
    fn from(q: QueueState) -> Self {
        Self {
            max_size: q.max_size,
            size: q.size,
            ready: q.ready,
            desc_table: q.desc_table,
            avail_ring: q.avail_ring,
            used_ring: q.used_ring,
            next_avail: q.next_avail,
            next_used: q.next_used,
            event_idx_enabled: q.event_idx_enabled,
        }
    }
}

impl QueueSnapshot {
    /// The queue, if its sizes and ring addresses are ones a driver could
    /// have set.
    pub fn to_queue(&self) -> Result<Queue, virtio_queue::Error> {
        Queue::try_from(QueueState {
            max_size: self.max_size,
            size: self.size,
            ready: self.ready,
            desc_table: self.desc_table,
            avail_ring: self.avail_ring,
            used_ring: self.used_ring,
            next_avail: self.next_avail,
            next_used: self.next_used,
            event_idx_enabled: self.event_idx_enabled,
        })
    }
}

/// Which device model, with what it needs to be created again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum DeviceKind {
    Rng,
    Vsock {
        guest_cid: u64,
    },
    /// A virtio-fs share the guest had not mounted yet: only its tag is
    /// the guest's; the directory is the restoring host's.
    Fs {
        tag: String,
    },
}

/// What a device model adds to its transport's state in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceState {
    pub kind: DeviceKind,
    pub acked_features: u64,
    /// The queues as the active device drives them, with its ring
    /// positions; `None` while it is not active.
    pub active_queues: Option<Vec<QueueSnapshot>>,
}

/// The queues of an active device, for its [`DeviceState`].
pub fn queue_snapshots(queues: &[Queue]) -> Vec<QueueSnapshot> {
    queues.iter().map(|q| q.state().into()).collect()
}

/// A virtio device model that plugs into the MMIO transport.
pub trait VirtioDevice: Send {
    /// The virtio device id (see [`device_type`]).
    fn device_type(&self) -> u32;
    /// The maximum size of each queue; its length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Features the device offers (the transport adds VERSION_1).
    fn avail_features(&self) -> u64;
    /// The features the driver accepted, at FEATURES_OK.
    fn set_acked_features(&mut self, features: u64);
    /// Reads device configuration space; bytes past its end read as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes device configuration space; ignores what the device does not allow.
    fn write_config(&mut self, offset: u64, data: &[u8]);
    /// Starts the device on the driver's queues.
    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError>;
    /// Stops the device and drops its queues (the driver wrote status 0).
    fn reset(&mut self);
    /// The device's state for a snapshot, or why it cannot be snapshotted
    /// now (the snapshot is then refused with that reason).
    fn save_state(&self) -> Result<DeviceState, &'static str> {
        Err("the device model has no snapshot support")
    }
    /// Called once a restored device is active again, before the vCPUs
    /// run: tells the guest what did not survive the restore.
    fn restored(&mut self) {}
}

/// Raises the used-buffer interrupt if the driver wants to hear about
/// `queue` (or when that cannot be read); a failure is logged under
/// `device` and counted in `failures`.
pub fn notify_used(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    irq: &IrqTrigger,
    failures: &mut u64,
    device: &'static str,
) {
    use virtio_queue::QueueT;
    if let Ok(false) = queue.needs_notification(mem) {
        return;
    }
    if let Err(err) = irq.trigger(interrupt::VRING) {
        *failures += 1;
        tracing::warn!(%err, device, "raise the interrupt");
    }
}

/// Interrupt status bits of virtio-mmio.
pub mod interrupt {
    /// The device used a buffer.
    pub const VRING: u32 = 1;
    /// The configuration changed.
    pub const CONFIG: u32 = 2;
}

/// The device's interrupt: the InterruptStatus register plus an irqfd.
#[derive(Debug)]
pub struct IrqTrigger {
    status: AtomicU32,
    evt: EventFd,
}

impl IrqTrigger {
    pub fn new(evt: EventFd) -> Self {
        Self {
            status: AtomicU32::new(0),
            evt,
        }
    }

    /// Sets `kind` (an [`interrupt`] bit) and raises the interrupt line.
    pub fn trigger(&self, kind: u32) -> std::io::Result<()> {
        self.status.fetch_or(kind, Ordering::SeqCst);
        self.evt.write(1)
    }

    /// The InterruptStatus register.
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    /// InterruptACK: clears the given bits.
    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }

    /// The irqfd KVM injects from.
    pub fn evt(&self) -> &EventFd {
        &self.evt
    }
}

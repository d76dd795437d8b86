//! The virtio-mmio transport, version 2 (virtio 1.2 §4.2.2).
//!
//! The guest drives it through 32-bit register accesses in a 4 KiB window;
//! configuration space starts at 0x100. Everything here is guest-controlled:
//! a bad offset, size, value or state transition is logged, counted and
//! ignored, never a panic. Queue registers take effect only between
//! FEATURES_OK and DRIVER_OK while the selected queue is not ready; DRIVER_OK
//! activates the device, and a status write of 0 resets it.
//!
//! - This file: the registers and the status state machine
//!   ([`MmioTransport`]), and the queues and events it hands a device at
//!   DRIVER_OK.
//! - [`TransportState`] (`snapshot.rs`): the registers in a snapshot, and
//!   putting them back into a fresh transport; a state file is untrusted,
//!   so every value is checked first.
//! - `test_utils` (tests and the `test-utils` feature): the fuzz driver of
//!   the register interface, with a virtio-rng device behind it.

use std::sync::{Arc, Mutex, MutexGuard};

use tracing::{debug, warn};
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::{status, Activation, IrqTrigger, VirtioDevice, VIRTIO_F_VERSION_1};

/// Size of one device's MMIO window.
pub const MMIO_WINDOW_SIZE: u64 = 0x1000;
/// Offset of QueueNotify, where the ioeventfds are registered.
pub const QUEUE_NOTIFY_OFFSET: u64 = 0x050;

const MAGIC_VALUE: u32 = 0x7472_6976; // "virt"
const VERSION: u32 = 2;
const VENDOR_ID: u32 = 0x5645_5353; // "VESS"
const CONFIG_SPACE: u64 = 0x100;

/// Errors of creating a transport.
#[derive(Debug, thiserror::Error)]
pub enum MmioError {
    #[error("create a queue event")]
    CreateQueueEvent(#[source] std::io::Error),
    #[error("queue {index} has an invalid maximum size {size}")]
    CreateQueue { index: usize, size: u16 },
    #[error("the snapshot has device type {found} where device type {expected} was created")]
    RestoreDeviceType { expected: u32, found: u32 },
    #[error("the snapshot has {found} queues for device type {device}, which has {expected}")]
    RestoreQueueCount {
        device: u32,
        expected: usize,
        found: usize,
    },
    #[error("queue {index} of device type {device}: {reason}")]
    RestoreQueue {
        device: u32,
        index: usize,
        reason: String,
    },
    #[error("device type {device}: {reason}")]
    RestoreTransport { device: u32, reason: &'static str },
    #[error("cannot activate device type {0} again")]
    RestoreActivate(u32, #[source] super::ActivateError),
}

/// Counts of guest mistakes, for logs and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MmioCounters {
    /// Reads or writes at a bad offset or with a bad size.
    pub bad_accesses: u64,
    /// Writes the current state does not allow (features, queues, status).
    pub refused_writes: u64,
    /// DRIVER_OK writes whose activation failed.
    pub failed_activations: u64,
}

/// One virtio device behind its MMIO registers.
pub struct MmioTransport {
    device: Arc<Mutex<dyn VirtioDevice>>,
    /// The device's type, read once: a snapshot reads it while holding the
    /// device's lock.
    device_type: u32,
    mem: GuestMemoryMmap,
    irq: Arc<IrqTrigger>,
    queues: Vec<Queue>,
    queue_evts: Vec<EventFd>,
    device_status: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    activated: bool,
    counters: MmioCounters,
}

impl MmioTransport {
    /// Wraps `device`; `irq` carries its interrupt.
    pub fn new(
        device: Arc<Mutex<dyn VirtioDevice>>,
        mem: GuestMemoryMmap,
        irq: Arc<IrqTrigger>,
    ) -> Result<Self, MmioError> {
        let (queues, device_type) = {
            let d = lock(&device);
            (new_queues(d.queue_max_sizes())?, d.device_type())
        };
        let queue_evts = (0..queues.len())
            .map(|_| EventFd::new(EFD_NONBLOCK).map_err(MmioError::CreateQueueEvent))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            device,
            device_type,
            mem,
            irq,
            queues,
            queue_evts,
            device_status: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            activated: false,
            counters: MmioCounters::default(),
        })
    }

    /// The events to register as ioeventfds at QueueNotify, datamatch = index.
    pub fn queue_evts(&self) -> &[EventFd] {
        &self.queue_evts
    }

    /// The device's interrupt.
    pub fn irq(&self) -> &Arc<IrqTrigger> {
        &self.irq
    }

    pub fn device_type(&self) -> u32 {
        self.device_type
    }

    /// The device model, shared with its event loop.
    pub fn device_handle(&self) -> Arc<Mutex<dyn VirtioDevice>> {
        Arc::clone(&self.device)
    }

    /// The device; its event loop holds the same lock.
    fn device(&self) -> MutexGuard<'_, dyn VirtioDevice + 'static> {
        lock(&self.device)
    }

    pub fn counters(&self) -> MmioCounters {
        self.counters
    }

    pub fn device_status(&self) -> u32 {
        self.device_status
    }

    fn offered_features(&self) -> u64 {
        self.device().avail_features() | VIRTIO_F_VERSION_1
    }

    fn bad_access(&mut self, kind: &str, offset: u64, len: usize) {
        self.counters.bad_accesses += 1;
        warn!(
            kind,
            offset,
            len,
            device = self.device_type(),
            "bad virtio-mmio access"
        );
    }

    fn refuse(&mut self, what: &str, offset: u64, value: u32) {
        self.counters.refused_writes += 1;
        warn!(
            what,
            offset,
            value,
            status = self.device_status,
            device = self.device_type(),
            "refused virtio-mmio write"
        );
    }

    fn selected_queue(&self) -> Option<&Queue> {
        self.queues.get(self.queue_sel as usize)
    }

    /// Handles a guest read of `data.len()` bytes at `offset` in the window.
    pub fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= CONFIG_SPACE {
            data.fill(0);
            self.device().read_config(offset - CONFIG_SPACE, data);
            return;
        }
        if data.len() != 4 || !offset.is_multiple_of(4) {
            data.fill(0xff);
            self.bad_access("read", offset, data.len());
            return;
        }
        let value = match offset {
            0x000 => MAGIC_VALUE,
            0x004 => VERSION,
            0x008 => self.device_type(),
            0x00c => VENDOR_ID,
            0x010 => match self.device_features_sel {
                0 => self.offered_features() as u32,
                1 => (self.offered_features() >> 32) as u32,
                _ => 0,
            },
            0x034 => self.selected_queue().map_or(0, |q| u32::from(q.max_size())),
            0x044 => self.selected_queue().map_or(0, |q| u32::from(q.ready())),
            0x060 => self.irq.status(),
            0x070 => self.device_status,
            // No shared memory regions: length and base read as all ones.
            0x0b0 | 0x0b4 | 0x0b8 | 0x0bc => u32::MAX,
            0x0fc => 0, // ConfigGeneration: our config space never changes under the driver.
            _ => {
                data.fill(0xff);
                self.bad_access("read", offset, data.len());
                return;
            }
        };
        data.copy_from_slice(&value.to_le_bytes());
    }

    /// Handles a guest write of `data` at `offset` in the window.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= CONFIG_SPACE {
            if self.device_status & status::DRIVER == 0 {
                self.refuse("config before DRIVER", offset, 0);
                return;
            }
            self.device().write_config(offset - CONFIG_SPACE, data);
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            self.bad_access("write", offset, data.len());
            return;
        };
        if !offset.is_multiple_of(4) {
            self.bad_access("write", offset, data.len());
            return;
        }
        let value = u32::from_le_bytes(bytes);
        match offset {
            0x014 => self.device_features_sel = value,
            0x020 => self.write_driver_features(value),
            0x024 => self.driver_features_sel = value,
            0x030 => self.queue_sel = value,
            0x038 | 0x044 | 0x080 | 0x084 | 0x090 | 0x094 | 0x0a0 | 0x0a4 => {
                self.write_queue_register(offset, value)
            }
            QUEUE_NOTIFY_OFFSET => self.notify(value),
            0x064 => self.irq.ack(value),
            0x070 => self.write_status(value),
            0x0ac => {} // SHMSel: there are no regions to select.
            _ => self.bad_access("write", offset, data.len()),
        }
    }

    fn write_driver_features(&mut self, value: u32) {
        let negotiating =
            self.device_status & (status::DRIVER | status::FEATURES_OK) == status::DRIVER;
        if !negotiating {
            self.refuse("DriverFeatures outside negotiation", 0x020, value);
            return;
        }
        match self.driver_features_sel {
            0 => self.driver_features = (self.driver_features & !0xffff_ffff) | u64::from(value),
            1 => {
                self.driver_features =
                    (self.driver_features & 0xffff_ffff) | (u64::from(value) << 32)
            }
            _ => self.refuse("DriverFeaturesSel beyond 1", 0x020, value),
        }
    }

    fn write_queue_register(&mut self, offset: u64, value: u32) {
        let configurable =
            self.device_status & (status::FEATURES_OK | status::DRIVER_OK) == status::FEATURES_OK;
        let index = self.queue_sel as usize;
        let refusal = match self.queues.get_mut(index).filter(|_| configurable) {
            None => Some("queue register"),
            Some(queue) if queue.ready() && offset != 0x044 => {
                Some("queue register of a ready queue")
            }
            Some(queue) => match offset {
                0x038 => queue
                    .try_set_size(value.try_into().unwrap_or(0))
                    .err()
                    .map(|_| "QueueNum"),
                0x044 => {
                    queue.set_ready(value == 1);
                    None
                }
                _ => {
                    let (low, high) = if offset.is_multiple_of(8) {
                        (Some(value), None)
                    } else {
                        (None, Some(value))
                    };
                    match offset & !0x4 {
                        0x080 => queue.set_desc_table_address(low, high),
                        0x090 => queue.set_avail_ring_address(low, high),
                        _ => queue.set_used_ring_address(low, high),
                    }
                    None
                }
            },
        };
        if let Some(what) = refusal {
            self.refuse(what, offset, value);
        }
    }

    /// A QueueNotify that reached us (no ioeventfd matched): forward it.
    fn notify(&mut self, value: u32) {
        if !self.activated {
            self.refuse("QueueNotify before DRIVER_OK", QUEUE_NOTIFY_OFFSET, value);
            return;
        }
        match self.queue_evts.get(value as usize) {
            Some(evt) => {
                if let Err(err) = evt.write(1) {
                    warn!(queue = value, %err, "signal a queue event");
                }
            }
            None => self.refuse("QueueNotify of a missing queue", QUEUE_NOTIFY_OFFSET, value),
        }
    }

    fn write_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        let old = self.device_status;
        // The driver only ever adds bits, in order (virtio 1.2 §3.1.1).
        let in_order = value & old == old
            && (value & status::DRIVER == 0 || value & status::ACKNOWLEDGE != 0)
            && (value & status::FEATURES_OK == 0 || value & status::DRIVER != 0)
            && (value & status::DRIVER_OK == 0 || value & status::FEATURES_OK != 0);
        if !in_order {
            self.refuse("status transition", 0x070, value);
            return;
        }
        let added = value & !old;
        if added & status::FEATURES_OK != 0 && !self.accept_features() {
            // Leaving FEATURES_OK clear tells the driver we refused them.
            self.device_status = value & !(status::FEATURES_OK | status::DRIVER_OK);
            return;
        }
        self.device_status = value;
        if added & status::DRIVER_OK != 0 && value & status::FAILED == 0 {
            self.activate();
        }
    }

    /// FEATURES_OK: the driver's features must be offered ones, with VERSION_1.
    fn accept_features(&mut self) -> bool {
        let offered = self.offered_features();
        if self.driver_features & !offered != 0 || self.driver_features & VIRTIO_F_VERSION_1 == 0 {
            self.refuse("features not offered", 0x070, status::FEATURES_OK);
            return false;
        }
        self.device().set_acked_features(self.driver_features);
        true
    }

    fn activate(&mut self) {
        let result = self.try_activate();
        match result {
            Ok(()) => {
                self.activated = true;
                debug!(device = self.device_type(), "virtio device activated");
            }
            Err(err) => {
                self.counters.failed_activations += 1;
                warn!(device = self.device_type(), %err, "activate virtio device");
                self.device_status |= status::DEVICE_NEEDS_RESET;
                if let Err(err) = self.irq.trigger(super::interrupt::CONFIG) {
                    warn!(%err, "raise the config-change interrupt");
                }
            }
        }
    }

    fn try_activate(&mut self) -> Result<(), super::ActivateError> {
        if self.activated {
            return Err(super::ActivateError::AlreadyActive);
        }
        for (index, queue) in self.queues.iter().enumerate() {
            if !queue.ready() || !queue.is_valid(&self.mem) {
                return Err(super::ActivateError::InvalidQueue(index));
            }
        }
        // The device gets its own copies; the transport keeps answering
        // register reads from its set.
        let queues = self
            .queues
            .iter()
            .enumerate()
            .map(|(index, q)| {
                Queue::try_from(q.state()).map_err(|_| super::ActivateError::InvalidQueue(index))
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.activate_on(queues)
    }

    /// Hands the device `queues` and clones of the queue events.
    fn activate_on(&mut self, queues: Vec<Queue>) -> Result<(), super::ActivateError> {
        let queue_evts = self
            .queue_evts
            .iter()
            .map(|e| e.try_clone().map_err(super::ActivateError::CloneEvent))
            .collect::<Result<Vec<_>, _>>()?;
        self.device().activate(Activation {
            mem: self.mem.clone(),
            queues,
            queue_evts,
            irq: Arc::clone(&self.irq),
        })
    }

    fn reset(&mut self) {
        if self.activated || self.device_status != 0 {
            self.device().reset();
        }
        for queue in &mut self.queues {
            queue.reset();
        }
        self.activated = false;
        self.device_status = 0;
        self.driver_features = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.queue_sel = 0;
        self.irq.ack(u32::MAX);
    }
}

/// Locks a device; a poisoned lock (a panic elsewhere) still yields it.
pub fn lock<T: ?Sized>(device: &Mutex<T>) -> MutexGuard<'_, T> {
    device
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn new_queues(max_sizes: &[u16]) -> Result<Vec<Queue>, MmioError> {
    max_sizes
        .iter()
        .enumerate()
        .map(|(index, &size)| Queue::new(size).map_err(|_| MmioError::CreateQueue { index, size }))
        .collect()
}

mod snapshot;
pub use snapshot::TransportState;

#[cfg(any(test, feature = "test-utils"))]
pub mod test_utils;
#[cfg(test)]
mod tests;

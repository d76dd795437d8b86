//! Emulated devices and the [`Bus`] that dispatches the guest's accesses to
//! them: port I/O to the [`legacy`] devices, MMIO to the [`virtio`]
//! transports' windows. The bus also saves every device for a snapshot.

pub mod legacy;
pub mod virtio;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use virtio::mmio::{lock, MmioTransport, TransportState, MMIO_WINDOW_SIZE};
use virtio::{DeviceState, VirtioDevice};

use tracing::{debug, warn};

use legacy::i8042::{I8042, I8042_PORT_COUNT, I8042_PORT_DATA};
use legacy::serial::{SerialDevice, SerialSnapshot, SERIAL_PORT_BASE, SERIAL_PORT_COUNT};

/// What the VM must do after a device access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceAction {
    /// Nothing.
    Continue,
    /// The guest asked for a reset: end the VM.
    Reset,
}

/// Errors of building the devices.
#[derive(Debug, thiserror::Error)]
pub enum DevicesError {
    #[error("cannot create the serial device")]
    CreateSerial(#[source] legacy::serial::SerialError),
    #[error("virtio device type {0} cannot be snapshotted: {1}")]
    SnapshotUnsupported(u32, &'static str),
}

/// One virtio-mmio device in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VirtioSlotState {
    /// Where its window was; a restore puts it at the same place.
    pub base: u64,
    pub transport: TransportState,
    pub device: DeviceState,
}

/// Every device of the bus in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevicesState {
    pub serial: SerialSnapshot,
    pub i8042: I8042,
    pub virtio: Vec<VirtioSlotState>,
}

/// A virtio-mmio device window.
pub struct MmioSlot {
    pub base: u64,
    pub transport: Mutex<MmioTransport>,
}

/// The devices of the VM, by port or MMIO address, shared by all vCPU threads.
pub struct Bus {
    serial: Mutex<SerialDevice>,
    i8042: Mutex<I8042>,
    virtio: Vec<MmioSlot>,
    unknown: AtomicU64,
}

impl Bus {
    /// Creates the bus around its devices.
    pub fn new(serial: SerialDevice, virtio: Vec<MmioSlot>) -> Self {
        Self::with_i8042(serial, I8042::default(), virtio)
    }

    /// Creates the bus around its devices, the i8042 in a given state.
    pub fn with_i8042(serial: SerialDevice, i8042: I8042, virtio: Vec<MmioSlot>) -> Self {
        Self {
            serial: Mutex::new(serial),
            i8042: Mutex::new(i8042),
            virtio,
            unknown: AtomicU64::new(0),
        }
    }

    /// Saves every device and calls `then` with their state while holding
    /// every device's lock, so no device event loop touches guest memory
    /// until it returns (a snapshot writes guest memory out there). The
    /// vCPUs must be paused. A device that cannot be snapshotted refuses it.
    pub fn save_state<R>(&self, then: impl FnOnce(DevicesState) -> R) -> Result<R, DevicesError> {
        let serial = lock(&self.serial);
        let i8042 = lock(&self.i8042);
        let handles: Vec<Arc<Mutex<dyn VirtioDevice>>> = self
            .virtio
            .iter()
            .map(|slot| lock(&slot.transport).device_handle())
            .collect();
        let devices: Vec<_> = handles.iter().map(|d| lock(d)).collect();
        let transports: Vec<_> = self.virtio.iter().map(|s| lock(&s.transport)).collect();
        let mut virtio = Vec::with_capacity(self.virtio.len());
        for ((slot, device), transport) in self.virtio.iter().zip(&devices).zip(&transports) {
            let state = device
                .save_state()
                .map_err(|why| DevicesError::SnapshotUnsupported(transport.device_type(), why))?;
            virtio.push(VirtioSlotState {
                base: slot.base,
                transport: transport.save_state(),
                device: state,
            });
        }
        let state = DevicesState {
            serial: serial.save(),
            i8042: i8042.clone(),
            virtio,
        };
        Ok(then(state))
    }

    fn virtio_at(&self, addr: u64) -> Option<(&MmioSlot, u64)> {
        self.virtio
            .iter()
            .find(|slot| (slot.base..slot.base + MMIO_WINDOW_SIZE).contains(&addr))
            .map(|slot| (slot, addr - slot.base))
    }

    /// Guest MMIO read of `data.len()` bytes at `addr`.
    pub fn mmio_read(&self, addr: u64, data: &mut [u8]) {
        match self.virtio_at(addr) {
            Some((slot, offset)) => lock(&slot.transport).read(offset, data),
            None => {
                self.note_unknown("mmio-read", addr, data.len());
                data.fill(0xff);
            }
        }
    }

    /// Guest MMIO write of `data` at `addr`.
    pub fn mmio_write(&self, addr: u64, data: &[u8]) {
        match self.virtio_at(addr) {
            Some((slot, offset)) => lock(&slot.transport).write(offset, data),
            None => self.note_unknown("mmio-write", addr, data.len()),
        }
    }

    /// Counts of guest mistakes on the virtio transports.
    pub fn virtio_counters(&self) -> Vec<(u32, virtio::mmio::MmioCounters)> {
        self.virtio
            .iter()
            .map(|slot| {
                let t = lock(&slot.transport);
                (t.device_type(), t.counters())
            })
            .collect()
    }

    /// Accesses to unknown ports or MMIO so far.
    pub fn unknown_accesses(&self) -> u64 {
        self.unknown.load(Ordering::Relaxed)
    }

    /// Counts and logs an access nobody handles.
    pub fn note_unknown(&self, kind: &'static str, addr: u64, len: usize) {
        let n = self.unknown.fetch_add(1, Ordering::Relaxed);
        if n < 16 {
            debug!(
                kind,
                addr = format_args!("{addr:#x}"),
                len,
                "unhandled access"
            );
        }
    }

    /// Guest read of `data.len()` bytes from `port`.
    pub fn read(&self, port: u16, data: &mut [u8]) {
        if (SERIAL_PORT_BASE..SERIAL_PORT_BASE + SERIAL_PORT_COUNT).contains(&port) {
            let mut s = self.serial.lock().unwrap_or_else(|e| e.into_inner());
            data.fill(0);
            data[0] = s.read((port - SERIAL_PORT_BASE) as u8);
        } else if (I8042_PORT_DATA..I8042_PORT_DATA + I8042_PORT_COUNT).contains(&port) {
            let mut k = self.i8042.lock().unwrap_or_else(|e| e.into_inner());
            data.fill(0);
            data[0] = k.read(port);
        } else {
            self.note_unknown("pio-read", u64::from(port), data.len());
            data.fill(0xff);
        }
    }

    /// Guest write of `data` to `port`.
    pub fn write(&self, port: u16, data: &[u8]) -> DeviceAction {
        let Some(&byte) = data.first() else {
            return DeviceAction::Continue;
        };
        if (SERIAL_PORT_BASE..SERIAL_PORT_BASE + SERIAL_PORT_COUNT).contains(&port) {
            let mut s = self.serial.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(error) = s.write((port - SERIAL_PORT_BASE) as u8, byte) {
                warn!(%error, "serial write failed");
            }
            DeviceAction::Continue
        } else if (I8042_PORT_DATA..I8042_PORT_DATA + I8042_PORT_COUNT).contains(&port) {
            let mut k = self.i8042.lock().unwrap_or_else(|e| e.into_inner());
            k.write(port, byte)
        } else {
            self.note_unknown("pio-write", u64::from(port), data.len());
            DeviceAction::Continue
        }
    }
}

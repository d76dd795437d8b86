//! Emulated devices and the port-I/O bus that dispatches guest accesses.

pub mod legacy;
pub mod virtio;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use virtio::mmio::{lock, MmioTransport, MMIO_WINDOW_SIZE};

use tracing::{debug, warn};

use legacy::i8042::{I8042, I8042_PORT_COUNT, I8042_PORT_DATA};
use legacy::serial::{SerialDevice, SERIAL_PORT_BASE, SERIAL_PORT_COUNT};

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
        Self {
            serial: Mutex::new(serial),
            i8042: Mutex::new(I8042::default()),
            virtio,
            unknown: AtomicU64::new(0),
        }
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

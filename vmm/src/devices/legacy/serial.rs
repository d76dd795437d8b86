//! The 8250 UART at 0x3f8, IRQ 4, built on vm-superio's `Serial`; its
//! interrupt is an eventfd the VM registers as an irqfd.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};
use vm_superio::serial::SerialState;
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use super::capped::CappedFile;

/// First port of COM1.
pub const SERIAL_PORT_BASE: u16 = 0x3f8;
/// Number of ports of a UART.
pub const SERIAL_PORT_COUNT: u16 = 8;
/// COM1's ISA IRQ / GSI.
pub const SERIAL_IRQ: u32 = 4;

/// Errors of the serial device.
#[derive(Debug, thiserror::Error)]
pub enum SerialError {
    #[error("cannot create the interrupt eventfd")]
    CreateEventFd(#[source] io::Error),
    #[error("cannot clone the interrupt eventfd")]
    CloneEventFd(#[source] io::Error),
    #[error("cannot create serial output file {0:?}")]
    CreateOutput(std::path::PathBuf, #[source] io::Error),
    #[error("UART register write failed")]
    WriteRegister(#[source] vm_superio::serial::Error<io::Error>),
    #[error("cannot restore the UART")]
    RestoreState(#[source] vm_superio::serial::Error<io::Error>),
}

/// The UART's registers and receive FIFO, for snapshots (vm-superio's
/// `SerialState`, which does not serialise).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SerialSnapshot {
    pub baud_divisor_low: u8,
    pub baud_divisor_high: u8,
    pub interrupt_enable: u8,
    pub interrupt_identification: u8,
    pub line_control: u8,
    pub line_status: u8,
    pub modem_control: u8,
    pub modem_status: u8,
    pub scratch: u8,
    /// At most vm-superio's FIFO size; more is refused at restore.
    pub in_buffer: Vec<u8>,
}

impl From<SerialState> for SerialSnapshot {
    fn from(s: SerialState) -> Self {
        Self {
            baud_divisor_low: s.baud_divisor_low,
            baud_divisor_high: s.baud_divisor_high,
            interrupt_enable: s.interrupt_enable,
            interrupt_identification: s.interrupt_identification,
            line_control: s.line_control,
            line_status: s.line_status,
            modem_control: s.modem_control,
            modem_status: s.modem_status,
            scratch: s.scratch,
            in_buffer: s.in_buffer,
        }
    }
}

impl From<&SerialSnapshot> for SerialState {
    fn from(s: &SerialSnapshot) -> Self {
        Self {
            baud_divisor_low: s.baud_divisor_low,
            baud_divisor_high: s.baud_divisor_high,
            interrupt_enable: s.interrupt_enable,
            interrupt_identification: s.interrupt_identification,
            line_control: s.line_control,
            line_status: s.line_status,
            modem_control: s.modem_control,
            modem_status: s.modem_status,
            scratch: s.scratch,
            in_buffer: s.in_buffer.clone(),
        }
    }
}

/// An eventfd that raises the UART's interrupt.
pub struct IrqTrigger(EventFd);

impl Trigger for IrqTrigger {
    type E = io::Error;

    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

/// Where the UART writes: flushed at every byte so the console is live.
pub struct ConsoleOut(Box<dyn Write + Send>);

impl Write for ConsoleOut {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.0.write(buf)?;
        self.0.flush()?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// The UART with its output.
pub struct SerialDevice {
    inner: Serial<IrqTrigger, vm_superio::serial::NoEvents, ConsoleOut>,
}

impl SerialDevice {
    /// A UART writing to `out`; returns it and the eventfd to register.
    pub fn new(out: Box<dyn Write + Send>) -> Result<(Self, EventFd), SerialError> {
        let evt = EventFd::new(libc::EFD_NONBLOCK).map_err(SerialError::CreateEventFd)?;
        let irq = evt.try_clone().map_err(SerialError::CloneEventFd)?;
        let inner = Serial::new(IrqTrigger(irq), ConsoleOut(out));
        Ok((Self { inner }, evt))
    }

    /// A UART in the snapshot's `state`, writing to `out`; an interrupt it
    /// had pending is raised again on the returned eventfd.
    pub fn restore(
        state: &SerialSnapshot,
        out: Box<dyn Write + Send>,
    ) -> Result<(Self, EventFd), SerialError> {
        let evt = EventFd::new(libc::EFD_NONBLOCK).map_err(SerialError::CreateEventFd)?;
        let irq = evt.try_clone().map_err(SerialError::CloneEventFd)?;
        let inner = Serial::from_state(
            &SerialState::from(state),
            IrqTrigger(irq),
            vm_superio::serial::NoEvents,
            ConsoleOut(out),
        )
        .map_err(SerialError::RestoreState)?;
        Ok((Self { inner }, evt))
    }

    /// The UART's state, for a snapshot.
    pub fn save(&self) -> SerialSnapshot {
        self.inner.state().into()
    }

    /// Opens the output: stdout, or a file at `path`, capped at
    /// `max_bytes` if given ([`CappedFile`]).
    pub fn output(
        path: Option<&Path>,
        max_bytes: Option<u64>,
    ) -> Result<Box<dyn Write + Send>, SerialError> {
        let Some(path) = path else {
            return Ok(Box::new(io::stdout()));
        };
        let file =
            File::create(path).map_err(|e| SerialError::CreateOutput(path.to_path_buf(), e))?;
        Ok(match max_bytes {
            Some(max) => Box::new(CappedFile::new(file, max)),
            None => Box::new(file),
        })
    }

    /// Reads register `offset`.
    pub fn read(&mut self, offset: u8) -> u8 {
        self.inner.read(offset)
    }

    /// Writes register `offset`.
    pub fn write(&mut self, offset: u8, value: u8) -> Result<(), SerialError> {
        self.inner
            .write(offset, value)
            .map_err(SerialError::WriteRegister)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_uart_restores_with_its_registers_and_fifo() {
        let (mut uart, _evt) = SerialDevice::new(Box::new(io::sink())).unwrap();
        uart.write(7, 0x5a).unwrap(); // scratch
        uart.write(3, 0x03).unwrap(); // 8N1
        let mut state = uart.save();
        assert_eq!((state.scratch, state.line_control), (0x5a, 0x03));
        state.in_buffer = b"abc".to_vec();
        let text = serde_json::to_string(&state).unwrap();
        let back: SerialSnapshot = serde_json::from_str(&text).unwrap();
        let (mut restored, _evt) = SerialDevice::restore(&back, Box::new(io::sink())).unwrap();
        assert_eq!(restored.save(), state);
        assert_eq!(restored.read(7), 0x5a);
    }

    #[test]
    fn an_overfull_fifo_is_refused() {
        let (uart, _evt) = SerialDevice::new(Box::new(io::sink())).unwrap();
        let mut state = uart.save();
        state.in_buffer = vec![b'x'; 1 << 20];
        let err = SerialDevice::restore(&state, Box::new(io::sink()))
            .err()
            .unwrap();
        assert!(matches!(err, SerialError::RestoreState(_)), "{err}");
    }
}

//! The 8250 UART at 0x3f8, IRQ 4, built on vm-superio's `Serial`; its
//! interrupt is an eventfd the VM registers as an irqfd.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

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

    /// Opens the output: stdout, or a file at `path`.
    pub fn output(path: Option<&Path>) -> Result<Box<dyn Write + Send>, SerialError> {
        Ok(match path {
            None => Box::new(io::stdout()),
            Some(p) => Box::new(
                File::create(p).map_err(|e| SerialError::CreateOutput(p.to_path_buf(), e))?,
            ),
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

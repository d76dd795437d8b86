//! The fuzz driver of the port-I/O bus and its legacy devices (the 8250
//! UART writing a capped console file, and the i8042), for its fuzz target
//! and the seed-input test.

use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};

use super::capped::CappedFile;
use super::i8042::{I8042, I8042_PORT_COUNT, I8042_PORT_DATA};
use super::serial::{SerialDevice, SERIAL_PORT_BASE, SERIAL_PORT_COUNT};
use crate::devices::{Bus, DeviceAction};

/// A console file of its own in the temp directory, removed at once (the
/// open file stays).
fn scratch_console() -> Option<File> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let path = std::env::temp_dir().join(format!(
        "vessel-fuzz-console-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let file = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .ok()?;
    let _ = std::fs::remove_file(&path);
    Some(file)
}

/// The smallest console cap, so the fuzzer reaches the restart.
const FUZZ_CONSOLE_CAP: u64 = 4096;

/// Fuzz driver for the guest's port I/O: `data` is a list of 4-byte
/// accesses (kind, port low, port high, value). The kind's low bit chooses
/// read or write, its next two bits the width (1, 2 or 4 bytes), and its top
/// bits aim the port at the UART, the i8042 or anywhere. The console file
/// never passes its cap; a write the i8042 takes as a reset ends the run, as
/// it ends the VM.
pub fn fuzz_port_io(data: &[u8]) {
    let Some(file) = scratch_console() else {
        return;
    };
    let Ok(console) = file.try_clone() else {
        return;
    };
    let out = CappedFile::new(console, FUZZ_CONSOLE_CAP);
    let Ok((serial, _irq)) = SerialDevice::new(Box::new(out)) else {
        return;
    };
    let bus = Bus::with_i8042(serial, I8042::default(), Vec::new());
    for op in data.chunks_exact(4) {
        let raw = u16::from_le_bytes([op[1], op[2]]);
        let port = match op[0] >> 6 {
            0 | 1 => SERIAL_PORT_BASE + raw % SERIAL_PORT_COUNT,
            2 => I8042_PORT_DATA + raw % I8042_PORT_COUNT,
            _ => raw,
        };
        let len = [1usize, 2, 4, 1][usize::from(op[0] >> 1) & 3];
        let mut bytes = [op[3], 0, 0, 0];
        if op[0] & 1 == 0 {
            bus.read(port, &mut bytes[..len]);
        } else if bus.write(port, &bytes[..len]) == DeviceAction::Reset {
            break;
        }
    }
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    assert!(size <= FUZZ_CONSOLE_CAP, "the console grew to {size} bytes");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_inputs_run_and_a_flood_stays_under_the_cap() {
        fuzz_port_io(&[]);
        fuzz_port_io(&[0xff; 7]);
        // 10,000 bytes to the UART's data register, then reads everywhere.
        let mut flood: Vec<u8> = (0..10_000).flat_map(|_| [1, 0, 0, b'x']).collect();
        flood.extend((0..=255u8).flat_map(|p| [p, p, 0, p]));
        fuzz_port_io(&flood);
        // The i8042's reset command (0xfe to port 0x64) ends the run.
        fuzz_port_io(&[0x81, 4, 0, 0xfe, 1, 0, 0, b'y']);
    }
}

//! Guest port I/O on the bus: the 8250 UART (its console file capped) and
//! the i8042.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vessel_vmm::devices::legacy::test_utils::fuzz_port_io(data);
});

//! A snapshot state file's JSON, which a restore reads as untrusted input:
//! parsed, validated, and its serial UART and virtio transports restored
//! around fresh devices.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vessel_vmm::snapshot::fuzz::fuzz_state(data);
});

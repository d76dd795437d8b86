//! Guest descriptor tables, buffers and available rings fed to the
//! virtio-vsock transmit path.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vessel_vmm::devices::virtio::vsock::test_utils::fuzz_vsock_tx(data);
});

//! Guest reads and writes of the virtio-vsock and virtio-fs config spaces.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vessel_vmm::devices::virtio::vsock::test_utils::fuzz_vsock_config(data);
    vessel_vmm::devices::virtio::fs::test_utils::fuzz_fs_config(data);
});

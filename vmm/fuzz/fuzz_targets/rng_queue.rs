//! Guest descriptor tables and available rings fed to virtio-rng.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vessel_vmm::devices::virtio::rng::test_utils::fuzz_rng_queue(data);
});

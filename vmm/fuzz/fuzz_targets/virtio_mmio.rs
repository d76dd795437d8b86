//! Guest MMIO register traffic against a virtio-mmio transport (with a
//! virtio-rng device), over guest memory the fuzzer fills.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vessel_vmm::devices::virtio::mmio::test_utils::fuzz_mmio_transport(data);
});

//! Guest descriptor tables, buffers and available rings fed to the
//! virtio-fs request queue, served by a passthrough file system over a
//! scratch share; a file beside the share must never reach guest memory.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vessel_vmm::devices::virtio::fs::test_utils::fuzz_fs_queue(data);
});

//! The fuzz driver of the virtio-mmio transport, for its fuzz target and
//! the seed-input test.

use std::sync::{Arc, Mutex};

use vm_memory::{Bytes, GuestAddress};

use super::{lock, MmioTransport};
use crate::devices::virtio::rng::Rng;
use crate::devices::virtio::test_utils::VirtQueue;

/// Fuzz driver for the MMIO transport with a virtio-rng device behind it.
///
/// The first half of `data` (at most 64 KiB) becomes guest memory from
/// address 0, so rings and buffers hold fuzzer bytes wherever the fuzzed
/// registers point them; the rest is a list of 7-byte register accesses
/// (kind, offset, value). After each access an active device processes its
/// queue, as the event loop would.
pub fn fuzz_mmio_transport(data: &[u8]) {
    let (image, ops) = data.split_at((data.len() / 2).min(64 * 1024));
    let q = VirtQueue::new(16);
    q.mem
        .write_slice(image, GuestAddress(0))
        .expect("image fits in guest memory");
    let Ok(rng) = Rng::new() else { return };
    let rng = Arc::new(Mutex::new(rng));
    let Ok(mut transport) = MmioTransport::new(rng.clone(), q.mem.clone(), Arc::clone(&q.irq))
    else {
        return;
    };
    for op in ops.chunks_exact(7) {
        let offset = u64::from(u16::from_le_bytes([op[1], op[2]])) % 0x1000;
        let len = [1usize, 2, 4, 8][usize::from(op[0] >> 1) % 4];
        let mut bytes = [0u8; 8];
        bytes[..4].copy_from_slice(&op[3..7]);
        if op[0] & 1 == 0 {
            transport.read(offset, &mut bytes[..len]);
        } else {
            transport.write(offset, &bytes[..len]);
        }
        lock(&rng).process_queue();
    }
}

//! virtio-rng's test helpers, for its unit tests and its fuzz target: its
//! activation over a [`VirtQueue`], and the fuzz driver of its queue.

use std::sync::Arc;

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::Rng;
use crate::devices::virtio::test_utils::VirtQueue;
use crate::devices::virtio::{Activation, VirtioDevice};

/// An activation of virtio-rng's one queue, `q` (with a fresh queue event).
pub fn activation(q: &VirtQueue) -> Activation {
    Activation {
        mem: q.mem.clone(),
        queues: vec![q.queue()],
        queue_evts: vec![EventFd::new(EFD_NONBLOCK).expect("eventfd")],
        irq: Arc::clone(&q.irq),
    }
}

/// Fuzz driver for virtio-rng's queue processing: `data` fills the
/// descriptor table and chooses the heads posted on the available ring.
pub fn fuzz_rng_queue(data: &[u8]) {
    let Some((&size_bits, rest)) = data.split_first() else {
        return;
    };
    let size = 1u16 << (size_bits % 9); // 1..=256
    let q = VirtQueue::new(size);
    let (table, heads) = rest.split_at(rest.len().min(16 * usize::from(size)));
    q.write_desc_table(table);
    for head in heads.chunks_exact(2).take(usize::from(size)) {
        q.publish(u16::from_le_bytes([head[0], head[1]]));
    }
    let Ok(mut rng) = Rng::new() else { return };
    if rng.activate(activation(&q)).is_err() {
        return;
    }
    rng.process_queue();
    // Buffers may overlap the rings (the guest's choice), so check the
    // device's own accounting rather than what the used ring now holds.
    let counters = rng.counters();
    let cap = u64::from(super::device::MAX_BYTES_PER_REQUEST);
    assert!(
        counters.bytes <= counters.requests * cap,
        "a request went over the cap"
    );
    assert!(
        counters.requests <= u64::from(size),
        "more requests than posted buffers"
    );
}

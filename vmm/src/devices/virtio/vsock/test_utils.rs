//! virtio-vsock's test helpers, for its unit tests, its fuzz target and
//! the snapshot fuzz driver: its three queues in one guest memory, a unique
//! socket path, and the fuzz driver of its transmit path.

use std::sync::Arc;

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::Vsock;
use crate::devices::virtio::test_utils::{FuzzInput, RingAt, VirtQueue};
use crate::devices::virtio::{Activation, VirtioDevice};

/// The three queues of a virtio-vsock device in one guest memory: tx is a
/// [`VirtQueue`], rx and event are [`RingAt`]s.
pub struct VsockQueues {
    pub tx: VirtQueue,
    pub rx: RingAt,
    pub event: RingAt,
}

impl VsockQueues {
    pub const RX_BASE: u64 = 0x100_000;
    pub const EVENT_BASE: u64 = 0x110_000;

    pub fn new(size: u16) -> Self {
        let tx = VirtQueue::new(size);
        let rx = RingAt::new(&tx.mem, Self::RX_BASE, size);
        let event = RingAt::new(&tx.mem, Self::EVENT_BASE, size);
        Self { tx, rx, event }
    }

    /// An activation with the queues in virtio-vsock order (rx, tx, event).
    pub fn activation(&self) -> Activation {
        Activation {
            mem: self.tx.mem.clone(),
            queues: vec![self.rx.queue(), self.tx.queue(), self.event.queue()],
            queue_evts: (0..3)
                .map(|_| EventFd::new(EFD_NONBLOCK).expect("eventfd"))
                .collect(),
            irq: Arc::clone(&self.tx.irq),
        }
    }
}

/// A unix socket path for a test device, unique in this process.
pub fn temp_uds_path(tag: &str) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    std::env::temp_dir().join(format!(
        "vessel-{tag}-{}-{}.sock",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Fuzz driver for virtio-vsock's transmit path. `data` is: one byte
/// choosing the queue size, the descriptor table, two bytes per head posted
/// on the available ring (as many as the queue holds), and the rest, copied
/// to guest address 0x10000 for descriptors to point at. The device (guest
/// CID 3) processes the transmit queue with no receive buffers posted.
pub fn fuzz_vsock_tx(data: &[u8]) {
    let Some(input) = FuzzInput::split(data) else {
        return;
    };
    let queues = VsockQueues::new(input.size);
    queues.tx.load_fuzz_chains(&input);
    let path = temp_uds_path("fuzz-vsock");
    let Ok(mut vsock) = Vsock::new(3, &path) else {
        return;
    };
    if vsock.activate(queues.activation()).is_err() {
        return;
    }
    vsock.process_queues();
    let c = vsock.counters();
    assert_eq!(
        c.tx_packets + c.bad_packets,
        c.tx_chains,
        "every chain is a packet or a rejection"
    );
    assert!(
        c.tx_chains <= (input.heads.len() / 2) as u64,
        "more chains than posted heads"
    );
    assert!(
        c.tx_bytes <= c.tx_packets * u64::from(super::packet::MAX_PAYLOAD),
        "a payload over the limit was accepted"
    );
    assert_eq!(c.rx_packets, 0, "no receive buffer was posted");
    assert!(
        queues.rx.used().is_empty(),
        "nothing was put on the rx used ring"
    );
}

/// Fuzz driver for virtio-vsock's config space (its guest CID), see
/// [`fuzz_config_space`](crate::devices::virtio::test_utils::fuzz_config_space).
pub fn fuzz_vsock_config(data: &[u8]) {
    let path = temp_uds_path("fuzz-vsock-config");
    let Ok(mut vsock) = Vsock::new(3, &path) else {
        return;
    };
    crate::devices::virtio::test_utils::fuzz_config_space(&mut vsock, data);
    let mut cid = [0u8; 8];
    vsock.read_config(0, &mut cid);
    assert_eq!(u64::from_le_bytes(cid), 3);
}

//! A split virtqueue laid out in test guest memory, the way a driver would,
//! for device unit tests and fuzz targets.

use std::cell::Cell;
use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::{Activation, IrqTrigger};

const DESC_TABLE: u64 = 0x1000;
const MEM_SIZE: usize = 16 << 20;
const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;

/// A driver-side view of one queue, in its own guest memory.
pub struct VirtQueue {
    pub mem: GuestMemoryMmap,
    ring: RingAt,
    pub irq: Arc<IrqTrigger>,
}

impl VirtQueue {
    /// A queue of `size` entries in 16 MiB of fresh guest memory.
    pub fn new(size: u16) -> Self {
        Self::with_mem_size(size, MEM_SIZE)
    }

    /// A queue of `size` entries in `mem_size` bytes of fresh guest memory.
    pub fn with_mem_size(size: u16, mem_size: usize) -> Self {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), mem_size)])
            .expect("test guest memory");
        let irq = Arc::new(IrqTrigger::new(
            EventFd::new(EFD_NONBLOCK).expect("eventfd"),
        ));
        let ring = RingAt::new(&mem, DESC_TABLE, size);
        Self { mem, ring, irq }
    }

    /// Posts one chain of `(address, length, device-writable)` descriptors;
    /// returns its head.
    pub fn add_chain(&self, descs: &[(u64, u32, bool)]) -> u16 {
        self.ring.add_chain(descs)
    }

    /// Puts `head` on the available ring (no validation: fuzzers use it too).
    pub fn publish(&self, head: u16) {
        self.ring.publish(head);
    }

    /// Writes raw bytes into the descriptor table (for fuzzing).
    pub fn write_desc_table(&self, bytes: &[u8]) {
        self.ring.write_desc_table(bytes);
    }

    /// The device-side queue, set up and ready.
    pub fn queue(&self) -> Queue {
        self.ring.queue()
    }

    /// The `(head, length)` entries the device put on the used ring.
    pub fn used(&self) -> Vec<(u16, u32)> {
        self.ring.used()
    }

    pub fn read(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; len];
        self.mem
            .read_slice(&mut buf, GuestAddress(addr))
            .expect("read guest memory");
        buf
    }

    pub fn irq_status(&self) -> u32 {
        self.irq.status()
    }
}

/// An activation with this queue (and a fresh queue event).
pub fn activation(q: &VirtQueue) -> Activation {
    Activation {
        mem: q.mem.clone(),
        queues: vec![q.queue()],
        queue_evts: vec![EventFd::new(EFD_NONBLOCK).expect("eventfd")],
        irq: Arc::clone(&q.irq),
    }
}

/// Fuzz driver for the MMIO transport with a virtio-rng device behind it.
///
/// The first half of `data` (at most 64 KiB) becomes guest memory from
/// address 0, so rings and buffers hold fuzzer bytes wherever the fuzzed
/// registers point them; the rest is a list of 7-byte register accesses
/// (kind, offset, value). After each access an active device processes its
/// queue, as the event loop would.
pub fn fuzz_mmio_transport(data: &[u8]) {
    use super::mmio::MmioTransport;
    use super::rng::Rng;
    use std::sync::Mutex;

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
        super::mmio::lock(&rng).process_queue();
    }
}

/// Fuzz driver for virtio-rng's queue processing: `data` fills the
/// descriptor table and chooses the heads posted on the available ring.
pub fn fuzz_rng_queue(data: &[u8]) {
    use super::rng::Rng;
    use super::VirtioDevice;

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
    let cap = u64::from(super::rng::device::MAX_BYTES_PER_REQUEST);
    assert!(
        counters.bytes <= counters.requests * cap,
        "a request went over the cap"
    );
    assert!(
        counters.requests <= u64::from(size),
        "more requests than posted buffers"
    );
}

/// A driver-side queue at `base` in another queue's guest memory, for
/// devices with several queues (descriptor table at `base`, available ring
/// at `base + 0x4000`, used ring at `base + 0x5000`).
pub struct RingAt {
    mem: GuestMemoryMmap,
    base: u64,
    size: u16,
    next_desc: Cell<u16>,
    avail_idx: Cell<u16>,
}

impl RingAt {
    pub fn new(mem: &GuestMemoryMmap, base: u64, size: u16) -> Self {
        Self {
            mem: mem.clone(),
            base,
            size,
            next_desc: Cell::new(0),
            avail_idx: Cell::new(0),
        }
    }

    /// Posts one chain of `(address, length, device-writable)` descriptors;
    /// returns its head.
    pub fn add_chain(&self, descs: &[(u64, u32, bool)]) -> u16 {
        let head = self.next_desc.get();
        for (i, &(addr, len, write)) in descs.iter().enumerate() {
            let index = head.wrapping_add(i as u16) % self.size;
            let last = i + 1 == descs.len();
            let flags = if last { 0 } else { F_NEXT } | if write { F_WRITE } else { 0 };
            let next = if last {
                0
            } else {
                index.wrapping_add(1) % self.size
            };
            let mut raw = [0u8; 16];
            raw[0..8].copy_from_slice(&addr.to_le_bytes());
            raw[8..12].copy_from_slice(&len.to_le_bytes());
            raw[12..14].copy_from_slice(&flags.to_le_bytes());
            raw[14..16].copy_from_slice(&next.to_le_bytes());
            self.mem
                .write_slice(&raw, GuestAddress(self.base + 16 * u64::from(index)))
                .expect("descriptor in memory");
        }
        self.next_desc
            .set(head.wrapping_add(descs.len() as u16) % self.size);
        self.publish(head % self.size);
        head % self.size
    }

    /// Puts `head` on the available ring (no validation: fuzzers use it too).
    pub fn publish(&self, head: u16) {
        let idx = self.avail_idx.get();
        let slot = self.base + 0x4004 + 2 * u64::from(idx % self.size);
        self.mem
            .write_obj(head, GuestAddress(slot))
            .expect("avail ring in memory");
        self.avail_idx.set(idx.wrapping_add(1));
        self.mem
            .write_obj(idx.wrapping_add(1), GuestAddress(self.base + 0x4002))
            .expect("avail idx");
    }

    /// Writes raw bytes into the descriptor table (for fuzzing).
    pub fn write_desc_table(&self, bytes: &[u8]) {
        let len = bytes.len().min(16 * usize::from(self.size));
        self.mem
            .write_slice(&bytes[..len], GuestAddress(self.base))
            .expect("desc table");
    }

    /// Loads a [`FuzzInput`]: its table as the descriptor table, its image
    /// at [`FUZZ_IMAGE_AT`] for descriptors to point at, and every two bytes
    /// of its heads posted on the available ring.
    pub fn load_fuzz_chains(&self, input: &FuzzInput<'_>) {
        self.write_desc_table(input.table);
        self.mem
            .write_slice(input.image, GuestAddress(FUZZ_IMAGE_AT))
            .expect("image fits in guest memory");
        for head in input.heads.chunks_exact(2) {
            self.publish(u16::from_le_bytes([head[0], head[1]]));
        }
    }

    /// The device-side queue, set up and ready.
    pub fn queue(&self) -> Queue {
        let mut q = Queue::new(self.size).expect("valid queue size");
        q.set_size(self.size);
        q.set_desc_table_address(Some(self.base as u32), Some(0));
        q.set_avail_ring_address(Some((self.base + 0x4000) as u32), Some(0));
        q.set_used_ring_address(Some((self.base + 0x5000) as u32), Some(0));
        q.set_ready(true);
        q
    }

    /// The `(head, length)` entries the device put on the used ring.
    pub fn used(&self) -> Vec<(u16, u32)> {
        let idx: u16 = self
            .mem
            .read_obj(GuestAddress(self.base + 0x5002))
            .expect("used idx");
        (0..idx)
            .map(|i| {
                let at = self.base + 0x5004 + 8 * u64::from(i % self.size);
                let id: u32 = self.mem.read_obj(GuestAddress(at)).expect("used id");
                let len: u32 = self.mem.read_obj(GuestAddress(at + 4)).expect("used len");
                (id as u16, len)
            })
            .collect()
    }
}

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

/// Where a fuzz input's image goes in guest memory.
pub const FUZZ_IMAGE_AT: u64 = 0x10_000;
/// The most of a fuzz input's image copied there.
const FUZZ_IMAGE_MAX: usize = 0x80_000;

/// A queue fuzz input, split: one byte choosing the queue size (1..=256),
/// the descriptor table, two bytes per head (as many as the queue holds),
/// and the image (at most 512 KiB).
pub struct FuzzInput<'a> {
    pub size: u16,
    pub table: &'a [u8],
    pub heads: &'a [u8],
    pub image: &'a [u8],
}

impl FuzzInput<'_> {
    /// `None` for an empty input.
    pub fn split(data: &[u8]) -> Option<FuzzInput<'_>> {
        let (&size_bits, rest) = data.split_first()?;
        let size = 1u16 << (size_bits % 9);
        let (table, rest) = rest.split_at(rest.len().min(16 * usize::from(size)));
        let (heads, image) = rest.split_at(rest.len().min(2 * usize::from(size)));
        let image = &image[..image.len().min(FUZZ_IMAGE_MAX)];
        Some(FuzzInput {
            size,
            table,
            heads,
            image,
        })
    }
}

/// Fuzz driver for virtio-vsock's transmit path. `data` is: one byte
/// choosing the queue size, the descriptor table, two bytes per head posted
/// on the available ring (as many as the queue holds), and the rest, copied
/// to guest address 0x10000 for descriptors to point at. The device (guest
/// CID 3) processes the transmit queue with no receive buffers posted.
pub fn fuzz_vsock_tx(data: &[u8]) {
    use super::vsock::Vsock;
    use super::VirtioDevice;

    let Some(input) = FuzzInput::split(data) else {
        return;
    };
    let queues = VsockQueues::new(input.size);
    queues.tx.ring.load_fuzz_chains(&input);
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
        c.tx_bytes <= c.tx_packets * u64::from(super::vsock::packet::MAX_PAYLOAD),
        "a payload over the limit was accepted"
    );
    assert_eq!(c.rx_packets, 0, "no receive buffer was posted");
    assert!(
        queues.rx.used().is_empty(),
        "nothing was put on the rx used ring"
    );
}

/// The two queues of a virtio-fs device in one guest memory: hiprio is a
/// [`VirtQueue`], the request queue a [`RingAt`]. Requests and replies go
/// in buffers from [`FsQueues::BUFS`] on, reused round-robin.
pub struct FsQueues {
    pub hiprio: VirtQueue,
    pub request: RingAt,
    next_buf: Cell<u64>,
    bufs_end: u64,
}

impl FsQueues {
    pub const REQUEST_BASE: u64 = 0x100_000;
    pub const BUFS: u64 = 0x200_000;

    /// The queues in 16 MiB of guest memory.
    pub fn new(size: u16) -> Self {
        Self::with_mem_size(size, MEM_SIZE)
    }

    /// The queues in `mem_size` bytes (more than [`Self::BUFS`]).
    pub fn with_mem_size(size: u16, mem_size: usize) -> Self {
        let hiprio = VirtQueue::with_mem_size(size, mem_size);
        let request = RingAt::new(&hiprio.mem, Self::REQUEST_BASE, size);
        Self {
            hiprio,
            request,
            next_buf: Cell::new(Self::BUFS),
            bufs_end: mem_size as u64,
        }
    }

    /// An activation with the queues in virtio-fs order (hiprio, request).
    pub fn activation(&self) -> Activation {
        Activation {
            mem: self.hiprio.mem.clone(),
            queues: vec![self.hiprio.queue(), self.request.queue()],
            queue_evts: (0..2)
                .map(|_| EventFd::new(EFD_NONBLOCK).expect("eventfd"))
                .collect(),
            irq: Arc::clone(&self.hiprio.irq),
        }
    }

    /// A buffer of `len` bytes in guest memory.
    pub fn alloc(&self, len: u32) -> u64 {
        let size = u64::from(len).div_ceil(0x1000).max(1) * 0x1000;
        let mut at = self.next_buf.get();
        if at + size > self.bufs_end {
            at = Self::BUFS;
        }
        self.next_buf.set(at + size);
        at
    }

    /// Posts `request` in one device-readable descriptor and a
    /// `reply_len`-byte device-writable one on the request queue. Returns
    /// the chain's head and where the reply goes.
    pub fn post(&self, request: &[u8], reply_len: u32) -> (u16, u64) {
        let req = self.alloc(request.len() as u32);
        self.hiprio
            .mem
            .write_slice(request, GuestAddress(req))
            .expect("request in memory");
        let reply = self.alloc(reply_len);
        self.hiprio
            .mem
            .write_slice(&vec![0u8; reply_len as usize], GuestAddress(reply))
            .expect("reply buffer in memory");
        let head = self
            .request
            .add_chain(&[(req, request.len() as u32, false), (reply, reply_len, true)]);
        (head, reply)
    }

    /// The bytes the device wrote for the chain `head` (the last used-ring
    /// entry for it), or None if it has not returned the chain.
    pub fn reply(&self, head: u16, reply_addr: u64) -> Option<Vec<u8>> {
        let (_, len) = self
            .request
            .used()
            .into_iter()
            .rev()
            .find(|(id, _)| *id == head)?;
        Some(self.hiprio.read(reply_addr, len as usize))
    }
}

/// A scratch tree for the virtio-fs fuzz driver: `share/` (served) beside
/// `outside/secret` (which must never reach guest memory), on a private
/// 16 MiB tmpfs when the process may make one (never attached anywhere: it
/// is reached through its fd, and vanishes with the process), else in a
/// temporary directory.
#[cfg(any(test, feature = "test-utils"))]
fn fuzz_fs_tree() -> Option<&'static std::path::Path> {
    use std::sync::OnceLock;
    static TREE: OnceLock<Option<std::path::PathBuf>> = OnceLock::new();
    TREE.get_or_init(|| {
        let base = super::fs::test_client::scratch_tmpfs().unwrap_or_else(|| {
            let dir = std::env::temp_dir().join(format!("vessel-fuzz-fs-{}", std::process::id()));
            let _ = std::fs::create_dir_all(&dir);
            dir
        });
        super::fs::test_client::populate(&base).ok()?;
        Some(base.join("share"))
    })
    .as_deref()
}

/// Fuzz driver for virtio-fs's queues. `data` is: one byte choosing the
/// queue size, the request queue's descriptor table, two bytes per head
/// posted on its available ring (as many as the queue holds), and the rest,
/// the image, copied to guest address 0x10000 for descriptors to point at.
/// The image is also cut into FUSE requests (each as long as its header's
/// `len` says) posted as well-formed chains on the hiprio queue, which is
/// served first, so the fuzzer reaches deep into FUSE too. A passthrough
/// file system over a scratch share (made once per process) gets a
/// FUSE_INIT first. The secret beside the share must never appear in guest
/// memory.
pub fn fuzz_fs_queue(data: &[u8]) {
    use super::fs::{self, test_client, CacheMode, FsServer};
    use super::VirtioDevice;

    let Some(share) = fuzz_fs_tree() else {
        return;
    };
    let Some(input) = FuzzInput::split(data) else {
        return;
    };
    let (size, image) = (input.size, input.image);
    const FUZZ_MEM: usize = 4 << 20;
    let queues = FsQueues::with_mem_size(size, FUZZ_MEM);
    if test_client::contains_secret(image) {
        return;
    }
    let Ok(server) = FsServer::new(share, CacheMode::Auto, true) else {
        return;
    };
    let Ok((mut dev, mut worker)) = fs::device::new("fuzz", server) else {
        return;
    };
    if dev.activate(queues.activation()).is_err() {
        return;
    }
    // FUSE_INIT through the request queue, then the fuzzer's chains.
    let init = test_client::init_request(1);
    let (head, reply) = queues.post(&init, 4096);
    worker.process_queues();
    if queues.reply(head, reply).is_none() {
        return;
    }
    queues.request.load_fuzz_chains(&input);
    const HEADER: usize = 40;
    let mut at = 0;
    for _ in 0..usize::from(size / 2).min(16) {
        if at + HEADER > image.len() {
            break;
        }
        let len = u32::from_le_bytes([image[at], image[at + 1], image[at + 2], image[at + 3]]);
        let len = (len as usize).clamp(HEADER, image.len() - at);
        let reply = queues.alloc(64 << 10);
        queues.hiprio.add_chain(&[
            (FUZZ_IMAGE_AT + at as u64, len as u32, false),
            (reply, 64 << 10, true),
        ]);
        at += len;
    }
    let snapshot = || {
        let mut mem = vec![0u8; FUZZ_MEM];
        queues
            .hiprio
            .mem
            .read_slice(&mut mem, GuestAddress(0))
            .expect("read guest memory");
        mem
    };
    let before = snapshot();
    worker.process_queues();
    // Reply buffers may overlap the rings (the guest's choice), so more
    // chains than posted can come up; the worker still yields after its
    // budget per queue.
    let c = worker.counters();
    let budget = 2 * fs::device::MAX_REQUESTS_PER_EVENT as u64;
    assert!(
        c.requests + c.failed_requests + c.refused <= budget + 1,
        "the worker did not yield"
    );
    // Only what the device wrote can hold the secret: scan the pages that
    // changed, with a margin for a secret across a page boundary.
    let after = snapshot();
    const PAGE: usize = 4096;
    for (i, (old, new)) in before.chunks(PAGE).zip(after.chunks(PAGE)).enumerate() {
        if old != new {
            let start = (i * PAGE).saturating_sub(64);
            let end = ((i + 1) * PAGE + 64).min(after.len());
            assert!(
                !test_client::contains_secret(&after[start..end]),
                "a file outside the share reached guest memory"
            );
        }
    }
}

#[cfg(test)]
mod fuzz_seeds {
    /// The fuzz drivers on a few fixed inputs, so plain `cargo test` covers them.
    #[test]
    fn fuzz_drivers_survive_seed_inputs() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for len in [0usize, 1, 7, 64, 300, 4096, 20_000] {
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            super::fuzz_mmio_transport(&data);
            super::fuzz_rng_queue(&data);
            super::fuzz_vsock_tx(&data);
            super::fuzz_fs_queue(&data);
        }
    }
}

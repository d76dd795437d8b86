//! Driver-side virtqueues in test guest memory, shared by the device unit
//! tests and fuzz drivers of every virtio device: a split virtqueue laid
//! out the way a driver would ([`VirtQueue`] in guest memory of its own,
//! [`RingAt`] for a device's further queues in the same memory), and a queue
//! fuzz input split into descriptor table, heads and image ([`FuzzInput`]).
//!
//! What only one device needs is in that device's `test_utils` (its queue
//! set, its activation and its fuzz driver); the transport's fuzz driver is
//! in [`super::mmio::test_utils`].

use std::cell::Cell;
use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::IrqTrigger;

const DESC_TABLE: u64 = 0x1000;
/// The guest memory of a [`VirtQueue::new`]: 16 MiB.
pub const MEM_SIZE: usize = 16 << 20;
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

    /// Loads a [`FuzzInput`] into this queue (see [`RingAt::load_fuzz_chains`]).
    pub fn load_fuzz_chains(&self, input: &FuzzInput<'_>) {
        self.ring.load_fuzz_chains(input);
    }
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

#[cfg(test)]
mod fuzz_seeds {
    use super::super::{fs, mmio, rng, vsock};

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
            mmio::test_utils::fuzz_mmio_transport(&data);
            rng::test_utils::fuzz_rng_queue(&data);
            vsock::test_utils::fuzz_vsock_tx(&data);
            fs::test_utils::fuzz_fs_queue(&data);
        }
    }
}

/// Fuzz driver for a device's config space: `data` is a list of 4-byte
/// accesses (kind, offset low, offset high, value); the kind's low bit
/// chooses read or write, its next two bits the width (1, 2, 4 or 8
/// bytes). Reads anywhere never fail, and the config space is read-only:
/// what the guest reads at the end is what it read at the start.
pub fn fuzz_config_space(device: &mut dyn super::VirtioDevice, data: &[u8]) {
    const SEEN: usize = 512;
    let mut before = [0u8; SEEN];
    device.read_config(0, &mut before);
    for op in data.chunks_exact(4) {
        let offset = u64::from(u16::from_le_bytes([op[1], op[2]]));
        let len = [1usize, 2, 4, 8][usize::from(op[0] >> 1) & 3];
        let mut bytes = [op[3]; 8];
        if op[0] & 1 == 0 {
            device.read_config(offset, &mut bytes[..len]);
        } else {
            device.write_config(offset, &bytes[..len]);
        }
    }
    // Far past the end, and the offset's overflow.
    let mut far = [0xaau8; 8];
    device.read_config(u64::MAX - 3, &mut far);
    assert_eq!(far, [0; 8], "a read past the config space was not zeros");
    let mut after = [0u8; SEEN];
    device.read_config(0, &mut after);
    assert_eq!(before, after, "the guest changed a read-only config space");
}

#[cfg(test)]
mod config_space_tests {
    #[test]
    fn seed_inputs_leave_the_config_spaces_as_they_were() {
        let seeds: [&[u8]; 4] = [
            &[],
            &[1, 0, 0, 0xff, 7, 8, 0, 0xee],
            &[0, 0xff, 0xff, 0, 6, 0xfe, 0xff, 0],
            &[3; 64],
        ];
        for seed in seeds {
            crate::devices::virtio::vsock::test_utils::fuzz_vsock_config(seed);
            crate::devices::virtio::fs::test_utils::fuzz_fs_config(seed);
        }
    }
}

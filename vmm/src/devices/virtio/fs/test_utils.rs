//! virtio-fs's test helpers, for its unit tests, the FUSE test client
//! ([`super::test_client`]) and its fuzz target: its two queues in one
//! guest memory with buffers for requests and replies, and the fuzz driver
//! of its queues.

use std::cell::Cell;
use std::sync::Arc;

use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::{device, test_client, CacheMode, FsServer};
use crate::devices::virtio::test_utils::{FuzzInput, RingAt, VirtQueue, FUZZ_IMAGE_AT, MEM_SIZE};
use crate::devices::virtio::{Activation, VirtioDevice};

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
fn fuzz_fs_tree() -> Option<&'static std::path::Path> {
    use std::sync::OnceLock;
    static TREE: OnceLock<Option<std::path::PathBuf>> = OnceLock::new();
    TREE.get_or_init(|| {
        let base = test_client::scratch_tmpfs().unwrap_or_else(|| {
            let dir = std::env::temp_dir().join(format!("vessel-fuzz-fs-{}", std::process::id()));
            let _ = std::fs::create_dir_all(&dir);
            dir
        });
        test_client::populate(&base).ok()?;
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
    let Ok((mut dev, mut worker)) = device::new("fuzz", server) else {
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
    let budget = 2 * device::MAX_REQUESTS_PER_EVENT as u64;
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

/// Fuzz driver for virtio-fs's config space (its tag and queue count), see
/// [`fuzz_config_space`](crate::devices::virtio::test_utils::fuzz_config_space).
pub fn fuzz_fs_config(data: &[u8]) {
    let Some(share) = fuzz_fs_tree() else {
        return;
    };
    let Ok(server) = FsServer::new(share, CacheMode::Auto, true) else {
        return;
    };
    let Ok((mut dev, _worker)) = device::new("fuzz", server) else {
        return;
    };
    crate::devices::virtio::test_utils::fuzz_config_space(&mut dev, data);
    let mut tag = [0u8; 4];
    dev.read_config(0, &mut tag);
    assert_eq!(&tag, b"fuzz");
}

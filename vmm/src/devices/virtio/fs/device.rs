//! The virtio-fs device model: [`Fs`] for the transport, [`FsWorker`] for
//! its own event loop.

use std::sync::{Arc, Mutex, MutexGuard};

use tracing::warn;
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::counters::FsCounters;
use super::server::FsServer;
use super::FsError;
use crate::devices::virtio::{
    device_type, notify_used, queue_snapshots, ActivateError, Activation, DeviceKind, DeviceState,
    IrqTrigger, VirtioDevice,
};

/// Size of each queue.
pub const QUEUE_SIZE: u16 = 256;
/// hiprio and one request queue.
pub const NUM_QUEUES: usize = 2;
/// The queue of FORGET and INTERRUPT.
pub const HIPRIO_QUEUE: usize = 0;
/// The (only) request queue.
pub const REQUEST_QUEUE: usize = 1;
/// The most requests served per queue event before the worker yields
/// (after re-signalling the queue, so the rest is served next): a guest
/// whose reply buffers overlap its own available ring cannot keep the
/// worker in one call forever, and hiprio gets its turn.
pub const MAX_REQUESTS_PER_EVENT: usize = 2 * QUEUE_SIZE as usize;
/// Bytes of the tag in config space.
pub const TAG_LEN: usize = 36;
/// `struct virtio_fs_config`: the tag, then `le32 num_request_queues`.
pub const CONFIG_LEN: usize = TAG_LEN + 4;

/// The queues while the driver has the device active.
pub(super) struct Active {
    pub(super) mem: GuestMemoryMmap,
    pub(super) queues: Vec<Queue>,
    pub(super) queue_evts: Vec<EventFd>,
    pub(super) irq: Arc<IrqTrigger>,
}

/// What the transport half and the worker share.
type SharedActive = Arc<Mutex<Option<Active>>>;

fn lock(active: &SharedActive) -> MutexGuard<'_, Option<Active>> {
    active.lock().unwrap_or_else(|e| e.into_inner())
}

/// The virtio-fs device as the MMIO transport sees it: config space,
/// features, activation. Holds no file-system state, so the vCPUs never
/// wait on file I/O to read a register.
pub struct Fs {
    tag: String,
    config: [u8; CONFIG_LEN],
    acked_features: u64,
    active: SharedActive,
    /// Tells the worker's event loop that `active` changed.
    activate_evt: EventFd,
}

/// The half that serves requests, in the fs thread's event loop.
pub struct FsWorker {
    pub(super) active: SharedActive,
    pub(super) activate_evt: EventFd,
    pub(super) server: FsServer,
    pub(super) counters: FsCounters,
    /// The queue events as the event loop watches them, while active.
    pub(super) registered_queue_evts: Vec<EventFd>,
}

/// Builds the two halves of a virtio-fs device whose mount tag is `tag`.
pub fn new(tag: &str, server: FsServer) -> Result<(Fs, FsWorker), FsError> {
    let config = config_space(tag)?;
    let activate_evt = EventFd::new(EFD_NONBLOCK).map_err(FsError::CreateEvent)?;
    let worker_evt = activate_evt.try_clone().map_err(FsError::CreateEvent)?;
    let active = Arc::new(Mutex::new(None));
    let fs = Fs {
        tag: tag.to_owned(),
        config,
        acked_features: 0,
        active: Arc::clone(&active),
        activate_evt,
    };
    let worker = FsWorker {
        active,
        activate_evt: worker_evt,
        server,
        counters: FsCounters::default(),
        registered_queue_evts: Vec::new(),
    };
    Ok((fs, worker))
}

/// Checks a tag: 1 to 36 bytes, no NUL.
pub fn check_tag(tag: &str) -> Result<(), FsError> {
    if tag.is_empty() || tag.len() > TAG_LEN || tag.contains('\0') {
        return Err(FsError::InvalidTag(tag.to_string()));
    }
    Ok(())
}

fn config_space(tag: &str) -> Result<[u8; CONFIG_LEN], FsError> {
    check_tag(tag)?;
    let mut config = [0u8; CONFIG_LEN];
    config[..tag.len()].copy_from_slice(tag.as_bytes());
    config[TAG_LEN..].copy_from_slice(&1u32.to_le_bytes());
    Ok(config)
}

impl Fs {
    pub fn is_active(&self) -> bool {
        lock(&self.active).is_some()
    }

    /// Whether the guest ever posted a request: a FUSE session (INIT, the
    /// inodes and handles fuse-backend-rs hands out) exists only after
    /// one. Unreadable rings count as used.
    fn guest_posted(active: &Active) -> bool {
        active.queues.iter().any(|q| {
            q.next_avail() != 0
                || q.avail_idx(&active.mem, std::sync::atomic::Ordering::Acquire)
                    .map_or(true, |idx| idx.0 != 0)
        })
    }

    fn signal_worker(&self) -> std::io::Result<()> {
        self.activate_evt.write(1)
    }
}

impl FsWorker {
    pub fn counters(&self) -> FsCounters {
        self.counters
    }

    /// The FUSE server, for tests.
    pub fn server(&self) -> &FsServer {
        &self.server
    }

    /// Serves both queues until they are empty.
    pub fn process_queues(&mut self) {
        self.process_queue(HIPRIO_QUEUE);
        self.process_queue(REQUEST_QUEUE);
    }

    /// Serves every request on queue `index`, one at a time; the shared
    /// lock is taken per request so a reset never waits for a whole queue.
    pub fn process_queue(&mut self, index: usize) {
        let mut used_any = false;
        for served in 0.. {
            let mut guard = lock(&self.active);
            let Some(active) = guard.as_mut() else {
                return;
            };
            let Some(queue) = active.queues.get_mut(index) else {
                return;
            };
            if served == MAX_REQUESTS_PER_EVENT {
                if let Some(Err(err)) = active.queue_evts.get(index).map(|e| e.write(1)) {
                    self.counters.event_failures += 1;
                    warn!(%err, "virtio-fs: re-signal a busy queue");
                }
                break;
            }
            let Some(chain) = queue.pop_descriptor_chain(&active.mem) else {
                break;
            };
            let head = chain.head_index();
            let len = self
                .server
                .handle_chain(&active.mem, chain, &mut self.counters);
            if let Err(err) = queue.add_used(&active.mem, head, len) {
                self.counters.event_failures += 1;
                warn!(head, %err, "virtio-fs: return a buffer");
                continue;
            }
            used_any = true;
        }
        if used_any {
            self.notify(index);
        }
    }

    /// Interrupts the guest if the driver wants to hear about `index`.
    fn notify(&mut self, index: usize) {
        let mut guard = lock(&self.active);
        let Some(active) = guard.as_mut() else {
            return;
        };
        let Some(queue) = active.queues.get_mut(index) else {
            return;
        };
        let failures = &mut self.counters.event_failures;
        notify_used(queue, &active.mem, &active.irq, failures, "virtio-fs");
    }
}

impl VirtioDevice for Fs {
    fn device_type(&self) -> u32 {
        device_type::FS
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE; NUM_QUEUES]
    }

    fn avail_features(&self) -> u64 {
        0 // no notification queue; the transport adds VERSION_1
    }

    fn set_acked_features(&mut self, features: u64) {
        self.acked_features = features;
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = usize::try_from(offset)
                .ok()
                .and_then(|o| o.checked_add(i))
                .and_then(|at| self.config.get(at).copied())
                .unwrap_or(0);
        }
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        warn!(
            offset,
            len = data.len(),
            "virtio-fs: the config space is read-only"
        );
    }

    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError> {
        activation.check_queue_count(NUM_QUEUES)?;
        {
            let mut active = lock(&self.active);
            if active.is_some() {
                return Err(ActivateError::AlreadyActive);
            }
            let Activation {
                mem,
                queues,
                queue_evts,
                irq,
            } = activation;
            *active = Some(Active {
                mem,
                queues,
                queue_evts,
                irq,
            });
        }
        self.signal_worker().map_err(ActivateError::SignalActivate)
    }

    /// Only a share the guest has not mounted: the FUSE session's inode
    /// and handle tables live in this process and the guest's kernel
    /// refers to them, so a mounted share cannot move to another process.
    /// Before the mount, the device is its tag and its queues; the
    /// restoring host names the directory.
    fn save_state(&self) -> Result<DeviceState, &'static str> {
        let active = lock(&self.active);
        if active.as_ref().is_some_and(Self::guest_posted) {
            return Err("the guest has mounted the virtio-fs share \
                 (a share can be snapshotted only before its first request)");
        }
        Ok(DeviceState {
            kind: DeviceKind::Fs {
                tag: self.tag.clone(),
            },
            acked_features: self.acked_features,
            active_queues: active.as_ref().map(|a| queue_snapshots(&a.queues)),
        })
    }

    fn reset(&mut self) {
        // Waits for a request being served to finish.
        *lock(&self.active) = None;
        self.acked_features = 0;
        if let Err(err) = self.signal_worker() {
            warn!(%err, "virtio-fs: signal reset to the worker");
        }
    }
}

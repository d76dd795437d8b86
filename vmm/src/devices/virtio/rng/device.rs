//! The virtio-rng device model.

use std::sync::Arc;

use tracing::warn;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Address, Bytes, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::devices::virtio::{
    device_type, notify_used, queue_snapshots, ActivateError, Activation, DeviceKind, DeviceState,
    IrqTrigger, VirtioDevice,
};

/// Size of the request queue.
pub const QUEUE_SIZE: u16 = 256;
/// The most entropy one request gets, whatever its buffers' total length.
pub const MAX_BYTES_PER_REQUEST: u32 = 64 * 1024;

/// Errors of the virtio-rng device.
#[derive(Debug, thiserror::Error)]
pub enum RngError {
    #[error("create the activate event")]
    CreateActivateEvent(#[source] std::io::Error),
    #[error("read host entropy")]
    ReadEntropy(#[source] std::io::Error),
}

/// What the device has done, for logs and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RngCounters {
    /// Requests completed.
    pub requests: u64,
    /// Entropy bytes written to the guest.
    pub bytes: u64,
    /// Descriptors skipped: read-only, or outside guest memory.
    pub bad_descriptors: u64,
    /// Failures of the event loop or of returning buffers.
    pub event_failures: u64,
}

pub(super) struct Active {
    pub(super) mem: GuestMemoryMmap,
    pub(super) queue: Queue,
    pub(super) queue_evt: EventFd,
    pub(super) irq: Arc<IrqTrigger>,
}

/// A virtio entropy device.
pub struct Rng {
    acked_features: u64,
    pub(super) active: Option<Active>,
    /// Tells the event loop that `active` changed.
    pub(super) activate_evt: EventFd,
    pub(super) counters: RngCounters,
    /// The queue event as the event loop watches it, while active.
    pub(super) registered_queue_evt: Option<EventFd>,
}

impl Rng {
    pub fn new() -> Result<Self, RngError> {
        Ok(Self {
            acked_features: 0,
            active: None,
            activate_evt: EventFd::new(EFD_NONBLOCK).map_err(RngError::CreateActivateEvent)?,
            counters: RngCounters::default(),
            registered_queue_evt: None,
        })
    }

    pub fn counters(&self) -> RngCounters {
        self.counters
    }

    pub fn is_active(&self) -> bool {
        self.active.is_some()
    }

    /// Fills every available buffer and returns it to the guest.
    pub fn process_queue(&mut self) {
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let counters = &mut self.counters;
        let mut used_any = false;
        while let Some(chain) = active.queue.pop_descriptor_chain(&active.mem) {
            let head = chain.head_index();
            let mut written = 0u32;
            for desc in chain {
                if !desc.is_write_only() {
                    counters.bad_descriptors += 1;
                    continue;
                }
                let len = desc.len().min(MAX_BYTES_PER_REQUEST - written);
                match fill_random(&active.mem, desc.addr(), len) {
                    Ok(()) => written += len,
                    Err(err) => {
                        counters.bad_descriptors += 1;
                        warn!(addr = desc.addr().0, len, %err, "virtio-rng: skip a descriptor");
                    }
                }
                if written == MAX_BYTES_PER_REQUEST {
                    break;
                }
            }
            if let Err(err) = active.queue.add_used(&active.mem, head, written) {
                counters.event_failures += 1;
                warn!(head, %err, "virtio-rng: return a buffer");
                continue;
            }
            counters.requests += 1;
            counters.bytes += u64::from(written);
            used_any = true;
        }
        if !used_any {
            return;
        }
        let failures = &mut counters.event_failures;
        notify_used(
            &mut active.queue,
            &active.mem,
            &active.irq,
            failures,
            "virtio-rng",
        );
    }

    fn signal_event_loop(&mut self) -> std::io::Result<()> {
        self.activate_evt.write(1)
    }
}

/// Writes `len` bytes of host entropy at `addr`.
fn fill_random(
    mem: &GuestMemoryMmap,
    addr: vm_memory::GuestAddress,
    len: u32,
) -> Result<(), RngError> {
    let mut buf = [0u8; 4096];
    let mut done = 0usize;
    while done < len as usize {
        let chunk = (len as usize - done).min(buf.len());
        getrandom(&mut buf[..chunk]).map_err(RngError::ReadEntropy)?;
        let at = addr.checked_add(done as u64).ok_or_else(|| {
            RngError::ReadEntropy(std::io::Error::other("descriptor wraps the address space"))
        })?;
        mem.write_slice(&buf[..chunk], at)
            .map_err(|e| RngError::ReadEntropy(std::io::Error::other(e.to_string())))?;
        done += chunk;
    }
    Ok(())
}

fn getrandom(buf: &mut [u8]) -> std::io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: rest is a valid, writable buffer of rest.len() bytes.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        filled += n as usize;
    }
    Ok(())
}

impl VirtioDevice for Rng {
    fn device_type(&self) -> u32 {
        device_type::RNG
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn avail_features(&self) -> u64 {
        0
    }

    fn set_acked_features(&mut self, features: u64) {
        self.acked_features = features;
    }

    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0); // virtio-rng has no configuration space
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        warn!(
            offset,
            len = data.len(),
            "virtio-rng: write to a config space it does not have"
        );
    }

    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError> {
        if self.active.is_some() {
            return Err(ActivateError::AlreadyActive);
        }
        activation.check_queue_count(1)?;
        let Activation {
            mem,
            mut queues,
            mut queue_evts,
            irq,
        } = activation;
        let (Some(queue), Some(queue_evt)) = (queues.pop(), queue_evts.pop()) else {
            return Err(ActivateError::QueueCount {
                expected: 1,
                got: 0,
            });
        };
        self.active = Some(Active {
            mem,
            queue,
            queue_evt,
            irq,
        });
        self.signal_event_loop()
            .map_err(ActivateError::SignalActivate)
    }

    fn reset(&mut self) {
        self.active = None;
        self.acked_features = 0;
        if let Err(err) = self.signal_event_loop() {
            warn!(%err, "virtio-rng: signal reset to the event loop");
        }
    }

    fn save_state(&self) -> Result<DeviceState, &'static str> {
        Ok(DeviceState {
            kind: DeviceKind::Rng,
            acked_features: self.acked_features,
            active_queues: self
                .active
                .as_ref()
                .map(|a| queue_snapshots(std::slice::from_ref(&a.queue))),
        })
    }
}

impl From<RngError> for std::io::Error {
    fn from(err: RngError) -> Self {
        match err {
            RngError::CreateActivateEvent(e) | RngError::ReadEntropy(e) => e,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::rng::test_utils::activation;
    use crate::devices::virtio::test_utils::VirtQueue;

    fn active_rng(q: &VirtQueue) -> Rng {
        let mut rng = Rng::new().unwrap();
        rng.activate(activation(q)).unwrap();
        assert_eq!(
            rng.activate_evt.read().unwrap(),
            1,
            "the event loop was told"
        );
        rng
    }

    #[test]
    fn fills_write_only_buffers_and_interrupts() {
        let q = VirtQueue::new(16);
        q.add_chain(&[(0x10_000, 64, true), (0x11_000, 32, true)]);
        let mut rng = active_rng(&q);
        rng.process_queue();
        assert_eq!(q.used(), vec![(0, 96)]);
        assert_ne!(q.read(0x10_000, 64), vec![0; 64], "entropy was written");
        assert_eq!(rng.counters().requests, 1);
        assert_eq!(rng.counters().bytes, 96);
        assert_eq!(q.irq_status(), crate::devices::virtio::interrupt::VRING);
    }

    #[test]
    fn read_only_and_out_of_memory_descriptors_are_skipped() {
        let q = VirtQueue::new(16);
        q.add_chain(&[
            (0x10_000, 16, false),
            (0xffff_f000, 16, true),
            (0x12_000, 8, true),
        ]);
        let mut rng = active_rng(&q);
        rng.process_queue();
        assert_eq!(q.used(), vec![(0, 8)]);
        assert_eq!(rng.counters().bad_descriptors, 2);
        assert_eq!(
            q.read(0x10_000, 16),
            vec![0; 16],
            "a read-only buffer is not written"
        );
    }

    #[test]
    fn a_request_is_capped() {
        let q = VirtQueue::new(16);
        q.add_chain(&[
            (0x20_000, MAX_BYTES_PER_REQUEST, true),
            (0x40_000, 4096, true),
        ]);
        let mut rng = active_rng(&q);
        rng.process_queue();
        assert_eq!(q.used(), vec![(0, MAX_BYTES_PER_REQUEST)]);
        assert_eq!(q.read(0x40_000, 16), vec![0; 16]);
    }

    #[test]
    fn nothing_happens_before_activation_or_after_reset() {
        let mut rng = Rng::new().unwrap();
        rng.process_queue();
        let q = VirtQueue::new(16);
        q.add_chain(&[(0x10_000, 8, true)]);
        let mut rng = active_rng(&q);
        rng.reset();
        assert!(!rng.is_active());
        rng.process_queue();
        assert!(q.used().is_empty());
        assert!(matches!(rng.activate(activation(&q)), Ok(())));
    }

    #[test]
    fn activation_needs_exactly_one_queue() {
        let q = VirtQueue::new(16);
        let mut act = activation(&q);
        act.queues.push(q.queue());
        let mut rng = Rng::new().unwrap();
        assert!(matches!(
            rng.activate(act),
            Err(ActivateError::QueueCount { .. })
        ));
    }
}

//! The virtio-vsock device model: queues, config space and packet pumping.

use std::collections::HashMap;
use std::num::Wrapping;
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use event_manager::EventSet;
use tracing::warn;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use vmm_sys_util::timerfd::TimerFd;

use super::muxer::{Muxer, VsockCounters};
use super::packet::{self, HDR_SIZE, MAX_PAYLOAD};
use crate::devices::virtio::{
    device_type, notify_used, queue_snapshots, ActivateError, Activation, DeviceKind, DeviceState,
    IrqTrigger, VirtioDevice,
};

/// Size of each queue.
pub const QUEUE_SIZE: u16 = 256;
/// Queue indexes.
pub const RX_QUEUE: usize = 0;
pub const TX_QUEUE: usize = 1;
pub const EVENT_QUEUE: usize = 2;
const NUM_QUEUES: usize = 3;
/// `VIRTIO_VSOCK_EVENT_TRANSPORT_RESET`.
pub const EVENT_TRANSPORT_RESET: u32 = 0;
/// How long host clients wait for a restored guest to take its
/// TRANSPORT_RESET before they are served anyway.
pub const RESET_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors of creating the device.
#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    #[error("create an event fd")]
    CreateEvent(#[source] std::io::Error),
    #[error("listen on {path:?}")]
    Listen {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl From<VsockError> for std::io::Error {
    fn from(err: VsockError) -> Self {
        match err {
            VsockError::CreateEvent(e) | VsockError::Listen { source: e, .. } => e,
        }
    }
}

/// A TRANSPORT_RESET the guest has not taken yet. The guest handles it in
/// a work item, resetting every connected socket, then posts the event
/// buffer again: until its available index moves, a host connection would
/// be reset with the old ones, so the listener is not served.
pub(super) struct ResetWait {
    /// The event queue's available index when the reset was sent.
    avail_idx: Wrapping<u16>,
    deadline: Instant,
}

pub(super) struct Active {
    pub(super) mem: GuestMemoryMmap,
    pub(super) queues: Vec<Queue>,
    pub(super) queue_evts: Vec<EventFd>,
    pub(super) irq: Arc<IrqTrigger>,
}

/// A virtio-vsock device backed by unix sockets on the host.
pub struct Vsock {
    guest_cid: u64,
    acked_features: u64,
    pub(super) active: Option<Active>,
    /// Tells the event loop that `active` changed.
    pub(super) activate_evt: EventFd,
    pub(super) muxer: Muxer,
    /// The queue events as the event loop watches them, while active.
    pub(super) registered_queue_evts: Vec<EventFd>,
    /// Host fds the event loop watches, and for what.
    pub(super) registered_host: HashMap<RawFd, EventSet>,
    /// Fires at the muxer's next deadline.
    pub(super) timer: TimerFd,
    pub(super) timer_armed_for: Option<Instant>,
    pub(super) reset_wait: Option<ResetWait>,
}

impl Vsock {
    /// A device for guest `guest_cid`, listening for host clients on `uds_path`.
    pub fn new(guest_cid: u64, uds_path: &Path) -> Result<Self, VsockError> {
        let muxer = Muxer::new(guest_cid, uds_path).map_err(|source| VsockError::Listen {
            path: uds_path.to_path_buf(),
            source,
        })?;
        let timer = TimerFd::new().map_err(|e| VsockError::CreateEvent(e.into()))?;
        // SAFETY: fcntl on a file descriptor the TimerFd owns; no memory is passed.
        let rc = unsafe { libc::fcntl(timer.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
        if rc < 0 {
            return Err(VsockError::CreateEvent(std::io::Error::last_os_error()));
        }
        Ok(Self {
            guest_cid,
            acked_features: 0,
            active: None,
            activate_evt: EventFd::new(EFD_NONBLOCK).map_err(VsockError::CreateEvent)?,
            muxer,
            registered_queue_evts: Vec::new(),
            registered_host: HashMap::new(),
            timer,
            timer_armed_for: None,
            reset_wait: None,
        })
    }

    pub fn guest_cid(&self) -> u64 {
        self.guest_cid
    }

    pub fn counters(&self) -> VsockCounters {
        self.muxer.counters
    }

    pub fn is_active(&self) -> bool {
        self.active.is_some()
    }

    /// Connections being set up or proxied.
    pub fn connection_count(&self) -> usize {
        self.muxer.connection_count()
    }

    /// Moves packets both ways until neither queue can make progress.
    pub fn process_queues(&mut self) {
        // Transmit stalls while control replies wait for receive buffers;
        // sending them may let it go on.
        for _ in 0..4 {
            let stalled = self.process_tx();
            self.process_rx();
            if !stalled || self.muxer.ctrl_backlogged() {
                break;
            }
        }
    }

    /// Takes the guest's packets off the transmit queue. Returns true if it
    /// stopped because replies are backlogged.
    pub fn process_tx(&mut self) -> bool {
        let Some(active) = self.active.as_mut() else {
            return false;
        };
        let muxer = &mut self.muxer;
        let mut used_any = false;
        let mut stalled = false;
        loop {
            if muxer.ctrl_backlogged() {
                stalled = true;
                break;
            }
            let Some(chain) = active.queues[TX_QUEUE].pop_descriptor_chain(&active.mem) else {
                break;
            };
            let head = chain.head_index();
            muxer.counters.tx_chains += 1;
            let parsed = packet::read_tx_chain(chain, &active.mem).and_then(|bytes| {
                let (hdr, payload) = packet::parse_tx(&bytes, self.guest_cid)?;
                Ok((hdr, payload.to_vec()))
            });
            match parsed {
                Ok((hdr, payload)) => {
                    muxer.counters.tx_packets += 1;
                    muxer.handle_guest_packet(&hdr, &payload);
                }
                Err(err) => {
                    muxer.counters.bad_packets += 1;
                    warn!(head, %err, "virtio-vsock: drop a packet from the guest");
                }
            }
            if let Err(err) = active.queues[TX_QUEUE].add_used(&active.mem, head, 0) {
                muxer.counters.event_failures += 1;
                warn!(head, %err, "virtio-vsock: return a transmit buffer");
                continue;
            }
            used_any = true;
        }
        if used_any {
            notify(active, TX_QUEUE, &mut muxer.counters);
        }
        stalled
    }

    /// Fills the guest's receive buffers with whatever the host side has.
    pub fn process_rx(&mut self) {
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let muxer = &mut self.muxer;
        let mut used_any = false;
        while muxer.has_rx() {
            let queue = &mut active.queues[RX_QUEUE];
            let Some(chain) = queue.pop_descriptor_chain(&active.mem) else {
                break;
            };
            let head = chain.head_index();
            let segs = packet::rx_segments(chain, &active.mem).and_then(|segs| {
                match packet::capacity(&segs) {
                    cap if cap < HDR_SIZE as u64 => Err(packet::PacketError::SmallRxBuffer(cap)),
                    _ => Ok(segs),
                }
            });
            let used_len = match segs {
                Err(err) => {
                    muxer.counters.bad_rx_buffers += 1;
                    warn!(head, %err, "virtio-vsock: return a receive buffer unused");
                    0
                }
                Ok(segs) => {
                    let room = packet::capacity(&segs) - HDR_SIZE as u64;
                    let room = room.min(u64::from(MAX_PAYLOAD)) as u32;
                    let Some((hdr, payload)) = muxer.next_rx(room) else {
                        // Nothing to send after all: leave the buffer posted.
                        queue.go_to_previous_position();
                        break;
                    };
                    match packet::write_rx(&active.mem, &segs, &[&hdr.to_bytes(), &payload]) {
                        Ok(n) => {
                            muxer.counters.rx_packets += 1;
                            n
                        }
                        Err(err) => {
                            muxer.counters.bad_rx_buffers += 1;
                            warn!(head, %err, "virtio-vsock: write a receive buffer");
                            0
                        }
                    }
                }
            };
            if let Err(err) = active.queues[RX_QUEUE].add_used(&active.mem, head, used_len) {
                muxer.counters.event_failures += 1;
                warn!(head, %err, "virtio-vsock: return a receive buffer");
                continue;
            }
            used_any = true;
        }
        if used_any {
            notify(active, RX_QUEUE, &mut muxer.counters);
        }
    }

    /// Posts a TRANSPORT_RESET event (after a snapshot restore the guest must
    /// drop its connections). Returns false if the guest posted no event
    /// buffer or the device is not active.
    pub fn send_transport_reset(&mut self) -> bool {
        let Some(active) = self.active.as_mut() else {
            return false;
        };
        let queue = &mut active.queues[EVENT_QUEUE];
        let Some(chain) = queue.pop_descriptor_chain(&active.mem) else {
            warn!("virtio-vsock: no event buffer for TRANSPORT_RESET");
            return false;
        };
        let head = chain.head_index();
        let event = EVENT_TRANSPORT_RESET.to_le_bytes();
        let written = match chain.into_iter().next() {
            Some(desc) if desc.is_write_only() && desc.len() as usize >= event.len() => {
                match active.mem.write_slice(&event, desc.addr()) {
                    Ok(()) => event.len() as u32,
                    Err(err) => {
                        warn!(%err, "virtio-vsock: write the event buffer");
                        0
                    }
                }
            }
            _ => {
                warn!("virtio-vsock: unusable event buffer");
                0
            }
        };
        if let Err(err) = queue.add_used(&active.mem, head, written) {
            self.muxer.counters.event_failures += 1;
            warn!(%err, "virtio-vsock: return an event buffer");
            return false;
        }
        notify(active, EVENT_QUEUE, &mut self.muxer.counters);
        written != 0
    }

    fn signal_event_loop(&mut self) -> std::io::Result<()> {
        self.activate_evt.write(1)
    }

    /// The event queue's available index, as the guest last wrote it.
    fn event_avail_idx(&self) -> Option<Wrapping<u16>> {
        let active = self.active.as_ref()?;
        active.queues[EVENT_QUEUE]
            .avail_idx(&active.mem, Ordering::Acquire)
            .ok()
    }

    /// Until when host clients wait for the guest to take a reset.
    pub fn reset_deadline(&self) -> Option<Instant> {
        self.reset_wait.as_ref().map(|w| w.deadline)
    }

    /// Serves host clients again once the guest posted an event buffer
    /// after the reset, or the wait ran out.
    pub fn check_reset_taken(&mut self, now: Instant) {
        let Some(wait) = &self.reset_wait else {
            return;
        };
        let moved = !matches!(self.event_avail_idx(), Some(idx) if idx == wait.avail_idx);
        if !moved && now < wait.deadline {
            return;
        }
        if moved {
            tracing::info!("virtio-vsock: the guest took TRANSPORT_RESET; serving host clients");
        } else {
            warn!(timeout = ?RESET_TIMEOUT, "virtio-vsock: the guest did not take TRANSPORT_RESET; serving host clients");
        }
        self.reset_wait = None;
        self.muxer.accepting = true;
    }
}

/// Interrupts the guest if the driver wants to hear about `queue`.
fn notify(active: &mut Active, queue: usize, counters: &mut VsockCounters) {
    let failures = &mut counters.event_failures;
    let queue = &mut active.queues[queue];
    notify_used(queue, &active.mem, &active.irq, failures, "virtio-vsock");
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        device_type::VSOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE; NUM_QUEUES]
    }

    fn avail_features(&self) -> u64 {
        0 // stream sockets only; the transport adds VERSION_1
    }

    fn set_acked_features(&mut self, features: u64) {
        self.acked_features = features;
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // struct virtio_vsock_config { le64 guest_cid; }
        let config = self.guest_cid.to_le_bytes();
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = usize::try_from(offset)
                .ok()
                .and_then(|o| o.checked_add(i))
                .and_then(|at| config.get(at).copied())
                .unwrap_or(0);
        }
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        warn!(
            offset,
            len = data.len(),
            "virtio-vsock: the config space is read-only"
        );
    }

    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError> {
        if self.active.is_some() {
            return Err(ActivateError::AlreadyActive);
        }
        activation.check_queue_count(NUM_QUEUES)?;
        let Activation {
            mem,
            queues,
            queue_evts,
            irq,
        } = activation;
        self.active = Some(Active {
            mem,
            queues,
            queue_evts,
            irq,
        });
        self.signal_event_loop()
            .map_err(ActivateError::SignalActivate)
    }

    fn reset(&mut self) {
        self.active = None;
        self.acked_features = 0;
        self.muxer.close_all();
        if let Err(err) = self.signal_event_loop() {
            warn!(%err, "virtio-vsock: signal reset to the event loop");
        }
    }

    /// The host connections are not part of it: they end with the VMM, and
    /// the restored device tells the guest so ([`Self::restored`]).
    fn save_state(&self) -> Result<DeviceState, &'static str> {
        Ok(DeviceState {
            kind: DeviceKind::Vsock {
                guest_cid: self.guest_cid,
            },
            acked_features: self.acked_features,
            active_queues: self.active.as_ref().map(|a| queue_snapshots(&a.queues)),
        })
    }

    /// The guest's connections were to host sockets of the VMM that took
    /// the snapshot: TRANSPORT_RESET makes it drop them (listeners stay).
    /// Host clients are held until the guest has taken it
    /// ([`Vsock::check_reset_taken`]).
    fn restored(&mut self) {
        if !self.send_transport_reset() {
            return;
        }
        tracing::info!(
            guest_cid = self.guest_cid,
            "virtio-vsock: sent TRANSPORT_RESET after restore"
        );
        if let Some(avail_idx) = self.event_avail_idx() {
            self.reset_wait = Some(ResetWait {
                avail_idx,
                deadline: Instant::now() + RESET_TIMEOUT,
            });
            self.muxer.accepting = false;
        }
    }
}

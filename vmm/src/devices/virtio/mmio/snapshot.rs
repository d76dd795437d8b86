//! A virtio-mmio transport's registers in a snapshot, and putting them back
//! into a fresh transport around a fresh device.
//!
//! A snapshot file is untrusted input: every value is checked against what
//! a driver could have set, and a bad one is an error, never a panic.

use serde::{Deserialize, Serialize};
use tracing::{debug, warn};
use virtio_queue::QueueT;

use super::{MmioError, MmioTransport};
use crate::devices::virtio::{interrupt, status, DeviceState, QueueSnapshot, VIRTIO_F_VERSION_1};

/// The transport's registers. The queues are the driver's set-up; the ring
/// positions live in the device's [`DeviceState`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransportState {
    pub device_type: u32,
    pub device_status: u32,
    pub device_features_sel: u32,
    pub driver_features_sel: u32,
    pub driver_features: u64,
    pub queue_sel: u32,
    pub activated: bool,
    pub interrupt_status: u32,
    pub queues: Vec<QueueSnapshot>,
}

/// Status bits a driver can set.
const KNOWN_STATUS: u32 = status::ACKNOWLEDGE
    | status::DRIVER
    | status::DRIVER_OK
    | status::FEATURES_OK
    | status::DEVICE_NEEDS_RESET
    | status::FAILED;

impl MmioTransport {
    /// The registers, for a snapshot. Does not lock the device.
    pub fn save_state(&self) -> TransportState {
        TransportState {
            device_type: self.device_type,
            device_status: self.device_status,
            device_features_sel: self.device_features_sel,
            driver_features_sel: self.driver_features_sel,
            driver_features: self.driver_features,
            queue_sel: self.queue_sel,
            activated: self.activated,
            interrupt_status: self.irq.status(),
            queues: self.queues.iter().map(|q| q.state().into()).collect(),
        }
    }

    fn restore_error(&self, reason: &'static str) -> MmioError {
        MmioError::RestoreTransport {
            device: self.device_type,
            reason,
        }
    }

    fn queue_error(&self, index: usize, reason: impl std::fmt::Display) -> MmioError {
        MmioError::RestoreQueue {
            device: self.device_type,
            index,
            reason: reason.to_string(),
        }
    }

    /// Puts this fresh transport into `state` and `device`'s saved state.
    /// An active device is activated again on its saved queues, each queue
    /// event is signalled once (a notification may have been in flight),
    /// a pending interrupt is raised again, and the device is told it was
    /// restored.
    pub fn restore_state(
        &mut self,
        state: &TransportState,
        device: &DeviceState,
    ) -> Result<(), MmioError> {
        if self.activated || self.device_status != 0 {
            return Err(self.restore_error("the transport is not fresh"));
        }
        if state.device_type != self.device_type {
            return Err(MmioError::RestoreDeviceType {
                expected: self.device_type,
                found: state.device_type,
            });
        }
        if state.queues.len() != self.queues.len() {
            return Err(MmioError::RestoreQueueCount {
                device: self.device_type,
                expected: self.queues.len(),
                found: state.queues.len(),
            });
        }
        if state.interrupt_status & !(interrupt::VRING | interrupt::CONFIG) != 0 {
            return Err(self.restore_error("unknown interrupt status bits"));
        }
        if state.device_status & !KNOWN_STATUS != 0 {
            return Err(self.restore_error("unknown device status bits"));
        }
        let driver_ok = state.device_status & status::DRIVER_OK != 0;
        let failed = state.device_status & status::FAILED != 0;
        if state.activated
            != (driver_ok && !failed && state.device_status & status::DEVICE_NEEDS_RESET == 0)
        {
            return Err(self.restore_error("activation does not match the device status"));
        }
        let offered = self.offered_features();
        if state.driver_features & !offered != 0 {
            return Err(self.restore_error("the driver has features the device does not offer"));
        }
        if state.device_status & status::FEATURES_OK != 0
            && state.driver_features & VIRTIO_F_VERSION_1 == 0
        {
            return Err(self.restore_error("features accepted without VERSION_1"));
        }
        let mut queues = Vec::with_capacity(state.queues.len());
        for (index, (saved, fresh)) in state.queues.iter().zip(&self.queues).enumerate() {
            if saved.max_size != fresh.max_size() {
                return Err(self.queue_error(index, "maximum size differs from the device's"));
            }
            queues.push(saved.to_queue().map_err(|e| self.queue_error(index, e))?);
        }
        let active = match (&device.active_queues, state.activated) {
            (None, false) => None,
            (Some(saved), true) if saved.len() == queues.len() => {
                let mut active = Vec::with_capacity(saved.len());
                for (index, q) in saved.iter().enumerate() {
                    let queue = q.to_queue().map_err(|e| self.queue_error(index, e))?;
                    if !queue.ready() || !queue.is_valid(&self.mem) {
                        return Err(self.queue_error(
                            index,
                            "not ready, or its rings lie outside guest memory",
                        ));
                    }
                    active.push(queue);
                }
                Some(active)
            }
            _ => return Err(self.restore_error("the device's queues do not match its activation")),
        };

        self.queues = queues;
        self.device_status = state.device_status;
        self.device_features_sel = state.device_features_sel;
        self.driver_features_sel = state.driver_features_sel;
        self.driver_features = state.driver_features;
        self.queue_sel = state.queue_sel;
        if state.device_status & status::FEATURES_OK != 0 {
            self.device().set_acked_features(device.acked_features);
        }
        if let Some(active) = active {
            self.activate_on(active)
                .map_err(|e| MmioError::RestoreActivate(self.device_type, e))?;
            self.activated = true;
            for (queue, evt) in self.queue_evts.iter().enumerate() {
                if let Err(err) = evt.write(1) {
                    warn!(queue, %err, device = self.device_type, "signal a queue event after restore");
                }
            }
        }
        if state.interrupt_status != 0 {
            if let Err(err) = self.irq.trigger(state.interrupt_status) {
                warn!(%err, device = self.device_type, "raise the interrupt again after restore");
            }
        }
        if self.activated {
            self.device().restored();
        }
        debug!(
            device = self.device_type,
            status = self.device_status,
            activated = self.activated,
            "virtio transport restored"
        );
        Ok(())
    }
}

#[cfg(test)]
#[path = "snapshot_tests.rs"]
mod tests;

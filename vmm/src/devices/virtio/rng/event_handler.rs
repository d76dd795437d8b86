//! The virtio-rng device in the VMM's event loop.

use std::os::fd::AsRawFd;

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use tracing::warn;

use super::device::Rng;

impl Rng {
    /// Adds the queue event when the device became active, removes it after
    /// a reset.
    fn sync_queue_event(&mut self, ops: &mut EventOps) {
        if let Err(err) = self.activate_evt.read() {
            warn!(%err, "virtio-rng: read the activate event");
        }
        let result = match (&self.active, self.registered_queue_evt.take()) {
            (Some(active), None) => {
                let evt = active.queue_evt.try_clone();
                match evt {
                    Ok(evt) => {
                        let added = ops.add(Events::new(&evt, EventSet::IN));
                        self.registered_queue_evt = Some(evt);
                        added
                    }
                    Err(err) => {
                        warn!(%err, "virtio-rng: clone the queue event");
                        Ok(())
                    }
                }
            }
            (None, Some(old)) => ops.remove(Events::new(&old, EventSet::IN)),
            (_, kept) => {
                self.registered_queue_evt = kept;
                Ok(())
            }
        };
        if let Err(err) = result {
            self.counters.event_failures += 1;
            warn!(%err, "virtio-rng: update the event loop");
        }
        // Buffers may have been posted before the queue event was watched.
        self.process_queue();
    }
}

impl MutEventSubscriber for Rng {
    fn init(&mut self, ops: &mut EventOps) {
        if let Err(err) = ops.add(Events::new(&self.activate_evt, EventSet::IN)) {
            self.counters.event_failures += 1;
            warn!(%err, "virtio-rng: watch the activate event");
        }
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let fd = events.fd();
        if fd == self.activate_evt.as_raw_fd() {
            self.sync_queue_event(ops);
        } else if self.registered_queue_evt.as_ref().map(AsRawFd::as_raw_fd) == Some(fd) {
            if let Some(Err(err)) = self.active.as_ref().map(|a| a.queue_evt.read()) {
                warn!(%err, "virtio-rng: read the queue event");
            }
            self.process_queue();
        } else {
            self.counters.event_failures += 1;
            warn!(fd, "virtio-rng: event from an unknown source");
        }
    }
}

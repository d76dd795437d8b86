//! The virtio-fs worker in its own event loop (thread `vmm-fs`).

use std::os::fd::AsRawFd;

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use tracing::warn;

use super::device::{FsWorker, HIPRIO_QUEUE, REQUEST_QUEUE};

impl FsWorker {
    /// Adds the queue events when the device became active, removes them
    /// after a reset.
    fn sync_queue_events(&mut self, ops: &mut EventOps) {
        if let Err(err) = self.activate_evt.read() {
            warn!(%err, "virtio-fs: read the activate event");
        }
        for old in std::mem::take(&mut self.registered_queue_evts) {
            if let Err(err) = ops.remove(Events::new(&old, EventSet::IN)) {
                self.counters.event_failures += 1;
                warn!(%err, "virtio-fs: stop watching a queue event");
            }
        }
        let clones: Vec<_> = {
            let guard = self.active.lock().unwrap_or_else(|e| e.into_inner());
            let Some(active) = guard.as_ref() else {
                return;
            };
            active.queue_evts.iter().map(|e| e.try_clone()).collect()
        };
        for evt in clones {
            match evt {
                Ok(evt) => {
                    if let Err(err) = ops.add(Events::new(&evt, EventSet::IN)) {
                        self.counters.event_failures += 1;
                        warn!(%err, "virtio-fs: watch a queue event");
                    }
                    self.registered_queue_evts.push(evt);
                }
                Err(err) => {
                    self.counters.event_failures += 1;
                    warn!(%err, "virtio-fs: clone a queue event");
                }
            }
        }
        // Requests may have been posted before the queue events were watched.
        self.process_queues();
    }
}

impl MutEventSubscriber for FsWorker {
    fn init(&mut self, ops: &mut EventOps) {
        if let Err(err) = ops.add(Events::new(&self.activate_evt, EventSet::IN)) {
            self.counters.event_failures += 1;
            warn!(%err, "virtio-fs: watch the activate event");
        }
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let fd = events.fd();
        if fd == self.activate_evt.as_raw_fd() {
            self.sync_queue_events(ops);
            return;
        }
        let Some(index) = self
            .registered_queue_evts
            .iter()
            .position(|e| e.as_raw_fd() == fd)
        else {
            self.counters.event_failures += 1;
            warn!(fd, "virtio-fs: event from an unknown source");
            return;
        };
        if let Err(err) = self.registered_queue_evts[index].read() {
            warn!(%err, "virtio-fs: read a queue event");
        }
        match index {
            HIPRIO_QUEUE | REQUEST_QUEUE => self.process_queue(index),
            _ => self.process_queues(),
        }
    }
}

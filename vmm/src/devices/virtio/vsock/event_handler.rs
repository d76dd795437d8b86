//! The virtio-vsock device in the VMM's event loop.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Instant;

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use tracing::warn;

use super::device::Vsock;

impl Vsock {
    /// Adds the queue events when the device became active, removes them
    /// after a reset.
    fn sync_queue_events(&mut self, ops: &mut EventOps) {
        if let Err(err) = self.activate_evt.read() {
            warn!(%err, "virtio-vsock: read the activate event");
        }
        for old in std::mem::take(&mut self.registered_queue_evts) {
            if let Err(err) = ops.remove(Events::new(&old, EventSet::IN)) {
                self.muxer.counters.event_failures += 1;
                warn!(%err, "virtio-vsock: stop watching a queue event");
            }
        }
        let Some(active) = self.active.as_ref() else {
            return;
        };
        for evt in &active.queue_evts {
            match evt.try_clone() {
                Ok(evt) => {
                    if let Err(err) = ops.add(Events::new(&evt, EventSet::IN)) {
                        self.muxer.counters.event_failures += 1;
                        warn!(%err, "virtio-vsock: watch a queue event");
                    }
                    self.registered_queue_evts.push(evt);
                }
                Err(err) => {
                    self.muxer.counters.event_failures += 1;
                    warn!(%err, "virtio-vsock: clone a queue event");
                }
            }
        }
    }

    /// Makes the watched host fds match what the muxer wants.
    fn sync_host_fds(&mut self, ops: &mut EventOps) {
        let mut failures = 0;
        for stream in self.muxer.take_graveyard() {
            let fd = stream.as_raw_fd();
            if self.registered_host.remove(&fd).is_some()
                && ops.remove(Events::empty_raw(fd)).is_err()
            {
                failures += 1;
            }
            drop(stream);
        }
        let wanted: HashMap<RawFd, EventSet> = self
            .muxer
            .interest()
            .into_iter()
            .filter(|(_, set)| !set.is_empty())
            .collect();
        self.registered_host.retain(|fd, set| match wanted.get(fd) {
            None => {
                failures += u64::from(ops.remove(Events::empty_raw(*fd)).is_err());
                false
            }
            Some(w) if w != set => {
                failures += u64::from(ops.modify(Events::new_raw(*fd, *w)).is_err());
                *set = *w;
                true
            }
            Some(_) => true,
        });
        for (fd, set) in wanted {
            if let std::collections::hash_map::Entry::Vacant(e) = self.registered_host.entry(fd) {
                if ops.add(Events::new_raw(fd, set)).is_err() {
                    failures += 1;
                } else {
                    e.insert(set);
                }
            }
        }
        if failures > 0 {
            self.muxer.counters.event_failures += failures;
            warn!(failures, "virtio-vsock: update the watched host sockets");
        }
    }

    /// Arms the timer for the muxer's next deadline, or the end of the
    /// wait for a TRANSPORT_RESET.
    fn sync_timer(&mut self) {
        let deadline = match (self.muxer.next_deadline(), self.reset_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if deadline == self.timer_armed_for {
            return;
        }
        let result = match deadline {
            Some(at) => {
                let wait = at.saturating_duration_since(Instant::now());
                // A zero duration would disarm the timer.
                let wait = wait.max(std::time::Duration::from_millis(1));
                self.timer.reset(wait, None)
            }
            None => self.timer.clear(),
        };
        match result {
            Ok(()) => self.timer_armed_for = deadline,
            Err(err) => {
                self.muxer.counters.event_failures += 1;
                warn!(%err, "virtio-vsock: arm the timer");
            }
        }
    }
}

impl MutEventSubscriber for Vsock {
    fn init(&mut self, ops: &mut EventOps) {
        for fd in [self.activate_evt.as_raw_fd(), self.timer.as_raw_fd()] {
            if let Err(err) = ops.add(Events::new_raw(fd, EventSet::IN)) {
                self.muxer.counters.event_failures += 1;
                warn!(%err, "virtio-vsock: watch an event");
            }
        }
        self.sync_host_fds(ops);
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let fd = events.fd();
        let set = events.event_set();
        if fd == self.activate_evt.as_raw_fd() {
            self.sync_queue_events(ops);
        } else if fd == self.timer.as_raw_fd() {
            // Non-blocking: a re-armed timer just reads nothing.
            let _ = self.timer.wait();
            self.timer_armed_for = None;
            self.muxer.expire(Instant::now());
        } else if let Some(evt) = self
            .registered_queue_evts
            .iter()
            .find(|e| e.as_raw_fd() == fd)
        {
            if let Err(err) = evt.read() {
                warn!(%err, "virtio-vsock: read a queue event");
            }
        } else {
            let readable = set.intersects(EventSet::IN | EventSet::HANG_UP | EventSet::ERROR);
            let writable = set.intersects(EventSet::OUT | EventSet::ERROR);
            self.muxer.handle_host_event(fd, readable, writable);
        }
        self.check_reset_taken(Instant::now());
        self.process_queues();
        self.sync_host_fds(ops);
        self.sync_timer();
    }
}

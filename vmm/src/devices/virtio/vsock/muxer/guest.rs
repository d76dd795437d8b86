//! The guest side of the muxer: acting on the guest's packets, and the
//! next packet for the guest (control packets first, then credit and data,
//! round-robin over the connections).

use std::time::Instant;

use tracing::warn;

use super::{Key, Muxer};
use crate::devices::virtio::vsock::connection::{ConnError, HostRead, State};
use crate::devices::virtio::vsock::packet::{
    op, shutdown, Header, HOST_CID, MAX_PAYLOAD, TYPE_STREAM,
};

impl Muxer {
    /// Acts on a valid packet from the guest.
    pub fn handle_guest_packet(&mut self, hdr: &Header, payload: &[u8]) {
        let key = (hdr.dst_port, hdr.src_port);
        if hdr.dst_cid != HOST_CID {
            if hdr.op != op::RST {
                self.push_ctrl(op::RST, key, 0);
            }
            return;
        }
        let Some(conn) = self.conns.get_mut(&key) else {
            match hdr.op {
                op::REQUEST => self.connect_to_host(hdr, key),
                op::RST => {}
                _ => self.push_ctrl(op::RST, key, 0),
            }
            return;
        };
        conn.update_peer_credit(hdr);
        match (conn.state, hdr.op) {
            (_, op::RST) => {
                if matches!(conn.state, State::LocalInit { .. }) {
                    self.counters.connect_failures += 1;
                }
                self.remove(key);
            }
            (State::LocalInit { .. }, op::RESPONSE) => {
                conn.state = State::Established;
                conn.host_readable = true;
                self.counters.connections += 1;
                let line = format!("OK {}\n", key.0);
                if let Err(err) = conn.push_local(line.as_bytes()) {
                    self.counters.host_errors += 1;
                    warn!(%err, "virtio-vsock: host stream");
                    self.reset(key);
                }
            }
            (State::Established, op::RW) => {
                self.counters.tx_bytes += payload.len() as u64;
                if let Err(err) = conn.push_guest_data(payload) {
                    if matches!(err, ConnError::Write(_)) {
                        self.counters.host_errors += 1;
                    }
                    warn!(%err, "virtio-vsock: reset a connection");
                    self.reset(key);
                } else if conn.host_eof && !payload.is_empty() {
                    conn.note_progress(Instant::now());
                }
            }
            (State::Established, op::CREDIT_UPDATE) => {}
            (State::Established, op::CREDIT_REQUEST) => conn.credit_update_wanted = true,
            (State::Established, op::SHUTDOWN) => {
                conn.peer_shutdown |= hdr.flags & shutdown::BOTH;
                if conn.peer_shutdown == shutdown::BOTH {
                    // The spec's RST ends the connection, but only once the
                    // guest's buffered bytes reached the host stream.
                    match conn.flush() {
                        Err(err) => {
                            self.counters.host_errors += 1;
                            warn!(%err, "virtio-vsock: host stream");
                            self.reset(key);
                        }
                        Ok(()) if conn.is_flushed() => self.reset(key),
                        Ok(()) => {
                            conn.state = State::Closing;
                            conn.note_progress(Instant::now());
                        }
                    }
                } else if let Err(err) = conn.flush() {
                    self.counters.host_errors += 1;
                    warn!(%err, "virtio-vsock: host stream");
                    self.reset(key);
                }
            }
            // Nothing to do once the guest shut down both ways; data would
            // break its promise and resets (below).
            (State::Closing, op::CREDIT_UPDATE | op::CREDIT_REQUEST | op::SHUTDOWN) => {}
            (state, op) => {
                warn!(?state, op, "virtio-vsock: unexpected packet; reset");
                self.reset(key);
            }
        }
    }

    /// There may be a packet for the guest.
    pub fn has_rx(&self) -> bool {
        !self.ctrl.is_empty()
            || self
                .conns
                .values()
                .any(|c| c.wants_rx_data() || c.wants_credit_request() || c.wants_credit_update())
    }

    fn header(&self, op: u16, key: Key, len: u32, flags: u32) -> Header {
        header(self.guest_cid, op, key, len, flags)
    }

    /// The next packet for the guest, its payload at most `max_payload` bytes.
    pub fn next_rx(&mut self, max_payload: u32) -> Option<(Header, Vec<u8>)> {
        if let Some(c) = self.ctrl.pop_front() {
            let key = (c.local_port, c.peer_port);
            let mut hdr = self.header(c.op, key, 0, c.flags);
            if let Some(conn) = self.conns.get_mut(&key) {
                conn.stamp(&mut hdr);
            }
            return Some((hdr, Vec::new()));
        }
        let cid = self.guest_cid;
        // Round-robin over connections, from where the last one stopped.
        let keys: Vec<Key> = self
            .conns
            .range(self.rr_next..)
            .chain(self.conns.range(..self.rr_next))
            .map(|(&k, _)| k)
            .collect();
        for key in keys {
            let Some(conn) = self.conns.get_mut(&key) else {
                continue;
            };
            let next = (key.0, key.1.wrapping_add(1));
            if conn.wants_credit_update() {
                let mut hdr = header(cid, op::CREDIT_UPDATE, key, 0, 0);
                conn.stamp(&mut hdr);
                return Some((hdr, Vec::new()));
            }
            if conn.wants_credit_request() {
                conn.credit_requested = true;
                let mut hdr = header(cid, op::CREDIT_REQUEST, key, 0, 0);
                conn.stamp(&mut hdr);
                return Some((hdr, Vec::new()));
            }
            if !conn.wants_rx_data() {
                continue;
            }
            let max = max_payload.min(conn.peer_credit()).min(MAX_PAYLOAD);
            if max == 0 {
                continue;
            }
            match conn.read_host(max as usize) {
                HostRead::WouldBlock => continue,
                HostRead::Data(data) => {
                    self.rr_next = next;
                    let mut hdr = header(cid, op::RW, key, data.len() as u32, 0);
                    conn.stamp(&mut hdr);
                    self.counters.rx_bytes += data.len() as u64;
                    return Some((hdr, data));
                }
                HostRead::Eof => {
                    conn.host_eof = true;
                    conn.note_progress(Instant::now());
                    let mut hdr = header(cid, op::SHUTDOWN, key, 0, shutdown::SEND);
                    conn.stamp(&mut hdr);
                    return Some((hdr, Vec::new()));
                }
                HostRead::Error(err) => {
                    self.counters.host_errors += 1;
                    warn!(%err, "virtio-vsock: read a host stream; reset");
                    self.remove(key);
                    self.counters.rst_sent += 1;
                    return Some((header(cid, op::RST, key, 0, 0), Vec::new()));
                }
            }
        }
        None
    }
}

/// A packet header from the host to the guest; credit fields zero.
fn header(guest_cid: u64, op: u16, key: Key, len: u32, flags: u32) -> Header {
    Header {
        src_cid: HOST_CID,
        dst_cid: guest_cid,
        src_port: key.0,
        dst_port: key.1,
        len,
        type_: TYPE_STREAM,
        op,
        flags,
        buf_alloc: 0,
        fwd_cnt: 0,
    }
}

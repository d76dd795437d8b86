//! The host side of the muxer: host clients on the listener and their
//! `CONNECT` lines, connects to the guest and to host sockets, and events
//! on host streams.

use std::io::{ErrorKind, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Instant;

use tracing::{debug, warn};

use super::{
    Key, Muxer, PendingHost, CONNECT_TIMEOUT, FIRST_LOCAL_PORT, MAX_CONNECTIONS, MAX_CONNECT_LINE,
};
use crate::devices::virtio::vsock::connection::{Connection, State};
use crate::devices::virtio::vsock::packet::{op, Header};
use crate::devices::virtio::vsock::unix::{connect_nonblocking, parse_connect};

impl Muxer {
    /// A host file descriptor is ready.
    pub fn handle_host_event(&mut self, fd: RawFd, readable: bool, writable: bool) {
        if fd == self.listener.as_raw_fd() {
            if self.accepting {
                self.accept();
            }
        } else if self.pending.contains_key(&fd) {
            self.read_connect_line(fd);
        } else if let Some(&key) = self.by_fd.get(&fd) {
            let Some(conn) = self.conns.get_mut(&key) else {
                return;
            };
            if readable {
                conn.host_readable = true;
            }
            if writable {
                let queued = conn.queued();
                if let Err(err) = conn.flush() {
                    self.counters.host_errors += 1;
                    warn!(%err, "virtio-vsock: host stream");
                    self.reset(key);
                    return;
                }
                if conn.queued() < queued {
                    conn.note_progress(Instant::now());
                }
                if conn.state == State::Closing && conn.is_flushed() {
                    // Everything reached the host (whose stream got its end
                    // of file): the spec's RST ends the connection.
                    self.reset(key);
                }
            }
        } else {
            debug!(fd, "virtio-vsock: event for a closed host stream");
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if self.pending.len() + self.conns.len() >= MAX_CONNECTIONS {
                        self.counters.host_errors += 1;
                        warn!("virtio-vsock: too many connections; refuse a host client");
                        continue;
                    }
                    if let Err(err) = stream.set_nonblocking(true) {
                        self.counters.host_errors += 1;
                        warn!(%err, "virtio-vsock: make a host stream non-blocking");
                        continue;
                    }
                    let fd = stream.as_raw_fd();
                    self.pending.insert(
                        fd,
                        PendingHost {
                            stream,
                            line: Vec::new(),
                            deadline: Instant::now() + CONNECT_TIMEOUT,
                        },
                    );
                    self.read_connect_line(fd);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(err) => {
                    self.counters.host_errors += 1;
                    warn!(%err, "virtio-vsock: accept a host client");
                    return;
                }
            }
        }
    }

    /// Reads the `CONNECT <port>\n` line byte by byte, so that nothing after
    /// it is consumed.
    fn read_connect_line(&mut self, fd: RawFd) {
        let Some(p) = self.pending.get_mut(&fd) else {
            return;
        };
        let outcome = loop {
            let mut byte = [0u8; 1];
            match p.stream.read(&mut byte) {
                Ok(0) => break Err("end of file"),
                Ok(_) if byte[0] == b'\n' => break Ok(parse_connect(&p.line)),
                Ok(_) if p.line.len() + 1 >= MAX_CONNECT_LINE => break Err("line too long"),
                Ok(_) => p.line.push(byte[0]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(_) => break Err("read error"),
            }
        };
        let Some(p) = self.pending.remove(&fd) else {
            return;
        };
        match outcome {
            Ok(Some(port)) => self.connect_to_guest(p.stream, port),
            Ok(None) | Err(_) => {
                self.counters.bad_connect_lines += 1;
                warn!(
                    why = outcome.err().unwrap_or("not CONNECT <port>"),
                    "virtio-vsock: close a host client"
                );
                self.graveyard.push(p.stream);
            }
        }
    }

    fn allocate_local_port(&mut self, peer_port: u32) -> Option<u32> {
        for _ in 0..=MAX_CONNECTIONS {
            let port = self.next_local_port;
            self.next_local_port = port.checked_add(1).unwrap_or(FIRST_LOCAL_PORT);
            if !self.conns.contains_key(&(port, peer_port)) {
                return Some(port);
            }
        }
        None
    }

    /// Starts a host-initiated connection to guest port `port`.
    fn connect_to_guest(&mut self, stream: UnixStream, port: u32) {
        let Some(local) = self.allocate_local_port(port) else {
            self.counters.host_errors += 1;
            self.graveyard.push(stream);
            return;
        };
        let key = (local, port);
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        self.by_fd.insert(stream.as_raw_fd(), key);
        self.conns
            .insert(key, Connection::new(stream, State::LocalInit { deadline }));
        self.push_ctrl(op::REQUEST, key, 0);
    }

    /// Starts a guest-initiated connection to `<uds_path>_<port>`.
    pub(super) fn connect_to_host(&mut self, hdr: &Header, key: Key) {
        if self.conns.len() + self.pending.len() >= MAX_CONNECTIONS {
            self.counters.connect_failures += 1;
            self.push_ctrl(op::RST, key, 0);
            return;
        }
        let mut path = self.uds_path.clone().into_os_string();
        path.push(format!("_{}", key.0));
        // Never blocks the event loop: a listener with a full backlog fails
        // the connect (EAGAIN) instead of stalling it.
        match connect_nonblocking(&path) {
            Ok(stream) => {
                let mut conn = Connection::new(stream, State::Established);
                conn.update_peer_credit(hdr);
                self.by_fd.insert(conn.stream.as_raw_fd(), key);
                self.conns.insert(key, conn);
                self.counters.connections += 1;
                self.push_ctrl(op::RESPONSE, key, 0);
            }
            Err(err) => {
                self.counters.connect_failures += 1;
                warn!(path = ?path, %err, "virtio-vsock: guest connect to the host failed");
                self.push_ctrl(op::RST, key, 0);
            }
        }
    }
}

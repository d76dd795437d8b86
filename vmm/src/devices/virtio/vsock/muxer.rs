//! The host side of hybrid vsock: a unix listener for host-initiated
//! connections, unix streams to `<uds_path>_<port>` for guest-initiated ones,
//! and the packets that move between them and the guest.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{ErrorKind, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use event_manager::EventSet;
use tracing::{debug, warn};

use super::connection::{ConnError, Connection, HostRead, State};
pub use super::counters::VsockCounters;
use super::packet::{op, shutdown, Header, HOST_CID, MAX_PAYLOAD, TYPE_STREAM};
use super::unix::{connect_nonblocking, parse_connect};

/// First host port given to host-initiated connections.
pub const FIRST_LOCAL_PORT: u32 = 1 << 30;
/// How long the guest has to answer a REQUEST, and a host client to send
/// its `CONNECT` line.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a connection the guest shut down may take to hand its last
/// bytes to a slow host stream (restarted whenever the host takes some).
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a connection whose host stream reached end of file stays open
/// with no guest data moving towards the host: the guest should answer the
/// SHUTDOWN(SEND) with its own shutdown or an RST, and is reset otherwise.
/// Generous, because a guest server may read a request to end of file and
/// then work on its reply; it only bounds leaked connections.
pub const HALF_CLOSED_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest `CONNECT <port>\n` line.
pub const MAX_CONNECT_LINE: usize = 32;
/// Most connections (pending and proxied) at once.
pub const MAX_CONNECTIONS: usize = 1024;
/// Control packets waiting for receive buffers above which the device stops
/// taking packets from the guest (they stay on the transmit queue).
pub const CTRL_BACKLOG: usize = 256;
/// Control packets are dropped (and counted) above this.
const CTRL_LIMIT: usize = 4 * MAX_CONNECTIONS;

/// A host client that has not finished its `CONNECT` line.
struct PendingHost {
    stream: UnixStream,
    line: Vec<u8>,
    deadline: Instant,
}

/// A header-only packet to send: the connection fills its credit fields.
#[derive(Debug, Clone, Copy)]
struct Ctrl {
    op: u16,
    local_port: u32,
    peer_port: u32,
    flags: u32,
}

/// (host port, guest port).
type Key = (u32, u32);

pub struct Muxer {
    guest_cid: u64,
    uds_path: PathBuf,
    listener: UnixListener,
    pending: HashMap<RawFd, PendingHost>,
    conns: BTreeMap<Key, Connection>,
    by_fd: HashMap<RawFd, Key>,
    ctrl: VecDeque<Ctrl>,
    next_local_port: u32,
    /// Where the round-robin of host data resumes.
    rr_next: Key,
    /// Closed streams the event loop must stop watching before they drop.
    graveyard: Vec<UnixStream>,
    /// Whether host clients are accepted (not while a restored guest has
    /// yet to take its TRANSPORT_RESET: it would reset them too).
    pub accepting: bool,
    pub counters: VsockCounters,
}

impl Muxer {
    /// Listens on `uds_path` (a stale socket there is replaced).
    pub fn new(guest_cid: u64, uds_path: &Path) -> std::io::Result<Self> {
        if let Ok(meta) = std::fs::symlink_metadata(uds_path) {
            if meta.file_type().is_socket() {
                std::fs::remove_file(uds_path)?;
            }
        }
        let listener = UnixListener::bind(uds_path)?;
        listener.set_nonblocking(true)?;
        Ok(Self {
            guest_cid,
            uds_path: uds_path.to_path_buf(),
            listener,
            pending: HashMap::new(),
            conns: BTreeMap::new(),
            by_fd: HashMap::new(),
            ctrl: VecDeque::new(),
            next_local_port: FIRST_LOCAL_PORT,
            rr_next: (0, 0),
            graveyard: Vec::new(),
            accepting: true,
            counters: VsockCounters::default(),
        })
    }

    pub fn listener_fd(&self) -> RawFd {
        self.listener.as_raw_fd()
    }

    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Bytes waiting for host streams, over all connections.
    #[cfg(test)]
    pub fn queued_to_host(&self) -> usize {
        self.conns.values().map(Connection::queued).sum()
    }

    pub fn ctrl_backlogged(&self) -> bool {
        self.ctrl.len() >= CTRL_BACKLOG
    }

    fn push_ctrl(&mut self, op: u16, key: Key, flags: u32) {
        if self.ctrl.len() >= CTRL_LIMIT {
            self.counters.dropped_ctrl += 1;
            warn!(
                op,
                "virtio-vsock: too many control packets waiting; drop one"
            );
            return;
        }
        if op == op::RST {
            self.counters.rst_sent += 1;
        }
        self.ctrl.push_back(Ctrl {
            op,
            local_port: key.0,
            peer_port: key.1,
            flags,
        });
    }

    /// Forgets a connection; its stream closes once the event loop let go.
    fn remove(&mut self, key: Key) {
        if let Some(conn) = self.conns.remove(&key) {
            self.by_fd.remove(&conn.stream.as_raw_fd());
            self.graveyard.push(conn.stream);
        }
    }

    fn reset(&mut self, key: Key) {
        self.remove(key);
        self.push_ctrl(op::RST, key, 0);
    }

    /// Streams to stop watching, then drop.
    pub fn take_graveyard(&mut self) -> Vec<UnixStream> {
        std::mem::take(&mut self.graveyard)
    }

    /// Closes every connection (the driver reset the device).
    pub fn close_all(&mut self) {
        let keys: Vec<Key> = self.conns.keys().copied().collect();
        for key in keys {
            self.remove(key);
        }
        self.graveyard
            .extend(self.pending.drain().map(|(_, p)| p.stream));
        self.ctrl.clear();
    }

    /// The host file descriptors and what to watch them for.
    pub fn interest(&self) -> Vec<(RawFd, EventSet)> {
        let listener = (self.listener.as_raw_fd(), EventSet::IN);
        let mut v: Vec<_> = self.accepting.then_some(listener).into_iter().collect();
        v.extend(self.pending.keys().map(|&fd| (fd, EventSet::IN)));
        v.extend(
            self.conns
                .values()
                .map(|c| (c.stream.as_raw_fd(), c.interest())),
        );
        v
    }

    /// The earliest deadline of a pending host client, a connect or a
    /// winding-down connection.
    pub fn next_deadline(&self) -> Option<Instant> {
        let conns = self.conns.values().filter_map(|c| match c.state {
            State::LocalInit { deadline } => Some(deadline),
            State::Established | State::Closing => c.idle_deadline,
        });
        let pending = self.pending.values().map(|p| p.deadline);
        conns.chain(pending).min()
    }

    /// Ends what is past its deadline.
    pub fn expire(&mut self, now: Instant) {
        let late: Vec<Key> = self
            .conns
            .iter()
            .filter(|(_, c)| matches!(c.state, State::LocalInit { deadline } if deadline <= now))
            .map(|(&k, _)| k)
            .collect();
        for key in late {
            self.counters.timeouts += 1;
            warn!(
                host_port = key.0,
                guest_port = key.1,
                "virtio-vsock: the guest did not answer a connect"
            );
            // A REQUEST still waiting for a receive buffer is simply taken
            // back; one the guest has seen gets an RST.
            let waiting = self.ctrl.len();
            self.ctrl
                .retain(|c| !(c.op == op::REQUEST && (c.local_port, c.peer_port) == key));
            if self.ctrl.len() < waiting {
                self.remove(key);
            } else {
                self.reset(key);
            }
        }
        let idle: Vec<Key> = self
            .conns
            .iter()
            .filter(|(_, c)| c.idle_deadline.is_some_and(|d| d <= now))
            .map(|(&k, _)| k)
            .collect();
        for key in idle {
            self.counters.timeouts += 1;
            warn!(
                host_port = key.0,
                guest_port = key.1,
                "virtio-vsock: a closing connection made no progress; reset"
            );
            self.reset(key);
        }
        let late: Vec<RawFd> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(&fd, _)| fd)
            .collect();
        for fd in late {
            if let Some(p) = self.pending.remove(&fd) {
                self.counters.bad_connect_lines += 1;
                self.graveyard.push(p.stream);
            }
        }
    }

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
    fn connect_to_host(&mut self, hdr: &Header, key: Key) {
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

impl Drop for Muxer {
    fn drop(&mut self) {
        if let Err(err) = std::fs::remove_file(&self.uds_path) {
            warn!(path = ?self.uds_path, %err, "virtio-vsock: remove the socket");
        }
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

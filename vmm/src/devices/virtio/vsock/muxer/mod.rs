//! The host side of hybrid vsock: a unix listener for host-initiated
//! connections, unix streams to `<uds_path>_<port>` for guest-initiated ones,
//! and the packets that move between them and the guest.
//!
//! This file holds the connection table, the queue of control packets for
//! the guest, what the event loop watches, and the deadlines; `host.rs` the
//! host side (the listener, `CONNECT` lines, connects in both directions and
//! host stream events); `guest.rs` the packets from the guest and the next
//! packet for it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use event_manager::EventSet;
use tracing::warn;

use super::connection::{Connection, State};
pub use super::counters::VsockCounters;
use super::packet::op;

/// First host port given to host-initiated connections.
pub const FIRST_LOCAL_PORT: u32 = 1 << 30;
/// How long the guest has to answer a REQUEST, and a host client to send
/// its `CONNECT` line.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
pub use super::connection::{CLOSE_TIMEOUT, HALF_CLOSED_TIMEOUT};
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
        let listener = crate::uds::bind_owner_only(uds_path)?;
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
}

impl Drop for Muxer {
    fn drop(&mut self) {
        if let Err(err) = std::fs::remove_file(&self.uds_path) {
            warn!(path = ?self.uds_path, %err, "virtio-vsock: remove the socket");
        }
    }
}

mod guest;
mod host;

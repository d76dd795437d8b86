//! One proxied connection: a guest vsock stream and a host unix stream,
//! with the flow-control state of both directions.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::num::Wrapping;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use event_manager::EventSet;

use super::packet::{shutdown, Header};

/// How long a connection the guest shut down may take to hand its last
/// bytes to a slow host stream (restarted whenever the host takes some).
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a connection whose host stream reached end of file stays open
/// with no guest data moving towards the host: the guest should answer the
/// SHUTDOWN(SEND) with its own shutdown or an RST, and is reset otherwise.
/// Generous, because a guest server may read a request to end of file and
/// then work on its reply; it only bounds leaked connections.
pub const HALF_CLOSED_TIMEOUT: Duration = Duration::from_secs(30);

/// The receive buffer the device advertises for each connection: guest bytes
/// it accepted but has not yet written to the host stream stay below this.
pub const BUF_ALLOC: u32 = 256 * 1024;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Host-initiated: the REQUEST is (to be) sent, the guest must answer by
    /// the deadline.
    LocalInit { deadline: Instant },
    /// Both sides may move data.
    Established,
    /// The guest shut down both directions while its bytes still wait for
    /// the host stream: they are flushed, then the guest gets its RST.
    Closing,
}

/// What reading the host stream gave.
pub enum HostRead {
    Data(Vec<u8>),
    WouldBlock,
    Eof,
    Error(std::io::Error),
}

/// Why a connection must be reset.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("the guest sent {0} bytes over the credit it was given")]
    CreditOverrun(usize),
    #[error("write to the host stream")]
    Write(#[source] std::io::Error),
}

pub struct Connection {
    pub stream: UnixStream,
    pub state: State,
    /// The guest's receive buffer and what it has consumed of it.
    pub peer_buf_alloc: u32,
    pub peer_fwd_cnt: Wrapping<u32>,
    /// Payload bytes sent to the guest.
    pub tx_cnt: Wrapping<u32>,
    /// Guest payload bytes written to the host stream.
    pub fwd_cnt: Wrapping<u32>,
    /// `fwd_cnt` as the guest last saw it.
    pub last_fwd_cnt_sent: Wrapping<u32>,
    /// Bytes waiting for the host stream; the first `out_uncounted` are ours
    /// (the `OK` line), the rest the guest's.
    out: VecDeque<u8>,
    out_uncounted: usize,
    /// The host stream may have bytes to read.
    pub host_readable: bool,
    /// The host stream reached end of file (SHUTDOWN(SEND) was sent).
    pub host_eof: bool,
    /// SHUTDOWN flags the guest has sent.
    pub peer_shutdown: u32,
    write_shut: bool,
    /// The guest asked for a CREDIT_UPDATE.
    pub credit_update_wanted: bool,
    /// A CREDIT_REQUEST went out and the guest has not answered.
    pub credit_requested: bool,
    /// When a connection that is winding down (host end of file, or
    /// [`State::Closing`]) is reset for want of progress.
    pub idle_deadline: Option<Instant>,
}

impl Connection {
    pub fn new(stream: UnixStream, state: State) -> Self {
        Self {
            stream,
            state,
            peer_buf_alloc: 0,
            peer_fwd_cnt: Wrapping(0),
            tx_cnt: Wrapping(0),
            fwd_cnt: Wrapping(0),
            last_fwd_cnt_sent: Wrapping(0),
            out: VecDeque::new(),
            out_uncounted: 0,
            host_readable: matches!(state, State::Established),
            host_eof: false,
            peer_shutdown: 0,
            write_shut: false,
            credit_update_wanted: false,
            credit_requested: false,
            idle_deadline: None,
        }
    }

    /// Records the credit a packet from the guest carries. An outstanding
    /// CREDIT_REQUEST counts as answered only once the guest gives credit:
    /// otherwise every packet would let another one go out, and the two
    /// sides would ping-pong while the guest application does not read.
    pub fn update_peer_credit(&mut self, hdr: &Header) {
        self.peer_buf_alloc = hdr.buf_alloc;
        self.peer_fwd_cnt = Wrapping(hdr.fwd_cnt);
        if self.peer_credit() > 0 {
            self.credit_requested = false;
        }
    }

    /// Payload bytes the guest can still take.
    pub fn peer_credit(&self) -> u32 {
        let in_flight = (self.tx_cnt - self.peer_fwd_cnt).0;
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    /// The host → guest direction is open.
    fn can_send(&self) -> bool {
        self.state == State::Established
            && !self.host_eof
            && self.peer_shutdown & shutdown::RCV == 0
    }

    /// Reading the host stream now could produce a packet.
    pub fn wants_rx_data(&self) -> bool {
        self.can_send() && self.host_readable && self.peer_credit() > 0
    }

    /// Host data waits but the guest gave no credit: ask for some.
    pub fn wants_credit_request(&self) -> bool {
        self.can_send() && self.host_readable && self.peer_credit() == 0 && !self.credit_requested
    }

    /// The guest should hear our `fwd_cnt`: it asked, or it may be blocked.
    pub fn wants_credit_update(&self) -> bool {
        self.state == State::Established
            && (self.credit_update_wanted
                || (self.fwd_cnt - self.last_fwd_cnt_sent).0 >= BUF_ALLOC / 2)
    }

    /// Fills `hdr`'s credit fields; the guest will have seen `fwd_cnt`.
    pub fn stamp(&mut self, hdr: &mut Header) {
        hdr.buf_alloc = BUF_ALLOC;
        hdr.fwd_cnt = self.fwd_cnt.0;
        self.last_fwd_cnt_sent = self.fwd_cnt;
        self.credit_update_wanted = false;
    }

    /// Reads at most `max` bytes from the host stream.
    pub fn read_host(&mut self, max: usize) -> HostRead {
        let mut buf = vec![0u8; max];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return HostRead::Eof,
                Ok(n) => {
                    buf.truncate(n);
                    self.tx_cnt += n as u32;
                    return HostRead::Data(buf);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.host_readable = false;
                    return HostRead::WouldBlock;
                }
                Err(e) => return HostRead::Error(e),
            }
        }
    }

    /// Queues bytes of ours (not counted in `fwd_cnt`) for the host stream.
    pub fn push_local(&mut self, bytes: &[u8]) -> Result<(), ConnError> {
        self.out.extend(bytes);
        self.out_uncounted += bytes.len();
        self.flush()
    }

    /// Queues guest payload for the host stream and writes what it takes.
    pub fn push_guest_data(&mut self, payload: &[u8]) -> Result<(), ConnError> {
        let pending = self.out.len() - self.out_uncounted;
        if pending + payload.len() > BUF_ALLOC as usize {
            return Err(ConnError::CreditOverrun(
                pending + payload.len() - BUF_ALLOC as usize,
            ));
        }
        self.out.extend(payload);
        self.flush()
    }

    /// Writes buffered bytes until the host stream would block.
    pub fn flush(&mut self) -> Result<(), ConnError> {
        while !self.out.is_empty() {
            let (front, _) = self.out.as_slices();
            match self.stream.write(front) {
                Ok(0) => return Err(ConnError::Write(ErrorKind::WriteZero.into())),
                Ok(n) => {
                    self.out.drain(..n);
                    let ours = n.min(self.out_uncounted);
                    self.out_uncounted -= ours;
                    self.fwd_cnt += (n - ours) as u32;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(ConnError::Write(e)),
            }
        }
        if self.peer_shutdown & shutdown::SEND != 0 && !self.write_shut {
            // The guest sends no more: pass the end of file on.
            self.write_shut = true;
            let _ = self.stream.shutdown(std::net::Shutdown::Write);
        }
        Ok(())
    }

    /// Guest payload bytes not yet written to the host stream.
    pub fn pending_out(&self) -> usize {
        self.out.len() - self.out_uncounted
    }

    /// Nothing at all waits for the host stream.
    pub fn is_flushed(&self) -> bool {
        self.out.is_empty()
    }

    /// Bytes (ours and the guest's) waiting for the host stream; a flush
    /// that lowers it made progress.
    pub fn queued(&self) -> usize {
        self.out.len()
    }

    /// The connection moved data at `now`: restarts the idle timeout of a
    /// connection that is winding down. After host end of file it runs only
    /// while nothing waits for the host stream (a half-closed stream the
    /// guest still writes to, and the host reads, is doing useful work).
    pub fn note_progress(&mut self, now: Instant) {
        self.idle_deadline = match self.state {
            State::Closing => Some(now + CLOSE_TIMEOUT),
            State::Established if self.host_eof && self.is_flushed() => {
                Some(now + HALF_CLOSED_TIMEOUT)
            }
            _ => None,
        };
    }

    /// What the event loop should watch the host stream for.
    pub fn interest(&self) -> EventSet {
        let mut set = EventSet::empty();
        if self.can_send() && !self.host_readable && self.peer_credit() > 0 {
            set |= EventSet::IN;
        }
        if !self.out.is_empty() {
            set |= EventSet::OUT;
        }
        set
    }
}

//! virtio-vsock end to end without KVM: a driver-side view of the queues and
//! real unix sockets on the host side.

use std::cell::Cell;
use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use vm_memory::{Bytes, GuestAddress};

use super::connection::BUF_ALLOC;
use super::muxer::{CLOSE_TIMEOUT, CONNECT_TIMEOUT, FIRST_LOCAL_PORT, HALF_CLOSED_TIMEOUT};
use super::packet::{op, shutdown, Header, HDR_SIZE, HOST_CID, TYPE_STREAM};
use super::unix::connect_nonblocking;
use super::*;
use crate::devices::virtio::test_utils::{temp_uds_path, VsockQueues};
use crate::devices::virtio::{interrupt, VirtioDevice};

const CID: u64 = 3;
const TX_BUFS: u64 = 0x200_000;
const RX_BUFS: u64 = 0x800_000;
const RX_BUF_SIZE: u32 = 4096 + HDR_SIZE as u32;

struct Harness {
    q: VsockQueues,
    dev: Vsock,
    path: PathBuf,
    tx_next: Cell<u64>,
    rx_next: Cell<u64>,
    rx_heads: HashMap<u16, u64>,
    rx_posted: u16,
    rx_seen: usize,
}

impl Harness {
    fn new() -> Self {
        Self::with_path(temp_uds_path("vsock-test"))
    }

    fn with_path(path: PathBuf) -> Self {
        let q = VsockQueues::new(256);
        let mut dev = Vsock::new(CID, &path).unwrap();
        dev.activate(q.activation()).unwrap();
        Self {
            q,
            dev,
            path,
            tx_next: Cell::new(TX_BUFS),
            rx_next: Cell::new(RX_BUFS),
            rx_heads: HashMap::new(),
            rx_posted: 0,
            rx_seen: 0,
        }
    }

    fn alloc(cell: &Cell<u64>, len: u32) -> u64 {
        let at = cell.get();
        cell.set(at + u64::from(len).div_ceil(0x1000) * 0x1000);
        at
    }

    /// The guest sends a packet: header in one descriptor, payload in another.
    fn send(&mut self, hdr: Header, payload: &[u8]) {
        let hdr = Header {
            len: payload.len() as u32,
            ..hdr
        };
        let a = Self::alloc(&self.tx_next, HDR_SIZE as u32);
        self.q
            .tx
            .mem
            .write_slice(&hdr.to_bytes(), GuestAddress(a))
            .unwrap();
        if payload.is_empty() {
            self.q.tx.add_chain(&[(a, HDR_SIZE as u32, false)]);
        } else {
            let b = Self::alloc(&self.tx_next, payload.len() as u32);
            self.q.tx.mem.write_slice(payload, GuestAddress(b)).unwrap();
            self.q.tx.add_chain(&[
                (a, HDR_SIZE as u32, false),
                (b, payload.len() as u32, false),
            ]);
        }
        self.dev.process_queues();
    }

    /// The guest posts `n` receive buffers.
    fn post_rx(&mut self, n: usize) {
        for _ in 0..n {
            let at = Self::alloc(&self.rx_next, RX_BUF_SIZE);
            self.rx_heads.insert(self.rx_posted % 256, at);
            self.rx_posted = self.rx_posted.wrapping_add(1);
            self.q.rx.add_chain(&[(at, RX_BUF_SIZE, true)]);
        }
        self.dev.process_queues();
    }

    /// Host sockets are all ready as far as the device knows; what it closed
    /// is dropped.
    fn poll(&mut self) {
        for _ in 0..3 {
            for (fd, _) in self.dev.muxer.interest() {
                self.dev.muxer.handle_host_event(fd, true, true);
            }
            self.dev.process_queues();
        }
        drop(self.dev.muxer.take_graveyard());
    }

    /// Packets the device put in receive buffers since the last call.
    fn received(&mut self) -> Vec<(Header, Vec<u8>)> {
        let used = self.q.rx.used();
        let new = used[self.rx_seen..].to_vec();
        self.rx_seen = used.len();
        new.into_iter()
            .map(|(head, len)| {
                let at = self.rx_heads[&head];
                let bytes = self.q.tx.read(at, len as usize);
                let hdr = Header::from_bytes(&bytes).unwrap();
                assert_eq!(len as usize, HDR_SIZE + hdr.len as usize);
                (hdr, bytes[HDR_SIZE..].to_vec())
            })
            .collect()
    }

    fn host_connect(&mut self, port: u32) -> UnixStream {
        let mut client = UnixStream::connect(&self.path).unwrap();
        writeln!(client, "CONNECT {port}").unwrap();
        self.poll();
        client
    }
}

fn guest_hdr(op: u16, src_port: u32, dst_port: u32) -> Header {
    Header {
        src_cid: CID,
        dst_cid: HOST_CID,
        src_port,
        dst_port,
        len: 0,
        type_: TYPE_STREAM,
        op,
        flags: 0,
        buf_alloc: 4096,
        fwd_cnt: 0,
    }
}

fn read_available(s: &mut UnixStream) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) => panic!("{e}"),
        }
    }
    out
}

/// After an `expire` past a deadline: exactly one RST reached the guest,
/// the connection is gone, and it was counted as a timeout.
fn assert_timed_out_with_rst(h: &mut Harness) {
    h.poll();
    let pkts = h.received();
    assert_eq!(pkts.len(), 1);
    assert_eq!(pkts[0].0.op, op::RST);
    assert_eq!(h.dev.connection_count(), 0);
    assert_eq!(h.dev.counters().timeouts, 1);
}

fn is_closed(s: &mut UnixStream) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    matches!(s.read(&mut [0u8; 16]), Ok(0) | Err(_))
        && !matches!(s.read(&mut [0u8; 1]), Err(e) if e.kind() == ErrorKind::WouldBlock)
}

/// A host client connected through to guest port 1024; returns the client
/// and the host port.
fn established(h: &mut Harness) -> (UnixStream, u32) {
    let mut client = h.host_connect(1024);
    h.post_rx(8);
    let pkts = h.received();
    assert_eq!(pkts.len(), 1);
    let req = pkts[0].0;
    assert_eq!(
        (req.op, req.src_cid, req.dst_cid, req.dst_port),
        (op::REQUEST, HOST_CID, CID, 1024)
    );
    assert_eq!(req.buf_alloc, BUF_ALLOC);
    h.send(guest_hdr(op::RESPONSE, 1024, req.src_port), &[]);
    let line = read_available(&mut client);
    assert_eq!(line, format!("OK {}\n", req.src_port).as_bytes());
    (client, req.src_port)
}

#[test]
fn config_space_holds_the_guest_cid() {
    let path = temp_uds_path("vsock-test");
    let mut dev = Vsock::new(0x1122_3344_5566_7788, &path).unwrap();
    let mut all = [0u8; 8];
    dev.read_config(0, &mut all);
    assert_eq!(u64::from_le_bytes(all), 0x1122_3344_5566_7788);
    let mut two = [0u8; 2];
    dev.read_config(3, &mut two);
    assert_eq!(two, [0x55, 0x44]);
    let mut past = [0xffu8; 4];
    dev.read_config(6, &mut past);
    assert_eq!(past, [0x22, 0x11, 0, 0]);
    dev.read_config(u64::MAX, &mut past);
    assert_eq!(past, [0; 4]);
    dev.write_config(0, &[1, 2, 3, 4]);
    dev.read_config(0, &mut all);
    assert_eq!(u64::from_le_bytes(all), 0x1122_3344_5566_7788);
    assert_eq!(
        dev.device_type(),
        crate::devices::virtio::device_type::VSOCK
    );
    assert_eq!(dev.queue_max_sizes(), &[256, 256, 256]);
    assert_eq!(dev.avail_features(), 0);
    assert!(path.exists());
    drop(dev);
    assert!(!path.exists(), "the socket is removed on drop");
}

#[test]
fn host_connect_handshake_and_data_both_ways() {
    let mut h = Harness::new();
    let (mut client, port) = established(&mut h);
    assert_eq!(port, FIRST_LOCAL_PORT);
    assert_eq!(h.dev.counters().connections, 1);

    client.write_all(b"hello").unwrap();
    h.poll();
    let pkts = h.received();
    assert_eq!(pkts.len(), 1);
    let (hdr, data) = &pkts[0];
    assert_eq!((hdr.op, hdr.src_port, hdr.dst_port), (op::RW, port, 1024));
    assert_eq!(data, b"hello");
    assert_eq!(h.q.tx.irq_status() & interrupt::VRING, interrupt::VRING);

    h.send(
        Header {
            fwd_cnt: 5,
            ..guest_hdr(op::RW, 1024, port)
        },
        b"world",
    );
    assert_eq!(read_available(&mut client), b"world");

    // Host end of file: the guest hears SHUTDOWN(SEND).
    client.shutdown(std::net::Shutdown::Write).unwrap();
    h.poll();
    let pkts = h.received();
    assert_eq!(pkts.len(), 1);
    assert_eq!(
        (pkts[0].0.op, pkts[0].0.flags),
        (op::SHUTDOWN, shutdown::SEND)
    );
    assert_eq!(pkts[0].0.fwd_cnt, 5, "every packet carries fwd_cnt");

    // A full guest shutdown closes the stream and gets an RST back.
    h.send(
        Header {
            flags: shutdown::BOTH,
            ..guest_hdr(op::SHUTDOWN, 1024, port)
        },
        &[],
    );
    h.poll();
    let pkts = h.received();
    assert_eq!(pkts.len(), 1);
    assert_eq!(pkts[0].0.op, op::RST);
    assert_eq!(h.dev.connection_count(), 0);
    assert!(is_closed(&mut client));
}

#[test]
fn the_device_never_exceeds_the_guests_credit() {
    let mut h = Harness::new();
    let (mut client, port) = established(&mut h);
    client.write_all(&[7u8; 10_000]).unwrap();
    h.post_rx(32);
    h.poll();
    let pkts = h.received();
    let sent: usize = pkts
        .iter()
        .filter(|(p, _)| p.op == op::RW)
        .map(|(_, d)| d.len())
        .sum();
    assert_eq!(sent, 4096, "the guest offered 4096 bytes of buffer");
    assert_eq!(pkts.last().unwrap().0.op, op::CREDIT_REQUEST);
    assert_eq!(
        pkts.iter()
            .filter(|(p, _)| p.op == op::CREDIT_REQUEST)
            .count(),
        1
    );

    // The guest consumed 1000 bytes: 1000 more may come.
    h.send(
        Header {
            fwd_cnt: 1000,
            ..guest_hdr(op::CREDIT_UPDATE, 1024, port)
        },
        &[],
    );
    h.poll();
    let sent: usize = h.received().iter().map(|(_, d)| d.len()).sum();
    assert_eq!(sent, 1000);

    // A big buffer lets the rest through.
    h.send(
        Header {
            fwd_cnt: 5096,
            buf_alloc: 1 << 20,
            ..guest_hdr(op::CREDIT_UPDATE, 1024, port)
        },
        &[],
    );
    h.poll();
    let sent: usize = h.received().iter().map(|(_, d)| d.len()).sum();
    assert_eq!(sent, 10_000 - 5096);
}

#[test]
fn credit_request_gets_a_credit_update_and_forwarding_sends_updates() {
    let mut h = Harness::new();
    let (mut client, port) = established(&mut h);
    h.send(guest_hdr(op::CREDIT_REQUEST, 1024, port), &[]);
    let pkts = h.received();
    assert_eq!(pkts.len(), 1);
    assert_eq!(
        (pkts[0].0.op, pkts[0].0.buf_alloc, pkts[0].0.fwd_cnt),
        (op::CREDIT_UPDATE, BUF_ALLOC, 0)
    );

    // Forwarding half the buffer to the host tells the guest.
    let chunk = vec![1u8; 64 * 1024];
    for _ in 0..2 {
        h.send(guest_hdr(op::RW, 1024, port), &chunk);
        let mut got = 0;
        while got < chunk.len() {
            got += read_available(&mut client).len();
            h.poll();
        }
    }
    h.post_rx(4);
    h.poll();
    let pkts = h.received();
    assert!(
        pkts.iter()
            .any(|(p, _)| p.op == op::CREDIT_UPDATE && p.fwd_cnt == 128 * 1024),
        "{pkts:?}"
    );
}

#[test]
fn guest_data_over_the_advertised_credit_resets() {
    let mut h = Harness::new();
    let (_client, port) = established(&mut h);
    // The client never reads: the socket buffer fills, then ours.
    let chunk = vec![2u8; 64 * 1024];
    for _ in 0..16 {
        h.send(guest_hdr(op::RW, 1024, port), &chunk);
        if h.dev.connection_count() == 0 {
            break;
        }
    }
    assert_eq!(h.dev.connection_count(), 0);
    let pkts = h.received();
    assert_eq!(pkts.last().unwrap().0.op, op::RST);
}

#[test]
fn unknown_connections_get_rst() {
    let mut h = Harness::new();
    h.post_rx(4);
    h.send(guest_hdr(op::RW, 77, 88), b"data");
    let pkts = h.received();
    assert_eq!(pkts.len(), 1);
    let rst = pkts[0].0;
    assert_eq!(
        (rst.op, rst.src_cid, rst.dst_cid, rst.src_port, rst.dst_port),
        (op::RST, HOST_CID, CID, 88, 77)
    );
    h.send(guest_hdr(op::RST, 77, 88), &[]);
    h.send(guest_hdr(op::CREDIT_UPDATE, 77, 88), &[]);
    let pkts = h.received();
    assert_eq!(pkts.len(), 1, "no RST for an RST");
    assert_eq!(h.dev.counters().rst_sent, 2);
}

#[test]
fn guest_connects_to_host_sockets() {
    let mut h = Harness::new();
    let mut listen_path = h.path.clone().into_os_string();
    listen_path.push("_52");
    let listener = UnixListener::bind(&listen_path).unwrap();
    h.post_rx(8);

    h.send(guest_hdr(op::REQUEST, 5000, 52), &[]);
    let pkts = h.received();
    assert_eq!(pkts.len(), 1);
    assert_eq!(
        (pkts[0].0.op, pkts[0].0.src_port, pkts[0].0.dst_port),
        (op::RESPONSE, 52, 5000)
    );
    let (mut server, _) = listener.accept().unwrap();
    h.send(guest_hdr(op::RW, 5000, 52), b"ping");
    assert_eq!(read_available(&mut server), b"ping");
    server.write_all(b"pong").unwrap();
    h.poll();
    let pkts = h.received();
    assert_eq!(pkts[0].1, b"pong");

    // Nobody listens on port 53.
    h.send(guest_hdr(op::REQUEST, 5001, 53), &[]);
    let pkts = h.received();
    assert_eq!(
        (pkts[0].0.op, pkts[0].0.src_port, pkts[0].0.dst_port),
        (op::RST, 53, 5001)
    );
    assert_eq!(h.dev.counters().connect_failures, 1);

    // The guest resets: the host stream closes.
    h.send(guest_hdr(op::RST, 5000, 52), &[]);
    h.poll();
    assert!(is_closed(&mut server));
    let _ = std::fs::remove_file(&listen_path);
}

#[test]
fn refused_timed_out_and_garbage_host_connects_close_the_client() {
    let mut h = Harness::new();
    h.post_rx(8);
    let mut refused = h.host_connect(1);
    let req = h.received()[0].0;
    h.send(guest_hdr(op::RST, 1, req.src_port), &[]);
    h.poll();
    assert!(is_closed(&mut refused));

    let mut late = h.host_connect(2);
    let req = h.received()[0].0;
    assert_ne!(req.src_port, FIRST_LOCAL_PORT, "host ports are unique");
    h.dev.muxer.expire(Instant::now() + CONNECT_TIMEOUT * 2);
    h.poll();
    assert!(is_closed(&mut late));
    assert_eq!(h.received()[0].0.op, op::RST);
    assert_eq!(h.dev.counters().timeouts, 1);

    let mut garbage = UnixStream::connect(&h.path).unwrap();
    garbage.write_all(b"HELLO there\n").unwrap();
    h.poll();
    assert!(is_closed(&mut garbage));
    let mut long = UnixStream::connect(&h.path).unwrap();
    long.write_all(&[b'9'; 100]).unwrap();
    h.poll();
    assert!(is_closed(&mut long));
    assert_eq!(h.dev.counters().bad_connect_lines, 2);
    assert_eq!(h.dev.connection_count(), 0);
    assert!(h.received().is_empty());
}

#[test]
fn bad_transmit_chains_are_dropped_and_counted() {
    let mut h = Harness::new();
    h.post_rx(4);
    let good = guest_hdr(op::RW, 1, 2).to_bytes();
    h.q.tx
        .mem
        .write_slice(&good, GuestAddress(0x300_000))
        .unwrap();
    // A write-only descriptor, memory past the end, a short header, a header
    // split over two descriptors (good: an RST comes back).
    h.q.tx.add_chain(&[(0x300_000, 44, true)]);
    h.q.tx.add_chain(&[(0xfff_f000, 0x2000, false)]);
    h.q.tx.add_chain(&[(0x300_000, 43, false)]);
    h.q.tx
        .add_chain(&[(0x300_000, 20, false), (0x300_014, 24, false)]);
    h.dev.process_queues();
    assert_eq!(h.q.tx.used(), vec![(0, 0), (1, 0), (2, 0), (3, 0)]);
    let c = h.dev.counters();
    assert_eq!((c.tx_chains, c.bad_packets, c.tx_packets), (4, 3, 1));
    let pkts = h.received();
    assert_eq!(pkts.len(), 1);
    assert_eq!(pkts[0].0.op, op::RST);
}

#[test]
fn transport_reset_uses_an_event_buffer() {
    let mut h = Harness::new();
    assert!(!h.dev.send_transport_reset(), "no event buffer yet");
    h.q.tx
        .mem
        .write_slice(&[0xffu8; 4], GuestAddress(0x700_000))
        .unwrap();
    h.q.event.add_chain(&[(0x700_000, 4, true)]);
    assert!(h.dev.send_transport_reset());
    assert_eq!(h.q.event.used(), vec![(0, 4)]);
    assert_eq!(h.q.tx.read(0x700_000, 4), vec![0, 0, 0, 0]);
    assert_eq!(h.q.tx.irq_status() & interrupt::VRING, interrupt::VRING);
}

#[test]
fn reset_closes_connections() {
    let mut h = Harness::new();
    let (mut client, _) = established(&mut h);
    h.dev.reset();
    assert!(!h.dev.is_active());
    drop(h.dev.muxer.take_graveyard());
    assert!(is_closed(&mut client));
    assert!(matches!(h.dev.activate(h.q.activation()), Ok(())));
}

#[test]
fn an_undelivered_request_is_taken_back_on_timeout() {
    let mut h = Harness::new();
    let mut client = h.host_connect(5);
    h.dev.muxer.expire(Instant::now() + CONNECT_TIMEOUT * 2);
    h.poll();
    assert!(is_closed(&mut client));
    h.post_rx(4);
    assert!(h.received().is_empty(), "neither the REQUEST nor an RST");
    assert_eq!(h.dev.counters().rst_sent, 0);
}

#[test]
fn fuzz_driver_takes_a_valid_packet() {
    // Queue size 1; one descriptor at 0x10000 holding a header and 3 bytes.
    let mut data = vec![0u8];
    data.extend_from_slice(&0x10_000u64.to_le_bytes());
    data.extend_from_slice(&(HDR_SIZE as u32 + 3).to_le_bytes());
    data.extend_from_slice(&[0, 0, 0, 0]); // flags, next
    data.extend_from_slice(&[0, 0]); // head 0
    let hdr = Header {
        len: 3,
        ..guest_hdr(op::RW, 1, 2)
    };
    data.extend_from_slice(&hdr.to_bytes());
    data.extend_from_slice(b"abc");
    crate::devices::virtio::test_utils::fuzz_vsock_tx(&data);
}

#[test]
fn guest_connect_to_a_full_backlog_gets_rst_without_blocking() {
    let mut h = Harness::new();
    let mut listen_path = h.path.clone().into_os_string();
    listen_path.push("_60");
    let listener = UnixListener::bind(&listen_path).unwrap();
    // SAFETY: listen(2) on a socket the listener owns; listening again only
    // changes the backlog.
    assert_eq!(unsafe { libc::listen(listener.as_raw_fd(), 0) }, 0);
    let mut queued = Vec::new();
    loop {
        match connect_nonblocking(&listen_path) {
            Ok(s) => queued.push(s),
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::EAGAIN), "{e}");
                break;
            }
        }
        assert!(queued.len() < 64, "the backlog never filled");
    }
    h.post_rx(4);

    // A blocking connect would hang here for good.
    let start = Instant::now();
    h.send(guest_hdr(op::REQUEST, 5000, 60), &[]);
    assert!(start.elapsed() < Duration::from_secs(1));
    let pkts = h.received();
    assert_eq!(pkts.len(), 1);
    assert_eq!(
        (pkts[0].0.op, pkts[0].0.src_port, pkts[0].0.dst_port),
        (op::RST, 60, 5000)
    );
    assert_eq!(h.dev.counters().connect_failures, 1);
    assert_eq!(h.dev.connection_count(), 0);

    // Once the server accepts, the backlog has room and connects succeed.
    listener.set_nonblocking(true).unwrap();
    while listener.accept().is_ok() {}
    h.send(guest_hdr(op::REQUEST, 5001, 60), &[]);
    let pkts = h.received();
    assert_eq!(pkts.len(), 1);
    assert_eq!(pkts[0].0.op, op::RESPONSE);
    assert!(listener.accept().is_ok());
    drop(queued);
    let _ = std::fs::remove_file(&listen_path);
}

#[test]
fn guest_connect_to_a_path_too_long_for_a_socket_gets_rst() {
    let dir = std::env::temp_dir();
    let prefix = format!("vessel-vsock-long-{}-", std::process::id());
    // The device's own socket fits `sun_path` (107 bytes and a NUL);
    // `<path>_4000000000` does not.
    let Some(pad) = 100usize.checked_sub(dir.as_os_str().len() + 1 + prefix.len()) else {
        eprintln!("skipped: the temporary directory's path is too long");
        return;
    };
    let mut h = Harness::with_path(dir.join(format!("{prefix}{}", "x".repeat(pad))));
    h.post_rx(4);
    h.send(guest_hdr(op::REQUEST, 5000, 4_000_000_000), &[]);
    let pkts = h.received();
    assert_eq!(pkts.len(), 1);
    assert_eq!(
        (pkts[0].0.op, pkts[0].0.src_port, pkts[0].0.dst_port),
        (op::RST, 4_000_000_000, 5000)
    );
    assert_eq!(h.dev.counters().connect_failures, 1);
    assert_eq!(h.dev.connection_count(), 0);
}

#[test]
fn a_credit_update_granting_nothing_does_not_repeat_the_credit_request() {
    let mut h = Harness::new();
    let (mut client, port) = established(&mut h);
    client.write_all(&[7u8; 10_000]).unwrap();
    h.post_rx(32);
    h.poll();
    let pkts = h.received();
    assert_eq!(pkts.last().unwrap().0.op, op::CREDIT_REQUEST);

    // The guest application does not read: answers grant nothing, and must
    // not start a CREDIT_REQUEST / CREDIT_UPDATE ping-pong.
    for _ in 0..3 {
        h.send(guest_hdr(op::CREDIT_UPDATE, 1024, port), &[]);
        h.poll();
        assert!(h.received().is_empty());
    }

    // Credit at last: data flows, and one new request follows it.
    h.send(
        Header {
            fwd_cnt: 4096,
            ..guest_hdr(op::CREDIT_UPDATE, 1024, port)
        },
        &[],
    );
    h.poll();
    let pkts = h.received();
    let sent: usize = pkts.iter().map(|(_, d)| d.len()).sum();
    assert_eq!(sent, 4096);
    assert_eq!(
        pkts.iter()
            .filter(|(p, _)| p.op == op::CREDIT_REQUEST)
            .count(),
        1
    );
}

/// The guest writes until the host stream (whose client does not read yet)
/// leaves bytes in the device's buffer; returns everything written.
fn fill_host_stream(h: &mut Harness, port: u32) -> Vec<u8> {
    let mut sent = Vec::new();
    for i in 0..16u8 {
        let chunk = vec![i; 64 * 1024];
        h.send(guest_hdr(op::RW, 1024, port), &chunk);
        sent.extend_from_slice(&chunk);
        if h.dev.muxer.queued_to_host() > 0 {
            // Only CREDIT_UPDATEs for what was forwarded came back.
            assert!(h.received().iter().all(|(p, _)| p.op == op::CREDIT_UPDATE));
            return sent;
        }
    }
    panic!("the host stream took everything");
}

#[test]
fn a_full_guest_shutdown_delivers_buffered_bytes_before_the_rst() {
    let mut h = Harness::new();
    let (mut client, port) = established(&mut h);
    h.post_rx(4);
    let sent = fill_host_stream(&mut h, port);
    h.send(
        Header {
            flags: shutdown::BOTH,
            ..guest_hdr(op::SHUTDOWN, 1024, port)
        },
        &[],
    );
    h.poll();
    assert!(h.received().is_empty(), "no RST while bytes wait");
    assert_eq!(h.dev.connection_count(), 1);
    assert!(h.dev.muxer.next_deadline().is_some());
    // Data after the shutdown is not taken; a credit update is harmless.
    h.send(guest_hdr(op::CREDIT_UPDATE, 1024, port), &[]);
    assert_eq!(h.dev.connection_count(), 1);

    client.set_nonblocking(true).unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut eof = false;
    for _ in 0..100_000 {
        match client.read(&mut buf) {
            Ok(0) => {
                eof = true;
                break;
            }
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => h.poll(),
            Err(e) => panic!("{e}"),
        }
    }
    assert!(eof, "the host stream gets its end of file");
    assert_eq!(got.len(), sent.len());
    assert!(got == sent, "every byte, in order");
    h.poll();
    let pkts = h.received();
    assert_eq!(pkts.len(), 1);
    assert_eq!(pkts[0].0.op, op::RST);
    assert_eq!(h.dev.connection_count(), 0);
    assert!(h.dev.muxer.next_deadline().is_none());
}

#[test]
fn a_closing_connection_the_host_does_not_drain_is_reset_after_a_while() {
    let mut h = Harness::new();
    let (mut client, port) = established(&mut h);
    h.post_rx(4);
    fill_host_stream(&mut h, port);
    h.send(
        Header {
            flags: shutdown::BOTH,
            ..guest_hdr(op::SHUTDOWN, 1024, port)
        },
        &[],
    );
    h.poll();
    h.dev.muxer.expire(Instant::now() + CLOSE_TIMEOUT / 2);
    assert_eq!(h.dev.connection_count(), 1);
    h.dev.muxer.expire(Instant::now() + CLOSE_TIMEOUT * 2);
    assert_timed_out_with_rst(&mut h);
    drop(read_available(&mut client));
    assert!(is_closed(&mut client));
}

#[test]
fn a_half_closed_connection_the_guest_leaves_idle_is_reset() {
    let mut h = Harness::new();
    let (mut client, port) = established(&mut h);
    assert!(h.dev.muxer.next_deadline().is_none());
    client.shutdown(std::net::Shutdown::Write).unwrap();
    h.poll();
    let pkts = h.received();
    assert_eq!(pkts.len(), 1);
    assert_eq!(
        (pkts[0].0.op, pkts[0].0.flags),
        (op::SHUTDOWN, shutdown::SEND)
    );
    let first = h
        .dev
        .muxer
        .next_deadline()
        .expect("a deadline after host EOF");

    // The guest still sends what the host takes: the timeout restarts.
    std::thread::sleep(Duration::from_millis(5));
    h.send(guest_hdr(op::RW, 1024, port), b"late reply");
    assert_eq!(read_available(&mut client), b"late reply");
    let second = h.dev.muxer.next_deadline().unwrap();
    assert!(second > first);
    h.dev.muxer.expire(Instant::now() + HALF_CLOSED_TIMEOUT / 2);
    assert_eq!(h.dev.connection_count(), 1);

    // Then nothing: the connection does not linger.
    h.dev.muxer.expire(Instant::now() + HALF_CLOSED_TIMEOUT * 2);
    assert_timed_out_with_rst(&mut h);
    assert!(is_closed(&mut client));
}

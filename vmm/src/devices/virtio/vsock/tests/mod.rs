//! virtio-vsock end to end without KVM: a driver-side view of the queues and
//! real unix sockets on the host side.
//!
//! This file holds the [`Harness`] (a device over [`VsockQueues`], the
//! guest's side of its queues) and what several topics share; the tests are
//! by topic: the device itself, host-initiated and guest-initiated
//! connections, credit, closing connections, and a restored device.

use std::cell::Cell;
use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use vm_memory::{Bytes, GuestAddress};

use super::connection::BUF_ALLOC;
use super::packet::{op, Header, HDR_SIZE, HOST_CID, TYPE_STREAM};
use super::test_utils::{temp_uds_path, VsockQueues};
use super::Vsock;
use crate::devices::virtio::VirtioDevice;

mod closing;
mod credit;
mod device;
mod guest_connect;
mod host_connect;
mod restore;

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

//! Connections a host client asks for with `CONNECT <port>`: the
//! handshake and data both ways, and the clients that are refused, time
//! out or send garbage.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::Instant;

use super::{established, guest_hdr, is_closed, read_available, Harness};
use crate::devices::virtio::interrupt;
use crate::devices::virtio::vsock::muxer::{CONNECT_TIMEOUT, FIRST_LOCAL_PORT};
use crate::devices::virtio::vsock::packet::{op, shutdown, Header};

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

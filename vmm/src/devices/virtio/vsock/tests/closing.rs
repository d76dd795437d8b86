//! Connections winding down: a full guest shutdown hands the host its
//! last bytes before the RST, and connections that make no progress while
//! closing or half closed are reset after a while.

use std::io::{ErrorKind, Read};
use std::time::{Duration, Instant};

use super::{established, guest_hdr, is_closed, read_available, Harness};
use crate::devices::virtio::vsock::muxer::{CLOSE_TIMEOUT, HALF_CLOSED_TIMEOUT};
use crate::devices::virtio::vsock::packet::{op, shutdown, Header};

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

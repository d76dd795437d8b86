//! Flow control: the device keeps within the guest's credit, asks for more
//! and tells the guest about its own, and resets a guest that overruns it.

use std::io::Write;

use super::{established, guest_hdr, read_available, Harness};
use crate::devices::virtio::vsock::connection::BUF_ALLOC;
use crate::devices::virtio::vsock::packet::{op, Header};

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

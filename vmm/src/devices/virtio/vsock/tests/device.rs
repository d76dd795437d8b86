//! The device itself: its config space, transmit chains it cannot take,
//! TRANSPORT_RESET, a driver reset, and the fuzz driver.

use vm_memory::{Bytes, GuestAddress};

use super::{established, guest_hdr, is_closed, Harness};
use crate::devices::virtio::vsock::packet::{op, Header, HDR_SIZE};
use crate::devices::virtio::vsock::test_utils::{fuzz_vsock_tx, temp_uds_path};
use crate::devices::virtio::vsock::Vsock;
use crate::devices::virtio::{interrupt, VirtioDevice};

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
    fuzz_vsock_tx(&data);
}

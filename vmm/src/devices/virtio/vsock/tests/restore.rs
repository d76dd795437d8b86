//! After a restore: TRANSPORT_RESET goes to the guest, and host clients
//! wait until the guest has taken it.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::Instant;

use crate::devices::virtio::vsock::device::RESET_TIMEOUT;
use crate::devices::virtio::vsock::test_utils::{temp_uds_path, VsockQueues};
use crate::devices::virtio::vsock::Vsock;
use crate::devices::virtio::VirtioDevice;

/// An active device whose guest posted `event_buffers` event buffers, and
/// its socket path.
fn restored_device(event_buffers: u64) -> (VsockQueues, Vsock, std::path::PathBuf) {
    let q = VsockQueues::new(256);
    let path = temp_uds_path("vsock-restore");
    let mut dev = Vsock::new(3, &path).unwrap();
    dev.activate(q.activation()).unwrap();
    for i in 0..event_buffers {
        q.event.add_chain(&[(0x700_000 + 0x100 * i, 4, true)]);
    }
    dev.restored();
    (q, dev, path)
}

fn listener_watched(dev: &Vsock) -> bool {
    let listener = dev.muxer.listener_fd();
    dev.muxer.interest().iter().any(|&(fd, _)| fd == listener)
}

/// A host client that connects and asks for guest port 1024.
fn client(path: &std::path::Path) -> UnixStream {
    let mut client = UnixStream::connect(path).unwrap();
    client.write_all(b"CONNECT 1024\n").unwrap();
    client
}

#[test]
fn host_clients_wait_until_the_guest_took_its_transport_reset() {
    let (q, mut dev, path) = restored_device(2);
    assert_eq!(q.event.used(), vec![(0, 4)], "the reset went out");
    assert!(!dev.muxer.accepting);
    assert!(!listener_watched(&dev));

    let _client = client(&path);
    let listener = dev.muxer.listener_fd();
    dev.muxer.handle_host_event(listener, true, false);
    dev.check_reset_taken(Instant::now());
    assert!(
        !dev.muxer.has_rx(),
        "a REQUEST went to a guest still resetting"
    );
    assert!(!dev.muxer.accepting);

    // The guest handled the event and posted its buffer again.
    q.event.add_chain(&[(0x700_000, 4, true)]);
    dev.check_reset_taken(Instant::now());
    assert!(dev.muxer.accepting);
    assert!(listener_watched(&dev));
    dev.muxer.handle_host_event(listener, true, false);
    assert!(dev.muxer.has_rx(), "the waiting client's REQUEST");
    assert_eq!(dev.reset_deadline(), None);
}

#[test]
fn a_guest_that_never_takes_the_reset_is_served_after_the_timeout() {
    let (_q, mut dev, _path) = restored_device(1);
    let deadline = dev.reset_deadline().unwrap();
    assert!(deadline <= Instant::now() + RESET_TIMEOUT);
    dev.check_reset_taken(deadline - RESET_TIMEOUT / 2);
    assert!(!dev.muxer.accepting);
    dev.check_reset_taken(deadline);
    assert!(dev.muxer.accepting);
}

#[test]
fn without_an_event_buffer_nothing_is_sent_and_nobody_waits() {
    let (q, dev, _path) = restored_device(0);
    assert!(q.event.used().is_empty());
    assert!(dev.muxer.accepting);
    assert_eq!(dev.reset_deadline(), None);
}

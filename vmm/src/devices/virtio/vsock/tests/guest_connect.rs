//! Connections the guest asks for, to the host socket `<uds_path>_<port>`,
//! and packets for connections that do not exist.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use super::{guest_hdr, is_closed, read_available, Harness, CID};
use crate::devices::virtio::vsock::packet::{op, HOST_CID};
use crate::devices::virtio::vsock::unix::connect_nonblocking;

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

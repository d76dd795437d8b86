//! vsock modes of the test init, chosen on the kernel command line instead
//! of the probes:
//! - `vessel.test=vsock-sink`: serve one throughput run on port 5000 for the
//!   benchmark;
//! - `vessel.test=vsock-dial`: connect to the host (CID 2) on port 5001, send
//!   `hello from the guest\n` and report the line the host answers.
//!
//! The sink protocol:
//! The host sends an 8-byte little-endian length N, then N bytes; the guest
//! reads them all, answers with the 8-byte count it read and the 8-byte
//! FNV-1a hash of the bytes, then sends N bytes
//! back and closes. Times are taken on the host.

use std::io::{Read, Write};
use std::os::fd::FromRawFd;

use crate::sys::{check, SysResult};

/// FNV-1a (64-bit) over the bytes the sink received: the host checks that
/// nothing was lost, reordered or changed on the way.
pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// Folds `bytes` into an FNV-1a hash.
pub fn fnv1a(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The vsock port the sink listens on.
pub const PORT: u32 = 5000;

/// The host port `vessel.test=vsock-dial` connects to.
pub const DIAL_PORT: u32 = 5001;

/// Which vsock mode the kernel command line asks for, if any.
pub fn requested_mode() -> Option<String> {
    let cmdline = std::fs::read_to_string("/proc/cmdline").ok()?;
    cmdline
        .split_whitespace()
        .find_map(|a| a.strip_prefix("vessel.test="))
        .map(str::to_string)
}

/// Connects to the host, says hello and returns the host's one-line answer.
pub fn dial() -> SysResult<String> {
    // SAFETY: plain socket creation.
    let fd = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    let fd = check(fd.into(), "socket(AF_VSOCK)")? as libc::c_int;
    // SAFETY: fd is a fresh socket this File now owns (and closes).
    let mut stream = unsafe { std::fs::File::from_raw_fd(fd) };
    // SAFETY: sockaddr_vm is plain data; all-zero is a valid value.
    let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    addr.svm_port = DIAL_PORT;
    addr.svm_cid = libc::VMADDR_CID_HOST;
    let len = std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t;
    // SAFETY: addr is a valid sockaddr_vm of len bytes.
    let ret = unsafe { libc::connect(fd, (&addr as *const libc::sockaddr_vm).cast(), len) };
    check(ret.into(), "connect to the host")?;
    stream
        .write_all(b"hello from the guest\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while reply.len() < 128 {
        match stream.read(&mut byte) {
            Ok(0) => break,
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => reply.push(byte[0]),
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    Ok(String::from_utf8_lossy(&reply).into_owned())
}

/// Serves one run; returns the byte count.
pub fn serve() -> SysResult<u64> {
    // SAFETY: plain socket creation.
    let listener =
        unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    let listener = check(listener.into(), "socket(AF_VSOCK)")? as libc::c_int;
    // SAFETY: sockaddr_vm is plain data; all-zero is a valid value.
    let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    addr.svm_port = PORT;
    addr.svm_cid = libc::VMADDR_CID_ANY;
    let len = std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t;
    // SAFETY: addr is a valid sockaddr_vm of len bytes.
    let ret = unsafe { libc::bind(listener, (&addr as *const libc::sockaddr_vm).cast(), len) };
    check(ret.into(), "bind vsock")?;
    // SAFETY: listener is a bound socket.
    check(unsafe { libc::listen(listener, 1) }.into(), "listen vsock")?;
    println!("VESSEL-VSOCK-SINK-READY port={PORT}");
    // SAFETY: listener is a listening socket; no address is asked for.
    let conn = unsafe { libc::accept(listener, std::ptr::null_mut(), std::ptr::null_mut()) };
    let conn = check(conn.into(), "accept vsock")? as libc::c_int;
    // SAFETY: conn is a freshly accepted socket this File now owns.
    let mut stream = unsafe { std::fs::File::from_raw_fd(conn) };
    let mut header = [0u8; 8];
    stream
        .read_exact(&mut header)
        .map_err(|e| format!("read length: {e}"))?;
    let total = u64::from_le_bytes(header);
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0u64;
    let mut hash = FNV_OFFSET;
    while got < total {
        let n = stream
            .read(&mut buf)
            .map_err(|e| format!("read payload: {e}"))?;
        if n == 0 {
            break;
        }
        hash = fnv1a(hash, &buf[..n]);
        got += n as u64;
    }
    stream
        .write_all(&got.to_le_bytes())
        .map_err(|e| format!("write count: {e}"))?;
    stream
        .write_all(&hash.to_le_bytes())
        .map_err(|e| format!("write hash: {e}"))?;
    buf.fill(0x5a);
    let mut sent = 0u64;
    while sent < got {
        let n = (got - sent).min(buf.len() as u64) as usize;
        stream
            .write_all(&buf[..n])
            .map_err(|e| format!("write payload: {e}"))?;
        sent += n as u64;
    }
    crate::sys::close(listener);
    Ok(got)
}

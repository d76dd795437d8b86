//! The hybrid vsock handshake and the connect retry, against a fake VMM.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::{handshake, AgentClient, ClientError};

/// What the fake VMM does with one connection after reading `CONNECT`.
#[derive(Clone, Copy)]
enum Answer {
    Ok,
    Garbage,
    Close,
}

/// A fake VMM socket answering connection n with `answers[min(n, len-1)]`;
/// returns the socket path (kept alive by the tempdir) and a connection count.
fn fake_vmm(answers: Vec<Answer>) -> (tempfile::TempDir, std::path::PathBuf, Arc<AtomicUsize>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vsock.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let n = seen.fetch_add(1, Ordering::SeqCst);
            let mut line = String::new();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            if reader.read_line(&mut line).is_err() || line != "CONNECT 1024\n" {
                continue;
            }
            match answers[n.min(answers.len() - 1)] {
                Answer::Ok => {
                    let _ = stream.write_all(b"OK 1073741824\n");
                    // Keep the connection open for a while like a VMM would.
                    thread::spawn(move || {
                        thread::sleep(Duration::from_secs(2));
                        drop(stream);
                    });
                }
                Answer::Garbage => {
                    let _ = stream.write_all(b"NOPE\n");
                }
                Answer::Close => drop(stream),
            }
        }
    });
    (dir, path, count)
}

#[test]
fn handshake_ok_returns_host_port() {
    let (mut a, b) = UnixStream::pair().unwrap();
    let vmm = thread::spawn(move || {
        let mut line = String::new();
        BufReader::new(b.try_clone().unwrap())
            .read_line(&mut line)
            .unwrap();
        (&b).write_all(b"OK 52000\nrest").unwrap();
        line
    });
    assert_eq!(handshake(&mut a, 1024).unwrap(), 52000);
    assert_eq!(vmm.join().unwrap(), "CONNECT 1024\n");
    // Nothing past the line was consumed.
    let mut rest = [0u8; 4];
    std::io::Read::read_exact(&mut a, &mut rest).unwrap();
    assert_eq!(&rest, b"rest");
}

#[test]
fn handshake_garbage_and_eof_are_refusals() {
    for (reply, expect) in [(&b"ERR no listener\n"[..], "ERR no listener"), (b"", "")] {
        let (mut a, b) = UnixStream::pair().unwrap();
        let vmm = thread::spawn(move || {
            let mut line = String::new();
            BufReader::new(&b).read_line(&mut line).unwrap();
            (&b).write_all(reply).unwrap();
        });
        let result = handshake(&mut a, 1024);
        vmm.join().unwrap();
        match result {
            Err(ClientError::Handshake { reply }) => assert_eq!(reply, expect),
            other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
        }
    }
}

#[test]
fn connect_retries_until_ok() {
    let (_dir, path, count) = fake_vmm(vec![Answer::Close, Answer::Garbage, Answer::Ok]);
    let client = AgentClient::connect(&path, 1024, Duration::from_secs(5));
    assert!(client.is_ok(), "{:?}", client.err());
    assert_eq!(count.load(Ordering::SeqCst), 3);
}

#[test]
fn connect_times_out_with_last_refusal() {
    let (_dir, path, count) = fake_vmm(vec![Answer::Garbage]);
    let start = Instant::now();
    let err = AgentClient::connect(&path, 1024, Duration::from_millis(300)).err();
    let elapsed = start.elapsed();
    assert!(elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(3));
    match err {
        Some(ClientError::Timeout { waited, last }) => {
            assert!(waited >= Duration::from_millis(300));
            assert!(
                matches!(*last, ClientError::Handshake { ref reply } if reply == "NOPE"),
                "{last:?}"
            );
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(count.load(Ordering::SeqCst) >= 2, "it retried");
}

#[test]
fn connect_times_out_without_socket() {
    let dir = tempfile::tempdir().unwrap();
    let err = AgentClient::connect(dir.path().join("none"), 1024, Duration::from_millis(50)).err();
    match err {
        Some(ClientError::Timeout { last, .. }) => {
            assert!(
                matches!(*last, ClientError::ConnectSocket { .. }),
                "{last:?}"
            )
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
}

#[test]
fn error_messages_do_not_repeat_their_source() {
    let err = ClientError::Timeout {
        waited: Duration::from_millis(5),
        last: Box::new(ClientError::Handshake {
            reply: "NOPE".into(),
        }),
    };
    assert_eq!(err.to_string(), "the agent was not reachable after 5ms");
    let source = std::error::Error::source(&err).unwrap().to_string();
    assert_eq!(source, "the VMM refused CONNECT, replying \"NOPE\"");
}

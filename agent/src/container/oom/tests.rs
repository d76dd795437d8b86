//! The watcher on a real inotify, with a tempfile standing for
//! `memory.events`.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use super::{parse_events, Batch, OomWatcher};

/// Long enough for the thread to see a change on a loaded machine.
const EVENT: Duration = Duration::from_secs(10);
/// Long enough to believe nothing comes.
const QUIET: Duration = Duration::from_millis(300);

/// `memory.events` content; the same length for single digits, so rewrites
/// in place (no truncation, as the kernel's file changes) are one write.
fn events(oom_kill: u64, max: u64) -> String {
    format!("low 0\nhigh 0\nmax {max}\noom {oom_kill}\noom_kill {oom_kill}\noom_group_kill 0\n")
}

fn rewrite(path: &Path, text: &str) {
    let mut file = OpenOptions::new().write(true).open(path).unwrap();
    file.write_all(text.as_bytes()).unwrap();
}

fn memory_events(dir: &tempfile::TempDir, name: &str, oom_kill: u64) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, events(oom_kill, 0)).unwrap();
    path
}

#[test]
fn each_rise_is_one_event_other_changes_none_and_unwatch_stops_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = memory_events(&dir, "memory.events", 0);
    let watcher = Arc::new(OomWatcher::start().unwrap());
    watcher.watch("c1", &path, 0).unwrap();

    rewrite(&path, &events(1, 0));
    assert_eq!(watcher.next_timeout(EVENT).as_deref(), Some("c1"));
    assert_eq!(watcher.next_timeout(QUIET), None);

    // next() blocks until the second rise.
    let (tx, rx) = mpsc::channel();
    let waiter = {
        let watcher = Arc::clone(&watcher);
        std::thread::spawn(move || tx.send(watcher.next()).unwrap())
    };
    rewrite(&path, &events(2, 0));
    assert_eq!(rx.recv_timeout(EVENT).unwrap(), "c1");
    waiter.join().unwrap();

    // Another counter moves: no event.
    rewrite(&path, &events(2, 5));
    assert_eq!(watcher.next_timeout(QUIET), None);

    watcher.unwatch("c1");
    rewrite(&path, &events(3, 5));
    assert_eq!(watcher.next_timeout(QUIET), None);
    // Unwatching twice is fine.
    watcher.unwatch("c1");
}

#[test]
fn events_of_several_containers_queue_up() {
    let dir = tempfile::tempdir().unwrap();
    let a = memory_events(&dir, "a", 0);
    let b = memory_events(&dir, "b", 3);
    let watcher = OomWatcher::start().unwrap();
    watcher.watch("a", &a, 0).unwrap();
    // Watched with the count it has: only a rise above 3 counts.
    watcher.watch("b", &b, 3).unwrap();
    rewrite(&b, &events(3, 1));
    rewrite(&a, &events(1, 0));
    rewrite(&b, &events(4, 1));
    // Nobody took the events yet: they wait (in one batch, in the order of
    // each file's first change), one per container.
    std::thread::sleep(QUIET);
    let mut got: Vec<String> = (0..2).filter_map(|_| watcher.next_timeout(EVENT)).collect();
    got.sort();
    assert_eq!(got, ["a", "b"]);
    assert_eq!(watcher.next_timeout(QUIET), None);
}

#[test]
fn bad_content_is_no_event_and_no_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = memory_events(&dir, "memory.events", 0);
    let watcher = OomWatcher::start().unwrap();
    watcher.watch("c", &path, 0).unwrap();
    std::fs::write(&path, "oom_kill lots\n").unwrap();
    assert_eq!(watcher.next_timeout(QUIET), None);
    std::fs::write(&path, events(1, 0)).unwrap();
    assert_eq!(watcher.next_timeout(EVENT).as_deref(), Some("c"));
}

#[test]
fn watch_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = memory_events(&dir, "memory.events", 0);
    let watcher = OomWatcher::start().unwrap();
    let missing = dir.path().join("missing");
    assert_eq!(
        watcher.watch("c", &missing, 0).unwrap_err().kind(),
        std::io::ErrorKind::NotFound
    );
    watcher.watch("c", &path, 0).unwrap();
    // The same id again replaces its watch; another id on the same file is
    // refused.
    watcher.watch("c", &path, 0).unwrap();
    assert_eq!(
        watcher.watch("d", &path, 0).unwrap_err().kind(),
        std::io::ErrorKind::AlreadyExists
    );
    rewrite(&path, &events(1, 0));
    assert_eq!(watcher.next_timeout(EVENT).as_deref(), Some("c"));
}

/// One raw `inotify_event` with a `name_len`-byte name.
fn raw_event(wd: i32, mask: u32, name_len: u32) -> Vec<u8> {
    let mut raw = Vec::new();
    raw.extend_from_slice(&wd.to_ne_bytes());
    raw.extend_from_slice(&mask.to_ne_bytes());
    raw.extend_from_slice(&0u32.to_ne_bytes());
    raw.extend_from_slice(&name_len.to_ne_bytes());
    raw.resize(raw.len() + name_len as usize, 0);
    raw
}

#[test]
fn event_parsing() {
    let mut buf = raw_event(1, libc::IN_MODIFY, 0);
    buf.extend(raw_event(2, libc::IN_MODIFY, 16));
    buf.extend(raw_event(1, libc::IN_MODIFY, 0));
    buf.extend(raw_event(3, libc::IN_IGNORED, 0));
    // Truncated: dropped.
    buf.extend(&raw_event(4, libc::IN_MODIFY, 0)[..10]);
    assert_eq!(
        parse_events(&buf),
        Batch {
            modified: vec![1, 2],
            ignored: vec![3],
            overflow: false,
        }
    );
    let overflow = raw_event(-1, libc::IN_Q_OVERFLOW, 0);
    assert!(parse_events(&overflow).overflow);
    assert_eq!(parse_events(&[]), Batch::default());
}

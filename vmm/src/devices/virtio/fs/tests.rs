//! virtio-fs as a device: config space, activation, the event loop, and
//! malformed chains and requests from the guest.

use std::os::fd::AsRawFd;
use std::time::Duration;

use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use fuse_backend_rs::abi::fuse_abi::{ForgetIn, InHeader, Opcode, OutHeader};
use vm_memory::{ByteValued, Bytes, GuestAddress};

use super::device::{self, check_tag, CONFIG_LEN, NUM_QUEUES, QUEUE_SIZE};
use super::test_client::{decode, init_request, name, populate, request, FuseClient, ROOT};
use super::test_utils::FsQueues;
use super::{CacheMode, FsServer};
use crate::devices::virtio::{device_type, interrupt, ActivateError, VirtioDevice};

fn share() -> (tempfile::TempDir, std::path::PathBuf) {
    super::isolate_thread_fs_context().unwrap();
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path()).unwrap();
    let share = dir.path().join("share");
    (dir, share)
}

#[test]
fn config_space_has_the_tag_and_one_request_queue() {
    let (_dir, share) = share();
    let server = FsServer::new(&share, CacheMode::Auto, true).unwrap();
    let (dev, _worker) = device::new("shared-tag", server).unwrap();
    assert_eq!(dev.device_type(), device_type::FS);
    assert_eq!(dev.device_type(), 26);
    assert_eq!(dev.queue_max_sizes(), &[QUEUE_SIZE; NUM_QUEUES]);
    assert_eq!(dev.avail_features(), 0);
    let mut config = [0xffu8; CONFIG_LEN + 8];
    dev.read_config(0, &mut config);
    assert_eq!(&config[..10], b"shared-tag");
    assert!(config[10..36].iter().all(|&b| b == 0), "NUL-padded");
    assert_eq!(u32::from_le_bytes(config[36..40].try_into().unwrap()), 1);
    assert_eq!(&config[40..], &[0; 8], "past the end reads zero");
    let mut word = [0u8; 4];
    dev.read_config(36, &mut word);
    assert_eq!(u32::from_le_bytes(word), 1);
    dev.read_config(u64::MAX, &mut word);
    assert_eq!(word, [0; 4]);
}

#[test]
fn tags_are_checked() {
    check_tag("vessel").unwrap();
    check_tag(&"t".repeat(36)).unwrap();
    for bad in ["", "a\0b"] {
        assert!(check_tag(bad).is_err());
    }
    let long = "t".repeat(37);
    assert_eq!(
        check_tag(&long).unwrap_err().to_string(),
        format!("the tag {long:?} must be 1 to 36 bytes without NUL")
    );
}

#[test]
fn serves_lookup_open_read_and_interrupts() {
    let (_dir, share) = share();
    let mut c = FuseClient::initialised(&share);
    let hello = c.lookup(ROOT, b"hello.txt").unwrap();
    assert_eq!(hello.attr.mode & libc::S_IFMT, libc::S_IFREG);
    assert_eq!(hello.entry_valid, 1, "cache=auto: 1 s");
    assert_eq!(c.cat(hello.nodeid).unwrap(), b"hello from the host\n");
    let (entry, fh) = c.create(ROOT, b"new.txt", libc::O_RDWR, 0o640).unwrap();
    assert_ne!(entry.nodeid, 0);
    assert_ne!(fh, 0);
    assert!(share.join("new.txt").exists());
    assert_eq!(c.q.hiprio.irq_status() & interrupt::VRING, interrupt::VRING);
    let counters = c.worker.counters();
    assert_eq!(counters.requests, 5, "init, lookup, open, read, create");
    assert_eq!(
        counters.bad_chains + counters.failed_requests + counters.refused,
        0
    );
}

#[test]
fn cache_modes_set_the_timeouts_and_xattr_can_be_off() {
    let (_dir, share) = share();
    for (cache, secs) in [
        (CacheMode::Never, 0),
        (CacheMode::Auto, 1),
        (CacheMode::Always, 86_400),
    ] {
        let mut c = FuseClient::with_options(&share, cache, false);
        c.init();
        let entry = c.lookup(ROOT, b"hello.txt").unwrap();
        assert_eq!(
            (entry.entry_valid, entry.attr_valid),
            (secs, secs),
            "{cache:?}"
        );
        let body = [&8u32.to_le_bytes()[..], &[0; 4], b"user.x\0"].concat();
        let r = c.send(Opcode::Getxattr, entry.nodeid, &body);
        assert_eq!(r.error, -libc::ENOSYS, "xattr off");
    }
    assert_eq!(CacheMode::parse("always"), Some(CacheMode::Always));
    assert_eq!(CacheMode::parse("sometimes"), None);
}

#[test]
fn unknown_opcodes_get_enosys_and_forget_no_reply() {
    let (_dir, share) = share();
    let mut c = FuseClient::initialised(&share);
    for opcode in [0u32, 7, 19, 47, 48, 49, 50, 4096, u32::MAX] {
        let raw = c
            .send_raw(&request(opcode, 77, ROOT, &[0; 16]), 64)
            .unwrap();
        let out: OutHeader = decode(&raw);
        assert_eq!(
            (out.error, out.unique, raw.len()),
            (-libc::ENOSYS, 77, 16),
            "{opcode}"
        );
    }
    let forget = ForgetIn { nlookup: 1 };
    let raw = c.send_raw(&request(Opcode::Forget as u32, 5, 3, forget.as_slice()), 64);
    assert_eq!(raw.unwrap().len(), 0, "FORGET has no reply");
}

#[test]
fn undecodable_requests_get_einval() {
    let (_dir, share) = share();
    let mut c = FuseClient::initialised(&share);
    // A name without its NUL, a header whose length lies, a truncated body.
    let cases = [
        request(Opcode::Lookup as u32, 9, ROOT, b"hello.txt"),
        {
            let mut r = request(Opcode::Lookup as u32, 9, ROOT, &name(b"hello.txt"));
            r[0..4].copy_from_slice(&8u32.to_le_bytes());
            r
        },
        request(Opcode::Mknod as u32, 9, ROOT, &[1, 2]),
        request(Opcode::Open as u32, 9, ROOT, &[]),
        request(Opcode::Rename as u32, 9, ROOT, &[0; 8]),
    ];
    for (i, req) in cases.iter().enumerate() {
        let raw = c.send_raw(req, 256).unwrap();
        let out: OutHeader = decode(&raw);
        assert_eq!(
            (out.error, out.unique, raw.len()),
            (-libc::EINVAL, 9, 16),
            "case {i}"
        );
    }
    assert!(c.worker.counters().failed_requests + c.worker.counters().refused >= 5);
}

#[test]
fn malformed_chains_come_back_empty() {
    let (_dir, share) = share();
    let mut c = FuseClient::initialised(&share);
    let before = c.worker.counters().bad_chains;
    let req = request(Opcode::Getattr as u32, 3, ROOT, &[0; 16]);
    let at = c.q.alloc(4096);
    c.q.hiprio.mem.write_slice(&req, GuestAddress(at)).unwrap();
    let reply = c.q.alloc(4096);
    let cases: [&[(u64, u32, bool)]; 5] = [
        // The request outside guest memory.
        &[(0xffff_0000_0000, 64, false), (reply, 4096, true)],
        // No room for a reply.
        &[(at, req.len() as u32, false)],
        // A reply buffer smaller than a header.
        &[(at, req.len() as u32, false), (reply, 8, true)],
        // Less than a header to read.
        &[(at, 10, false), (reply, 4096, true)],
        // A reply buffer running off the end of memory.
        &[(at, req.len() as u32, false), ((16 << 20) - 8, 4096, true)],
    ];
    for (i, chain) in cases.iter().enumerate() {
        let head = c.q.request.add_chain(chain);
        c.worker.process_queues();
        let used = c.q.request.used();
        assert_eq!(used.last(), Some(&(head, 0)), "case {i}");
    }
    assert_eq!(c.worker.counters().bad_chains - before, 5);
    // The device still serves well-formed requests.
    assert!(c.lookup(ROOT, b"hello.txt").is_ok());
}

#[test]
fn nothing_is_served_before_activation_or_after_reset() {
    let (_dir, share) = share();
    let server = FsServer::new(&share, CacheMode::Auto, true).unwrap();
    let (mut dev, mut worker) = device::new("vessel", server).unwrap();
    let q = FsQueues::new(16);
    let (head, reply) = q.post(&init_request(1), 256);
    worker.process_queues();
    assert!(q.reply(head, reply).is_none());
    dev.activate(q.activation()).unwrap();
    assert!(dev.is_active());
    assert!(matches!(
        dev.activate(q.activation()),
        Err(ActivateError::AlreadyActive)
    ));
    worker.process_queues();
    let raw = q.reply(head, reply).unwrap();
    assert_eq!(
        decode::<OutHeader>(&raw).error,
        0,
        "INIT served once active"
    );
    dev.reset();
    assert!(!dev.is_active());
    let (head, reply) = q.post(&init_request(2), 256);
    worker.process_queues();
    assert!(q.reply(head, reply).is_none());
    let mut act = q.activation();
    act.queues.pop();
    assert!(matches!(
        dev.activate(act),
        Err(ActivateError::QueueCount { .. })
    ));
}

#[test]
fn the_event_loop_serves_notified_queues() {
    let (_dir, share) = share();
    let server = FsServer::new(&share, CacheMode::Auto, true).unwrap();
    let (mut dev, worker) = device::new("vessel", server).unwrap();
    let q = FsQueues::new(16);
    let act = q.activation();
    let notify = act.queue_evts[1].try_clone().unwrap();
    let mut events: EventManager<std::sync::Arc<std::sync::Mutex<dyn MutEventSubscriber + Send>>> =
        EventManager::new().unwrap();
    let worker = std::sync::Arc::new(std::sync::Mutex::new(worker));
    events.add_subscriber(worker.clone());
    dev.activate(act).unwrap();
    events.run_with_timeout(1000).unwrap();
    let (head, reply) = q.post(&init_request(1), 256);
    notify.write(1).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while q.reply(head, reply).is_none() {
        assert!(std::time::Instant::now() < deadline, "never served");
        events.run_with_timeout(100).unwrap();
    }
    assert!(notify.as_raw_fd() >= 0);
    dev.reset();
    events.run_with_timeout(1000).unwrap();
    assert_eq!(worker.lock().unwrap().counters().event_failures, 0);
}

#[test]
fn a_header_only_request_is_not_read_past_its_buffer() {
    let (_dir, share) = share();
    let mut c = FuseClient::initialised(&share);
    let header = InHeader {
        len: u32::MAX,
        opcode: Opcode::Lookup as u32,
        unique: 4,
        nodeid: ROOT,
        ..Default::default()
    };
    let raw = c.send_raw(header.as_slice(), 64).unwrap();
    let out: OutHeader = decode(&raw);
    assert_eq!(out.unique, 4);
    assert!(out.error < 0);
}

#[test]
fn a_share_is_snapshotted_only_before_its_first_request() {
    use crate::devices::virtio::DeviceKind;
    let (_dir, share) = share();
    let server = FsServer::new(&share, CacheMode::Auto, true).unwrap();
    let (dev, _worker) = device::new("pod", server).unwrap();
    let idle = dev.save_state().unwrap();
    assert_eq!(idle.kind, DeviceKind::Fs { tag: "pod".into() });
    assert!(idle.active_queues.is_none(), "not active yet");

    let mut c = FuseClient::new(&share);
    let active = c.dev.save_state().unwrap();
    assert_eq!(active.active_queues.map(|q| q.len()), Some(NUM_QUEUES));

    // Posted but not yet served counts as used too.
    let (_head, _reply) = c.q.post(&init_request(1), 256);
    assert_eq!(
        c.dev.save_state().unwrap_err(),
        "the guest has mounted the virtio-fs share \
         (a share can be snapshotted only before its first request)"
    );
    c.worker.process_queues();
    assert!(c.dev.save_state().is_err(), "served: a FUSE session exists");
}

//! The API server's unit tests.

use super::*;
use serde_json::{json, Value};

fn roundtrip(stream: &mut UnixStream, request: &str) -> Value {
    stream.write_all(request.as_bytes()).unwrap();
    let mut line = String::new();
    BufReader::new(stream.try_clone().unwrap())
        .read_line(&mut line)
        .unwrap();
    serde_json::from_str(&line).unwrap()
}

#[test]
fn serves_status_errors_and_shutdown_then_removes_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("api.sock");
    let control = Arc::new(VcpuControl::new(0));
    let server = ApiServer::start(
        &path,
        Arc::clone(&control),
        None,
        None,
        ApiOptions::default(),
    )
    .unwrap();
    let mut s = UnixStream::connect(&path).unwrap();
    assert_eq!(
        roundtrip(&mut s, "{\"action\":\"status\"}\n")["state"],
        "running"
    );
    let bad = roundtrip(&mut s, "not json\n");
    assert_eq!(bad["ok"], false);
    assert!(bad["error"]
        .as_str()
        .unwrap()
        .starts_with("request is not JSON"));
    let unknown = roundtrip(&mut s, "{\"action\":\"reboot\"}\n");
    assert!(unknown["error"]
        .as_str()
        .unwrap()
        .contains("unknown action \"reboot\""));
    assert_eq!(roundtrip(&mut s, "{}\n")["ok"], false);
    // Only a VMM started with --debug-api on serves it.
    let debug = roundtrip(&mut s, "{\"action\":\"debug_forbidden_syscall\"}\n");
    assert!(debug["error"]
        .as_str()
        .unwrap()
        .contains("not started with --debug-api on"));
    // With no vCPUs, pause completes at once.
    assert_eq!(
        roundtrip(&mut s, "{\"action\":\"pause\"}\n")["state"],
        "paused"
    );
    assert_eq!(
        roundtrip(&mut s, "{\"action\":\"resume\"}\n")["state"],
        "running"
    );
    assert_eq!(
        roundtrip(&mut s, "{\"action\":\"shutdown\"}\n")["state"],
        "stopping"
    );
    // The reply goes out first; the stop follows at once.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while control.state() != crate::cpu::control::RunState::Stopping {
        assert!(
            std::time::Instant::now() < deadline,
            "shutdown never stopped the VM"
        );
        thread::sleep(std::time::Duration::from_millis(1));
    }
    drop(server);
    assert!(!path.exists());
}

#[test]
fn an_overlong_request_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("api.sock");
    let _server = ApiServer::start(
        &path,
        Arc::new(VcpuControl::new(0)),
        None,
        None,
        ApiOptions::default(),
    )
    .unwrap();
    let mut s = UnixStream::connect(&path).unwrap();
    let long = format!("{}\n", "x".repeat(MAX_REQUEST_BYTES as usize + 10));
    let reply = roundtrip(&mut s, &long);
    assert!(reply["error"]
        .as_str()
        .unwrap()
        .starts_with("request longer than"));
}

#[test]
fn a_regular_file_at_the_path_is_not_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("precious");
    std::fs::write(&path, "data").unwrap();
    let err = ApiServer::start(
        &path,
        Arc::new(VcpuControl::new(0)),
        None,
        None,
        ApiOptions::default(),
    )
    .err()
    .unwrap();
    assert!(matches!(err, ApiError::PathInUse(_)));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "data");
}

#[test]
fn fs_actions_need_a_shared_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("api.sock");
    let _server = ApiServer::start(
        &path,
        Arc::new(VcpuControl::new(0)),
        None,
        None,
        ApiOptions::default(),
    )
    .unwrap();
    let mut s = UnixStream::connect(&path).unwrap();
    for action in ["fs_add", "fs_remove", "fs_list"] {
        let reply = roundtrip(&mut s, &format!("{{\"action\":\"{action}\"}}\n"));
        assert_eq!(
            reply,
            json!({"ok": false, "error": format!(
                "{action}: there is no shared directory (start vessel-vmm with --fs-dir)"
            )})
        );
    }
}

/// fs_add, fs_list and fs_remove for real, in a private mount namespace
/// (root only): the guest (a FUSE client on the share) sees the mount,
/// read-only and nosuid,nodev; a symlink the guest planted is not
/// followed; everything fs_add created goes away with fs_remove.
#[test]
fn fs_add_and_remove_bind_mounts_in_the_share() {
    use crate::devices::virtio::fs::test_client::{in_private_mount_ns, FuseClient, ROOT};

    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().to_path_buf();
    let ran = in_private_mount_ns(move || {
        crate::devices::virtio::fs::isolate_thread_fs_context().unwrap();
        let (share, data, outside) = (base.join("share"), base.join("data"), base.join("out"));
        for d in [&share, &data, &outside] {
            std::fs::create_dir(d).unwrap();
        }
        std::fs::write(data.join("file"), b"host data").unwrap();
        std::fs::write(base.join("app.conf"), b"k=v").unwrap();
        // The guest planted a symlink pointing out of the share.
        std::os::unix::fs::symlink(&outside, share.join("evil")).unwrap();
        let shared = Arc::new(SharedDir::prepare(&share).unwrap());
        let sock = base.join("api.sock");
        let control = Arc::new(VcpuControl::new(0));
        let _server = ApiServer::start(
            &sock,
            control,
            Some(Arc::clone(&shared)),
            None,
            ApiOptions::default(),
        )
        .unwrap();
        let mut s = UnixStream::connect(&sock).unwrap();
        let mut call = |request: Value| roundtrip(&mut s, &format!("{request}\n"));
        let add = |source: &Path, target: &str, readonly: bool| json!({"action": "fs_add", "source": source, "target": target, "readonly": readonly});
        let ok = json!({"ok": true});

        assert_eq!(call(add(&data, "mnt/data", true)), ok);
        assert_eq!(call(add(&base.join("app.conf"), "etc/app.conf", false)), ok);
        assert_eq!(
            std::fs::read(share.join("mnt/data/file")).unwrap(),
            b"host data"
        );
        let err = std::fs::write(share.join("mnt/data/new"), b"x").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EROFS));
        assert_eq!(std::fs::read(share.join("etc/app.conf")).unwrap(), b"k=v");

        // The guest's view, through FUSE.
        let mut guest = FuseClient::initialised(&shared.fs_root());
        let mnt = guest.lookup(ROOT, b"mnt").unwrap();
        let data_node = guest.lookup(mnt.nodeid, b"data").unwrap();
        let file = guest.lookup(data_node.nodeid, b"file").unwrap();
        assert_eq!(guest.cat(file.nodeid).unwrap(), b"host data");
        assert_eq!(guest.open(file.nodeid, libc::O_RDWR), Err(libc::EROFS));
        assert_eq!(
            guest.lookup(data_node.nodeid, b"..").unwrap().nodeid,
            mnt.nodeid
        );

        let errors = [
            (
                add(&data, "mnt/data", true),
                "fs_add: target \"mnt/data\" was already added",
            ),
            (
                add(&data, "../x", false),
                "fs_add: target \"../x\": must not contain . or .. components",
            ),
            (
                add(&data, "/abs", false),
                "fs_add: target \"/abs\": must be relative to the shared directory",
            ),
            (
                add(Path::new("data"), "d", false),
                "fs_add: source \"data\" is not an absolute path",
            ),
            (
                json!({"action": "fs_add", "target": "x"}),
                "fs_add needs a string field \"source\"",
            ),
            (
                json!({"action": "fs_add", "source": "/", "target": "x", "readonly": "yes"}),
                "fs_add: \"readonly\" must be true or false",
            ),
            (
                json!({"action": "fs_remove", "target": "nope"}),
                "fs_remove: \"nope\" was not added with fs_add",
            ),
        ];
        for (request, message) in errors {
            assert_eq!(call(request), json!({"ok": false, "error": message}));
        }
        let missing = call(add(&base.join("missing"), "m", false));
        let text = missing["error"].as_str().unwrap();
        assert!(text.starts_with("fs_add: open the source "), "{text}");
        assert!(text.contains("No such file or directory"), "{text}");
        // Through the guest's symlink: refused, nothing made outside.
        let planted = call(add(&data, "evil/x", false));
        let text = planted["error"].as_str().unwrap();
        assert!(
            text.starts_with("fs_add: create the mount point \"evil/x\""),
            "{text}"
        );
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
        // Onto an existing mount point.
        std::fs::create_dir(share.join("premount")).unwrap();
        let tmpfs =
            std::ffi::CString::new(share.join("premount").into_os_string().into_encoded_bytes())
                .unwrap();
        // SAFETY: valid strings; a tmpfs in this thread's private namespace.
        let mounted = unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                tmpfs.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        assert_eq!(mounted, 0);
        assert_eq!(
            call(add(&data, "premount", false)),
            json!({"ok": false, "error": "fs_add: target \"premount\" is already a mount point"})
        );

        let list = call(json!({"action": "fs_list"}));
        assert_eq!(
            list,
            json!({"ok": true, "mounts": [
                {"source": data, "target": "mnt/data", "readonly": true},
                {"source": base.join("app.conf"), "target": "etc/app.conf", "readonly": false},
            ]})
        );
        // Nested adds go first.
        assert_eq!(call(add(&outside, "mnt/data2", false)), ok);
        assert_eq!(
            call(json!({"action": "fs_remove", "target": "mnt/data"})),
            ok
        );
        assert!(
            share.join("mnt/data2").exists(),
            "mnt still holds mnt/data2"
        );
        assert!(!share.join("mnt/data").exists());
        assert_eq!(
            call(json!({"action": "fs_remove", "target": "mnt/data2"})),
            ok
        );
        assert_eq!(
            call(json!({"action": "fs_remove", "target": "etc/app.conf"})),
            ok
        );
        assert!(!share.join("mnt").exists() && !share.join("etc").exists());
        assert_eq!(std::fs::read(data.join("file")).unwrap(), b"host data");
        assert_eq!(
            call(json!({"action": "fs_list"})),
            json!({"ok": true, "mounts": []})
        );
    });
    if ran.is_none() {
        eprintln!("skipped: fs_add needs root");
    }
}

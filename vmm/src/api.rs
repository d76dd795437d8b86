//! The API socket (`--api-sock PATH`): pause, resume, shutdown and status,
//! snapshots, and hot bind mounts in the virtio-fs share.
//!
//! A unix stream socket carrying one JSON object per line each way. The
//! requests and replies are `vessel_vmm_client::api`'s ([`Request`],
//! [`Reply`]), which document the lines; every starter's client sends the
//! same types, so the two sides cannot drift apart.
//!
//! `snapshot` needs a paused VM and leaves it paused; it writes the state
//! file and the memory file of [`crate::snapshot`] (mode 0600, each whole
//! or not at all). `vessel-vmm --restore-state STATE --restore-memory
//! MEMORY` starts the VM again, in a new process. A VM with a virtio-fs
//! device can be snapshotted only while its guest has never mounted the
//! share (no FUSE request yet); afterwards the snapshot is refused and the
//! VM carries on. Pause, resume and snapshot are served one at a time.
//!
//! `fs_add` bind-mounts the host path `source` (a directory or a file) at
//! `target`, relative to the shared directory of `--fs-dir`, `nosuid,nodev`
//! and read-only if `readonly` (default false). Missing directories on the
//! way are created, never through a symlink or `..` the guest may have
//! planted. `fs_remove` unmounts it and removes what `fs_add` created;
//! `fs_list` shows the current ones. The mounts live in the VMM's private
//! mount namespace only (see [`crate::devices::virtio::fs::hotplug`]). The
//! guest sees a change once its cached entry for the name expires
//! (`--fs-cache`: never 0 s, auto 1 s, always a day). Without `--fs-dir`
//! these actions answer an error.
//!
//! The socket file is removed when the server is dropped.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;

use tracing::{debug, warn};
pub use vessel_vmm_client::api::MAX_REQUEST_BYTES;
use vessel_vmm_client::api::{Action, FsMount, Reply, Request, RequestError, VmState};

use crate::cpu::control::{RunState, VcpuControl};
use crate::devices::virtio::fs::SharedDir;
use crate::snapshot::Snapshotter;

/// Errors of serving the API.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0} exists and is not a socket")]
    PathInUse(PathBuf),
    #[error("remove the stale socket {0}")]
    RemoveStaleSocket(PathBuf, #[source] std::io::Error),
    #[error("bind the API socket {0}")]
    BindSocket(PathBuf, #[source] std::io::Error),
    #[error("spawn the API thread")]
    SpawnThread(#[source] std::io::Error),
}

/// A running API server.
pub struct ApiServer {
    path: PathBuf,
}

/// What every connection serves.
struct Context {
    control: Arc<VcpuControl>,
    shared: Option<Arc<SharedDir>>,
    snapshotter: Option<Arc<Snapshotter>>,
    /// Held by pause, resume and snapshot: a resume never lands in the
    /// middle of a snapshot.
    run_state: Mutex<()>,
}

impl ApiServer {
    /// Binds `path` (replacing a stale socket) and serves in a thread.
    /// `shared` is the virtio-fs share the `fs_*` actions work on,
    /// `snapshotter` what the `snapshot` action uses.
    pub fn start(
        path: &Path,
        control: Arc<VcpuControl>,
        shared: Option<Arc<SharedDir>>,
        snapshotter: Option<Arc<Snapshotter>>,
    ) -> Result<Self, ApiError> {
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.file_type().is_socket() {
                return Err(ApiError::PathInUse(path.to_path_buf()));
            }
            std::fs::remove_file(path)
                .map_err(|e| ApiError::RemoveStaleSocket(path.to_path_buf(), e))?;
        }
        let listener = crate::uds::bind_owner_only(path)
            .map_err(|e| ApiError::BindSocket(path.to_path_buf(), e))?;
        let context = Arc::new(Context {
            control,
            shared,
            snapshotter,
            run_state: Mutex::new(()),
        });
        thread::Builder::new()
            .name("vmm-api".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    match conn {
                        Ok(stream) => {
                            let context = Arc::clone(&context);
                            let spawned = thread::Builder::new()
                                .name("vmm-api-conn".into())
                                .spawn(move || serve(stream, &context));
                            if let Err(err) = spawned {
                                warn!(%err, "API: spawn a connection thread");
                            }
                        }
                        Err(err) => warn!(%err, "API: accept"),
                    }
                }
            })
            .map_err(ApiError::SpawnThread)?;
        Ok(Self {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if let Err(err) = std::fs::remove_file(&self.path) {
            warn!(path = %self.path.display(), %err, "API: remove the socket");
        }
    }
}

fn serve(stream: UnixStream, context: &Context) {
    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        Err(err) => {
            warn!(%err, "API: clone the connection");
            return;
        }
    };
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = Vec::new();
        let read = (&mut reader)
            .take(MAX_REQUEST_BYTES + 1)
            .read_until(b'\n', &mut line);
        match read {
            Ok(0) => return,
            Ok(_) => {}
            Err(err) => {
                debug!(%err, "API: read a request");
                return;
            }
        }
        let too_long = line.len() as u64 > MAX_REQUEST_BYTES;
        let (reply, then_stop) = if too_long {
            (
                Reply::error(format!("request longer than {MAX_REQUEST_BYTES} bytes")),
                false,
            )
        } else {
            handle(&line, context)
        };
        let mut text = reply.to_line();
        text.push('\n');
        if let Err(err) = writer
            .write_all(text.as_bytes())
            .and_then(|()| writer.flush())
        {
            debug!(%err, "API: write a reply");
            return;
        }
        if then_stop {
            context.control.stop();
            return;
        }
        if too_long {
            return;
        }
    }
}

/// The reply of a VM state.
fn state_reply(state: RunState) -> Reply {
    Reply::state(match state {
        RunState::Running => VmState::Running,
        RunState::Paused => VmState::Paused,
        RunState::Stopping => VmState::Stopping,
    })
}

/// The reply to an `fs_*` action without a shared directory.
fn no_share(action: Action) -> Reply {
    Reply::error(format!(
        "{}: there is no shared directory (start vessel-vmm with --fs-dir)",
        action.as_str()
    ))
}

/// The reply to `snapshot` on a VMM that cannot take one.
fn no_snapshots() -> Reply {
    Reply::error("snapshot: this VMM cannot take snapshots")
}

/// The error reply of an action this VMM cannot serve at all, whatever
/// the request's fields say: it comes before any complaint about them.
fn unservable(action: Action, context: &Context) -> Option<Reply> {
    match action {
        Action::FsAdd | Action::FsRemove | Action::FsList if context.shared.is_none() => {
            Some(no_share(action))
        }
        Action::Snapshot if context.snapshotter.is_none() => Some(no_snapshots()),
        _ => None,
    }
}

/// The `fs_*` actions, on the share.
fn handle_fs(request: &Request, shared: &SharedDir) -> Reply {
    let action = request.action().as_str();
    let result = match request {
        Request::FsAdd {
            source,
            target,
            readonly,
        } => shared.add(source, target, *readonly),
        Request::FsRemove { target } => shared.remove(target),
        _ => {
            let mounts = shared
                .list()
                .into_iter()
                .map(|m| FsMount {
                    source: m.source,
                    target: m.target,
                    readonly: m.readonly,
                })
                .collect();
            return Reply {
                mounts: Some(mounts),
                ..Reply::ok()
            };
        }
    };
    match result {
        Ok(()) => Reply::ok(),
        Err(err) => Reply::error(format!("{action}: {}", crate::error_chain(&err))),
    }
}

/// The `snapshot` action.
fn handle_snapshot(snapshotter: &Snapshotter, state: &Path, memory: &Path) -> Reply {
    match snapshotter.snapshot(state, memory) {
        Ok(info) => Reply {
            state_bytes: Some(info.state_bytes),
            memory_bytes: Some(info.memory_bytes),
            millis: Some(info.millis),
            ..Reply::state(VmState::Paused)
        },
        Err(err) => {
            warn!(error = %crate::error_chain(&err), "API: snapshot");
            Reply::error(format!("snapshot: {}", crate::error_chain(&err)))
        }
    }
}

/// The reply to one request line, and whether to stop the VM after sending it.
fn handle(line: &[u8], context: &Context) -> (Reply, bool) {
    let request = match Request::parse(line) {
        Ok(request) => request,
        Err(RequestError::Field { action, message }) => {
            return (
                unservable(action, context).unwrap_or(Reply::error(message)),
                false,
            )
        }
        Err(err) => return (Reply::error(err.to_string()), false),
    };
    let control = &*context.control;
    let _serial = match request {
        Request::Pause | Request::Resume | Request::Snapshot { .. } => {
            Some(context.run_state.lock().unwrap_or_else(|p| p.into_inner()))
        }
        _ => None,
    };
    let reply = match &request {
        Request::Status => state_reply(control.state()),
        Request::Pause => match control.pause() {
            Ok(()) => Reply::state(VmState::Paused),
            Err(err) => Reply::error(err.to_string()),
        },
        Request::Resume => match control.resume() {
            Ok(()) => Reply::state(VmState::Running),
            Err(err) => Reply::error(err.to_string()),
        },
        Request::Shutdown => return (Reply::state(VmState::Stopping), true),
        Request::Snapshot { state, memory } => match context.snapshotter.as_deref() {
            Some(snapshotter) => handle_snapshot(snapshotter, state, memory),
            None => no_snapshots(),
        },
        Request::FsAdd { .. } | Request::FsRemove { .. } | Request::FsList => {
            match context.shared.as_deref() {
                Some(shared) => handle_fs(&request, shared),
                None => no_share(request.action()),
            }
        }
    };
    (reply, false)
}

#[cfg(test)]
mod tests {
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
        let server = ApiServer::start(&path, Arc::clone(&control), None, None).unwrap();
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
        let _server = ApiServer::start(&path, Arc::new(VcpuControl::new(0)), None, None).unwrap();
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
        let err = ApiServer::start(&path, Arc::new(VcpuControl::new(0)), None, None)
            .err()
            .unwrap();
        assert!(matches!(err, ApiError::PathInUse(_)));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "data");
    }

    #[test]
    fn fs_actions_need_a_shared_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let _server = ApiServer::start(&path, Arc::new(VcpuControl::new(0)), None, None).unwrap();
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
            let _server =
                ApiServer::start(&sock, control, Some(Arc::clone(&shared)), None).unwrap();
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
            let tmpfs = std::ffi::CString::new(
                share.join("premount").into_os_string().into_encoded_bytes(),
            )
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
}

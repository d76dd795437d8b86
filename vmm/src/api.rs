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
use crate::jail::{Role, ThreadFilters};
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

/// How the API server runs.
#[derive(Debug, Clone, Copy)]
pub struct ApiOptions {
    /// The seccomp filters: the API's threads apply [`Role::Api`].
    pub filters: ThreadFilters,
    /// Serve `debug_forbidden_syscall` (`--debug-api on`; never in
    /// production).
    pub debug_api: bool,
}

impl Default for ApiOptions {
    fn default() -> Self {
        ApiOptions {
            filters: ThreadFilters::OFF,
            debug_api: false,
        }
    }
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
    debug_api: bool,
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
        options: ApiOptions,
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
            debug_api: options.debug_api,
        });
        thread::Builder::new()
            .name("vmm-api".into())
            .spawn(move || {
                // The connections' threads inherit the filter.
                options.filters.apply(Role::Api);
                for conn in listener.incoming() {
                    match conn {
                        Ok(stream) => {
                            let context = Arc::clone(&context);
                            let spawned = thread::Builder::new().name("vmm-api-conn".into()).spawn(
                                move || {
                                    options.filters.inherited(Role::Api);
                                    serve(stream, &context)
                                },
                            );
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
        Request::DebugForbiddenSyscall => debug_forbidden_syscall(context.debug_api),
    };
    (reply, false)
}

/// `debug_forbidden_syscall`: with `--debug-api on`, a syscall outside the
/// API thread's seccomp policy, which ends the VMM (it never replies);
/// refused otherwise, and where the jail is off.
fn debug_forbidden_syscall(enabled: bool) -> Reply {
    if !enabled {
        return Reply::error(
            "debug_forbidden_syscall: this VMM was not started with --debug-api on",
        );
    }
    warn!("API: debug_forbidden_syscall: making a syscall the API's seccomp policy forbids");
    // SAFETY: getpgid(0) only reads the caller's process group; no policy
    // allows it, so under seccomp it never returns.
    unsafe { libc::syscall(libc::SYS_getpgid, 0) };
    Reply::error("debug_forbidden_syscall: the syscall ran: this VMM has no seccomp filter")
}

#[cfg(test)]
#[path = "api/tests.rs"]
mod tests;

//! OOM events: an inotify watch on each container's `memory.events`, and one
//! thread that turns rises of its `oom_kill` count into a queue of container
//! ids for `GetOOMEvent`.
//!
//! The kernel signals every change of `memory.events` (also `max`, `high`...
//! under memory pressure, up to 100 times a second) as `IN_MODIFY`. Each
//! costs a re-read of the file, so the thread handles at most one batch of
//! events every [`MIN_INTERVAL`]; inotify merges the repeats meanwhile. A
//! rise of the count is one event whatever its size: kills that land in one
//! batch are reported once (the host wants to know *that* a container was
//! OOM-killed). No rise is lost: a queue overflow re-reads every file.
//!
//! A watch pins the file's inode: [`OomWatcher::unwatch`] a container before
//! removing its cgroup.

#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::cgroup::{read_oom_kills, RealCgroupFs};

/// The shortest time between two batches the thread handles.
const MIN_INTERVAL: Duration = Duration::from_millis(50);

/// Room for many `inotify_event`s (16 bytes each: the watches are on files,
/// so events carry no name).
const EVENT_BUFFER: usize = 4096;

/// One watched `memory.events`.
#[derive(Debug)]
struct Watch {
    container_id: String,
    path: PathBuf,
    /// The last `oom_kill` count seen.
    count: u64,
}

#[derive(Debug, Default)]
struct State {
    /// By inotify watch descriptor.
    watches: HashMap<i32, Watch>,
    /// Container id to watch descriptor.
    by_id: HashMap<String, i32>,
    /// Containers whose count rose, oldest first.
    queue: VecDeque<String>,
}

#[derive(Debug)]
struct Shared {
    inotify: File,
    /// An eventfd: readable = the thread must stop.
    stop: File,
    state: Mutex<State>,
    /// Signalled when the queue grows.
    raised: Condvar,
}

/// Reports containers whose `oom_kill` count rises.
#[derive(Debug)]
pub struct OomWatcher {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// A descriptor the kernel just returned, or its error.
fn owned_fd(fd: libc::c_int) -> io::Result<OwnedFd> {
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by the kernel and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl OomWatcher {
    /// An inotify instance and the thread reading it.
    pub fn start() -> io::Result<OomWatcher> {
        // SAFETY: no pointers; the result is checked.
        let inotify = owned_fd(unsafe { libc::inotify_init1(libc::IN_CLOEXEC) })?;
        // SAFETY: no pointers; the result is checked.
        let stop = owned_fd(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) })?;
        let shared = Arc::new(Shared {
            inotify: File::from(inotify),
            stop: File::from(stop),
            state: Mutex::new(State::default()),
            raised: Condvar::new(),
        });
        let thread = std::thread::Builder::new()
            .name("oom-watcher".to_owned())
            .spawn({
                let shared = Arc::clone(&shared);
                move || shared.run()
            })?;
        Ok(OomWatcher {
            shared,
            thread: Some(thread),
        })
    }

    /// Watches `container_id`'s `memory.events`, whose `oom_kill` count is
    /// `count_now` (0 for a new cgroup: watch before its first process starts
    /// and no kill is missed). Replaces an earlier watch of the same id; a
    /// file another id watches is [`io::ErrorKind::AlreadyExists`].
    pub fn watch(
        &self,
        container_id: &str,
        memory_events: &Path,
        count_now: u64,
    ) -> io::Result<()> {
        let path = CString::new(memory_events.as_os_str().as_bytes())?;
        let mut state = self.shared.lock();
        if let Some(old) = state.by_id.remove(container_id) {
            state.watches.remove(&old);
            self.shared.remove_watch(old);
        }
        // SAFETY: `path` is a NUL-terminated string that outlives the call.
        let wd = unsafe {
            libc::inotify_add_watch(
                self.shared.inotify.as_raw_fd(),
                path.as_ptr(),
                libc::IN_MODIFY | libc::IN_MASK_CREATE,
            )
        };
        if wd < 0 {
            return Err(io::Error::last_os_error());
        }
        state.watches.insert(
            wd,
            Watch {
                container_id: container_id.to_owned(),
                path: memory_events.to_owned(),
                count: count_now,
            },
        );
        state.by_id.insert(container_id.to_owned(), wd);
        tracing::debug!(container_id, path = %memory_events.display(), count_now, "watching for OOM kills");
        Ok(())
    }

    /// Stops watching `container_id` (nothing if it was not watched). Events
    /// already queued stay.
    pub fn unwatch(&self, container_id: &str) {
        let mut state = self.shared.lock();
        if let Some(wd) = state.by_id.remove(container_id) {
            state.watches.remove(&wd);
            self.shared.remove_watch(wd);
        }
    }

    /// The next container whose `oom_kill` count rose; blocks until there is
    /// one.
    pub fn next(&self) -> String {
        let state = self.shared.lock();
        let mut state = self
            .shared
            .raised
            .wait_while(state, |s| s.queue.is_empty())
            .unwrap_or_else(|e| e.into_inner());
        state.queue.pop_front().unwrap_or_default()
    }

    /// Like [`OomWatcher::next`], but `None` after `timeout`.
    #[cfg(test)]
    pub fn next_timeout(&self, timeout: Duration) -> Option<String> {
        let state = self.shared.lock();
        let (mut state, _) = self
            .shared
            .raised
            .wait_timeout_while(state, timeout, |s| s.queue.is_empty())
            .unwrap_or_else(|e| e.into_inner());
        state.queue.pop_front()
    }
}

impl Drop for OomWatcher {
    /// Stops and joins the thread.
    fn drop(&mut self) {
        if let Err(e) = (&self.shared.stop).write_all(&1u64.to_ne_bytes()) {
            tracing::warn!(error = %e, "cannot stop the OOM watcher thread");
            return;
        }
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::warn!("the OOM watcher thread panicked");
            }
        }
    }
}

/// What the thread woke up for.
#[derive(Debug, PartialEq, Eq)]
enum Wake {
    Stop,
    Events,
    Timeout,
}

/// The events of one read of the inotify descriptor.
#[derive(Debug, Default, PartialEq, Eq)]
struct Batch {
    /// Watches whose file changed, each once, in order.
    modified: Vec<i32>,
    /// Watches the kernel dropped.
    ignored: Vec<i32>,
    /// Events were lost.
    overflow: bool,
}

/// Parses `inotify_event`s; a truncated one at the end is dropped.
fn parse_events(buf: &[u8]) -> Batch {
    const HEADER: usize = 16;
    let word = |b: &[u8], at: usize| [b[at], b[at + 1], b[at + 2], b[at + 3]];
    let mut batch = Batch::default();
    let mut at = 0;
    while let Some(header) = buf.get(at..at + HEADER) {
        let wd = i32::from_ne_bytes(word(header, 0));
        let mask = u32::from_ne_bytes(word(header, 4));
        let name_len = u32::from_ne_bytes(word(header, 12)) as usize;
        at += HEADER + name_len;
        if mask & libc::IN_Q_OVERFLOW != 0 {
            batch.overflow = true;
        } else if mask & libc::IN_IGNORED != 0 {
            batch.ignored.push(wd);
        } else if mask & libc::IN_MODIFY != 0 && !batch.modified.contains(&wd) {
            batch.modified.push(wd);
        }
    }
    batch
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn remove_watch(&self, wd: i32) {
        // SAFETY: no pointers; the result is checked.
        if unsafe { libc::inotify_rm_watch(self.inotify.as_raw_fd(), wd) } < 0 {
            // EINVAL: the kernel dropped it already.
            let e = io::Error::last_os_error();
            tracing::debug!(wd, error = %e, "inotify watch already gone");
        }
    }

    /// Waits for the stop eventfd (and the inotify descriptor if `events`),
    /// at most `timeout`.
    fn wait(&self, events: bool, timeout: Option<Duration>) -> io::Result<Wake> {
        let pollfd = |fd: &File| libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let mut fds = [pollfd(&self.stop), pollfd(&self.inotify)];
        let nfds: libc::nfds_t = if events { 2 } else { 1 };
        let ms = timeout.map_or(-1, |t| {
            libc::c_int::try_from(t.as_millis().max(1)).unwrap_or(libc::c_int::MAX)
        });
        // SAFETY: `fds` holds `nfds` initialised pollfds and outlives the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), nfds, ms) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(if fds[0].revents != 0 {
            Wake::Stop
        } else if n == 0 {
            Wake::Timeout
        } else {
            Wake::Events
        })
    }

    /// The thread: reads events until told to stop.
    fn run(&self) {
        let mut buf = [0u8; EVENT_BUFFER];
        let mut last_batch: Option<Instant> = None;
        loop {
            if let Some(rest) = last_batch.and_then(|t| MIN_INTERVAL.checked_sub(t.elapsed())) {
                match self.wait(false, Some(rest)) {
                    Ok(Wake::Stop) => return,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        tracing::error!(error = %e, "OOM watcher: poll failed");
                        return;
                    }
                }
            }
            match self.wait(true, None) {
                Ok(Wake::Stop) => return,
                Ok(Wake::Events) => {}
                Ok(Wake::Timeout) => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::error!(error = %e, "OOM watcher: poll failed");
                    return;
                }
            }
            let n = match (&self.inotify).read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::error!(error = %e, "OOM watcher: reading inotify failed");
                    return;
                }
            };
            self.handle(&parse_events(&buf[..n]));
            last_batch = Some(Instant::now());
        }
    }

    /// Re-reads the changed files and queues the containers whose count rose.
    fn handle(&self, batch: &Batch) {
        if batch.overflow {
            tracing::warn!("inotify queue overflowed: re-reading every memory.events");
        }
        let changed: Vec<(i32, PathBuf)> = {
            let state = self.lock();
            let wds: Vec<i32> = if batch.overflow {
                state.watches.keys().copied().collect()
            } else {
                batch.modified.clone()
            };
            wds.into_iter()
                .filter_map(|wd| state.watches.get(&wd).map(|w| (wd, w.path.clone())))
                .collect()
        };
        for (wd, path) in changed {
            // Read without the lock: watch() and next() go on meanwhile.
            let count = match read_oom_kills(&RealCgroupFs, &path) {
                Ok(count) => count,
                Err(e) => {
                    tracing::debug!(path = %path.display(), error = ?e, "cannot read memory.events");
                    continue;
                }
            };
            let mut state = self.lock();
            // Unwatched meanwhile: drop it.
            let Some(watch) = state.watches.get_mut(&wd) else {
                continue;
            };
            if count > watch.count {
                watch.count = count;
                let id = watch.container_id.clone();
                tracing::info!(container_id = %id, oom_kills = count, "container OOM kill");
                state.queue.push_back(id);
                self.raised.notify_all();
            }
        }
        if !batch.ignored.is_empty() {
            let mut state = self.lock();
            for wd in &batch.ignored {
                if let Some(watch) = state.watches.remove(wd) {
                    if state.by_id.get(&watch.container_id) == Some(wd) {
                        state.by_id.remove(&watch.container_id);
                    }
                }
            }
        }
    }
}

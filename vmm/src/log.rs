//! The VMM's own log: what a guest can make it write is bounded.
//!
//! Many warnings are the guest's to trigger (a bad descriptor chain, a
//! packet for no connection). [`LogWriter`] therefore lets each call site
//! write a burst of [`BURST`] lines and then one line per
//! [`REFILL`]; what it drops is counted and said in one line before that
//! call site's next line. When the log is a regular file (the shim's
//! `vmm.log`), it is also capped (`--log-max-bytes`, a
//! [`CappedFile`](crate::devices::legacy::capped::CappedFile)): past the
//! cap the file starts again, keeping the latest lines.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::callsite::Identifier;
use tracing::Metadata;
use tracing_subscriber::fmt::MakeWriter;

use crate::devices::legacy::capped::CappedFile;

/// Lines a call site may write at once.
pub const BURST: u32 = 20;
/// The time that earns a call site one more line.
pub const REFILL: Duration = Duration::from_secs(1);

/// Where lines go.
enum Sink {
    Stderr,
    File(CappedFile),
}

impl Sink {
    fn write_all(&mut self, line: &[u8]) {
        // A log write that fails has nowhere to be reported.
        let _ = match self {
            Sink::Stderr => io::stderr().write_all(line),
            Sink::File(file) => file.write_all(line),
        };
    }
}

/// One call site's allowance.
struct Bucket {
    tokens: u32,
    refilled: Instant,
    dropped: u64,
}

impl Bucket {
    fn new(now: Instant) -> Bucket {
        Bucket {
            tokens: BURST,
            refilled: now,
            dropped: 0,
        }
    }

    /// Takes a token if there is one; returns whether the line may go.
    fn take(&mut self, now: Instant) -> bool {
        let earned = now.saturating_duration_since(self.refilled).as_nanos() / REFILL.as_nanos();
        if earned > 0 {
            self.tokens = BURST.min(
                self.tokens
                    .saturating_add(u32::try_from(earned).unwrap_or(u32::MAX)),
            );
            self.refilled = now;
        }
        if self.tokens == 0 {
            self.dropped += 1;
            return false;
        }
        self.tokens -= 1;
        true
    }
}

/// The VMM's tracing writer: rate limited per call site, capped if a file.
pub struct LogWriter {
    sink: Mutex<Sink>,
    buckets: Mutex<HashMap<Identifier, Bucket>>,
    clock: Box<dyn Fn() -> Instant + Send + Sync>,
}

impl LogWriter {
    /// Writes to stderr; capped at `max_bytes` when stderr is a regular
    /// file (the shim's `vmm.log`), which is then written from its start.
    pub fn stderr(max_bytes: u64) -> LogWriter {
        let file = io::stderr()
            .as_fd()
            .try_clone_to_owned()
            .map(File::from)
            .ok()
            .filter(|f| f.metadata().is_ok_and(|m| m.file_type().is_file()));
        let sink = match file {
            Some(file) => Sink::File(CappedFile::named(file, "VMM log", max_bytes)),
            None => Sink::Stderr,
        };
        LogWriter::with(sink, Box::new(Instant::now))
    }

    fn with(sink: Sink, clock: Box<dyn Fn() -> Instant + Send + Sync>) -> LogWriter {
        LogWriter {
            sink: Mutex::new(sink),
            buckets: Mutex::new(HashMap::new()),
            clock,
        }
    }

    /// Whether `meta`'s call site may write now, and how many of its lines
    /// were dropped since it last did.
    fn admit(&self, meta: &Metadata<'_>) -> Option<u64> {
        let now = (self.clock)();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = buckets
            .entry(meta.callsite())
            .or_insert_with(|| Bucket::new(now));
        bucket
            .take(now)
            .then(|| std::mem::take(&mut bucket.dropped))
    }
}

/// One event's line, written whole when dropped (or not at all).
pub struct LogLine<'a> {
    writer: &'a LogWriter,
    buf: Vec<u8>,
    /// False: dropped by the rate limit.
    admitted: bool,
    /// The line saying how many lines of this call site were dropped
    /// before this one, if any were.
    note: Option<String>,
}

impl Write for LogLine<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.admitted {
            self.buf.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine<'_> {
    fn drop(&mut self) {
        if !self.admitted {
            return;
        }
        let mut sink = self.writer.sink.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(note) = &self.note {
            sink.write_all(note.as_bytes());
        }
        sink.write_all(&self.buf);
    }
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = LogLine<'a>;

    fn make_writer(&'a self) -> LogLine<'a> {
        LogLine {
            writer: self,
            buf: Vec::new(),
            admitted: true,
            note: None,
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> LogLine<'a> {
        let admitted = self.admit(meta);
        let note = admitted.filter(|&dropped| dropped > 0).map(|dropped| {
            format!(
                "[vessel-vmm: {dropped} lines from {}:{} dropped by the rate limit]\n",
                meta.file().unwrap_or("?"),
                meta.line().unwrap_or(0)
            )
        });
        LogLine {
            writer: self,
            buf: Vec::new(),
            admitted: admitted.is_some(),
            note,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    /// A log file and the seconds its clock shows past its start.
    fn log_to(path: &std::path::Path, max: u64) -> (Arc<LogWriter>, Arc<AtomicU64>) {
        let file = File::create(path).unwrap();
        let seconds = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let clock = seconds.clone();
        let writer = LogWriter::with(
            Sink::File(CappedFile::named(file, "VMM log", max)),
            Box::new(move || start + Duration::from_secs(clock.load(Ordering::SeqCst))),
        );
        (Arc::new(writer), seconds)
    }

    /// Routes tracing's writer requests to a shared [`LogWriter`].
    struct Shared(Arc<LogWriter>);
    impl<'a> MakeWriter<'a> for Shared {
        type Writer = LogLine<'a>;
        fn make_writer(&'a self) -> LogLine<'a> {
            self.0.make_writer()
        }
        fn make_writer_for(&'a self, meta: &Metadata<'_>) -> LogLine<'a> {
            self.0.make_writer_for(meta)
        }
    }

    fn logging(writer: &Arc<LogWriter>, f: impl FnOnce()) {
        let sub = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(Shared(writer.clone()))
            .finish();
        tracing::subscriber::with_default(sub, f);
    }

    fn flood(lines: u32) {
        for i in 0..lines {
            tracing::warn!(i, "the guest did it again");
        }
        tracing::warn!("another call site");
    }

    #[test]
    fn a_flooding_call_site_is_limited_and_others_still_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vmm.log");
        let (writer, seconds) = log_to(&path, 1 << 20);
        logging(&writer, || flood(1000));
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text.matches("the guest did it again").count(),
            BURST as usize
        );
        assert_eq!(text.matches("another call site").count(), 1);
        // Two seconds on: two more lines, the first after the note.
        seconds.store(2, Ordering::SeqCst);
        logging(&writer, || flood(5));
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text.matches("the guest did it again").count(),
            BURST as usize + 2
        );
        let note = format!("[vessel-vmm: {} lines from ", 1000 - BURST);
        assert!(text.contains(&note), "{text}");
    }

    #[test]
    fn the_log_file_never_passes_its_cap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vmm.log");
        let (writer, seconds) = log_to(&path, 4096);
        logging(&writer, || {
            for i in 0..500 {
                // A line a second: within the rate limit, past the cap.
                seconds.fetch_add(1, Ordering::SeqCst);
                tracing::warn!(i, "a long and wordy warning, again and again");
                let len = std::fs::metadata(&path).unwrap().len();
                assert!(len <= 4096, "{len} bytes after line {i}");
            }
        });
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("[vessel-vmm: the VMM log reached its cap of 4096 bytes"),
            "{text}"
        );
        assert!(text.contains("i=499"), "{text}");
    }
}

//! [`CappedFile`]: a console log the guest cannot grow past a cap.
//!
//! Everything the guest prints lands in the console file, so without a cap
//! a guest fills the host's disk (or, under `/run`, its memory). The write
//! that would pass the cap starts the file again from empty, with a line
//! saying so: what is kept is the latest output, which is what a reader of
//! a crashed guest's console wants. Writes never fail for the cap.

use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};

/// A file that never holds more than `max` bytes.
pub struct CappedFile {
    file: File,
    /// What the file is, for the restart line ("console log").
    what: &'static str,
    max: u64,
    written: u64,
    /// How many times it started again.
    restarts: u64,
}

impl CappedFile {
    /// `file` (empty) capped at `max` bytes; `max` must leave room for the
    /// restart line (the config's minimum does).
    pub fn new(file: File, max: u64) -> Self {
        CappedFile::named(file, "console log", max)
    }

    /// [`CappedFile::new`] for a file that is not the console.
    pub fn named(file: File, what: &'static str, max: u64) -> Self {
        CappedFile {
            file,
            what,
            max,
            written: 0,
            restarts: 0,
        }
    }

    fn restart(&mut self) -> io::Result<()> {
        self.restarts += 1;
        self.file.set_len(0)?;
        self.file.seek(SeekFrom::Start(0))?;
        let line = format!(
            "[vessel-vmm: the {} reached its cap of {} bytes and started again ({} times)]\n",
            self.what, self.max, self.restarts
        );
        self.file.write_all(line.as_bytes())?;
        self.written = line.len() as u64;
        Ok(())
    }
}

impl Write for CappedFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.written + buf.len() as u64 > self.max {
            self.restart()?;
        }
        let room = usize::try_from(self.max - self.written).unwrap_or(usize::MAX);
        let n = self.file.write(&buf[..buf.len().min(room.max(1))])?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_never_passes_the_cap_and_keeps_the_latest_output() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let mut out = CappedFile::new(File::create(&path).unwrap(), 4096);
        for i in 0..2000 {
            out.write_all(format!("line {i}\n").as_bytes()).unwrap();
            let len = std::fs::metadata(&path).unwrap().len();
            assert!(len <= 4096, "{len} bytes after line {i}");
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("[vessel-vmm: the console log reached its cap of 4096 bytes"));
        assert!(text.ends_with("line 1999\n"), "{text}");
    }

    #[test]
    fn one_byte_at_a_time_as_the_uart_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let mut out = CappedFile::new(File::create(&path).unwrap(), 4096);
        for _ in 0..10_000 {
            out.write_all(b"x").unwrap();
        }
        assert!(std::fs::metadata(&path).unwrap().len() <= 4096);
        assert_eq!(out.restarts, 2);
    }
}

//! fio-like workloads in one directory, each timed: sequential write and
//! read of `mib` MiB (1 MiB requests, fsync after writing, the page cache
//! dropped for the file before reading), `reads` random 4 KiB reads of that
//! file, and `files` files created, stat'ed and unlinked. Prints `bench
//! NAME SECONDS AMOUNT` per workload (AMOUNT: bytes or operations).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::time::Instant;

const CHUNK: usize = 1 << 20;
const PAGE: u64 = 4096;

fn report(name: &str, start: Instant, amount: u64) {
    println!("bench {name} {:.6} {amount}", start.elapsed().as_secs_f64());
}

/// Drops the page cache of `file` (a hint; FUSE and local files honour it).
fn drop_cache(file: &File) {
    // SAFETY: integer-only call on our open file.
    unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
}

/// A small deterministic generator, so runs are comparable.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

pub fn run(dir: &str, mib: u64, reads: u64, files: u64) -> io::Result<()> {
    let path = format!("{dir}/bench.data");
    let bytes = mib * CHUNK as u64;
    let mut buf = vec![0u8; CHUNK];
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for b in buf.iter_mut() {
        *b = next(&mut seed) as u8;
    }

    let start = Instant::now();
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)?;
    for _ in 0..mib {
        file.write_all(&buf)?;
    }
    file.sync_all()?;
    report("seq-write", start, bytes);
    drop_cache(&file);
    drop(file);

    let start = Instant::now();
    let mut file = File::open(&path)?;
    drop_cache(&file);
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    if total != bytes {
        return Err(io::Error::other(format!("read {total} of {bytes} bytes")));
    }
    report("seq-read", start, bytes);

    drop_cache(&file);
    let pages = (bytes / PAGE).max(1);
    let mut page = [0u8; PAGE as usize];
    let start = Instant::now();
    for _ in 0..reads {
        let at = (next(&mut seed) % pages) * PAGE;
        file.read_exact_at(&mut page, at)?;
    }
    report("rand-read-4k", start, reads);
    drop(file);
    fs::remove_file(&path)?;

    let meta_dir = format!("{dir}/bench.meta");
    let _ = fs::remove_dir_all(&meta_dir);
    fs::create_dir(&meta_dir)?;
    let start = Instant::now();
    for i in 0..files {
        File::create(format!("{meta_dir}/f{i}"))?;
    }
    for i in 0..files {
        fs::metadata(format!("{meta_dir}/f{i}"))?;
    }
    for i in 0..files {
        fs::remove_file(format!("{meta_dir}/f{i}"))?;
    }
    report("metadata", start, files * 3);
    fs::remove_dir(&meta_dir)?;
    Ok(())
}

//! `vessel-fsprobe`: file-system probes run inside guest containers (and on
//! the host, for the benchmark's baseline). Static, so it runs in the
//! busybox rootfs. Commands print one result per line and exit 0 unless the
//! command itself was malformed (exit 2) or an operation failed (exit 1).
//!
//! ```text
//! xattr-set PATH NAME VALUE      xattr-get PATH NAME
//! mmap-write PATH TEXT           mmap-read PATH LEN
//! euid
//! escape DIR SECRET HOSTPATH     one "attempt NAME: RESULT" line each
//! bench DIR MIB RANDOM_READS FILES   one "bench NAME SECONDS AMOUNT" line each
//! ```

mod fsbench;
mod fsescape;

use std::ffi::CString;
use std::io;
use std::process::ExitCode;

/// `s` as a C string (probe arguments never hold NUL).
pub fn cstr(s: &str) -> CString {
    CString::new(s).unwrap_or_default()
}

/// The errno of the last failed call.
pub fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn xattr_set(path: &str, name: &str, value: &str) -> io::Result<()> {
    let (p, n) = (cstr(path), cstr(name));
    // SAFETY: NUL-terminated strings and a buffer of value.len() bytes.
    let ret = unsafe {
        libc::setxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if ret == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn xattr_get(path: &str, name: &str) -> io::Result<String> {
    let (p, n) = (cstr(path), cstr(name));
    let mut buf = vec![0u8; 4096];
    // SAFETY: NUL-terminated strings and a writable buffer of its length.
    let len = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if len < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(len as usize);
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Maps `path` shared and writes `text` at its start through the mapping
/// (growing the file if it is shorter), then msyncs.
fn mmap_write(path: &str, text: &str) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    if file.metadata()?.len() < text.len() as u64 {
        file.set_len(text.len() as u64)?;
    }
    let len = text.len().max(1);
    let prot = libc::PROT_READ | libc::PROT_WRITE;
    // SAFETY: a new shared mapping of our open file; unmapped below.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            prot,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    if map == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the mapping is at least text.len() bytes and writable.
    unsafe { std::ptr::copy_nonoverlapping(text.as_ptr(), map.cast::<u8>(), text.len()) };
    // SAFETY: the mapping made above, `len` bytes.
    let synced = unsafe { libc::msync(map, len, libc::MS_SYNC) };
    let err = io::Error::last_os_error();
    // SAFETY: as above; not used afterwards.
    unsafe { libc::munmap(map, len) };
    if synced == -1 {
        return Err(err);
    }
    Ok(())
}

fn mmap_read(path: &str, len: usize) -> io::Result<String> {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(path)?;
    let len = len.max(1);
    // SAFETY: a new read-only shared mapping of our open file.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    if map == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the mapping is `len` readable bytes.
    let bytes = unsafe { std::slice::from_raw_parts(map.cast::<u8>(), len) }.to_vec();
    // SAFETY: the mapping made above, not used afterwards.
    unsafe { libc::munmap(map, len) };
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn run(args: &[String]) -> Result<(), (u8, String)> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let failed = |e: io::Error| (1u8, e.to_string());
    match args.as_slice() {
        ["xattr-set", path, name, value] => xattr_set(path, name, value).map_err(failed),
        ["xattr-get", path, name] => {
            println!("{}", xattr_get(path, name).map_err(failed)?);
            Ok(())
        }
        ["mmap-write", path, text] => mmap_write(path, text).map_err(failed),
        ["mmap-read", path, len] => {
            let len = len
                .parse()
                .map_err(|_| (2, format!("bad length {len:?}")))?;
            print!("{}", mmap_read(path, len).map_err(failed)?);
            Ok(())
        }
        ["euid"] => {
            // SAFETY: geteuid has no preconditions.
            println!("{}", unsafe { libc::geteuid() });
            Ok(())
        }
        ["escape", dir, secret, host_path] => {
            fsescape::run_all(dir, secret, host_path);
            Ok(())
        }
        ["bench", dir, mib, reads, files] => {
            let num = |s: &str| {
                s.parse::<u64>()
                    .map_err(|_| (2, format!("bad number {s:?}")))
            };
            fsbench::run(dir, num(mib)?, num(reads)?, num(files)?).map_err(failed)
        }
        _ => Err((2, "usage: see the source's header".into())),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, msg)) => {
            eprintln!("vessel-fsprobe: {msg}");
            ExitCode::from(code)
        }
    }
}

//! Attempts to reach a host file outside the virtio-fs share from inside
//! it. `dir` is where the share (or a volume of it) is mounted in the
//! container, `secret` the text of the host file, `host_path` its absolute
//! path on the host. The host planted `abs-link` (-> `host_path`),
//! `rel-link` (-> `../outside/secret`), `file`, `dir/` and two device nodes
//! (`host-null`, `host-mem`) in `dir`.
//!
//! Each attempt prints `attempt NAME: denied ERRNO`, `attempt NAME:
//! inside` (it succeeded but only reached files of the share) or `attempt
//! NAME: ESCAPED` (it read the secret).

use std::ffi::CString;
use std::fs;
use std::io::Read;

use super::{cstr, errno};

/// How an attempt ended.
enum Outcome {
    Denied(i32),
    Inside,
    Escaped,
}

fn say(name: &str, outcome: Outcome) {
    match outcome {
        Outcome::Denied(e) => println!("attempt {name}: denied {}", errno_name(e)),
        Outcome::Inside => println!("attempt {name}: inside"),
        Outcome::Escaped => println!("attempt {name}: ESCAPED"),
    }
}

fn errno_name(e: i32) -> String {
    let name = match e {
        libc::EACCES => "EACCES",
        libc::ENOENT => "ENOENT",
        libc::EXDEV => "EXDEV",
        libc::EPERM => "EPERM",
        libc::ESTALE => "ESTALE",
        libc::EBADF => "EBADF",
        libc::ELOOP => "ELOOP",
        libc::EINVAL => "EINVAL",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::ENOTDIR => "ENOTDIR",
        libc::EROFS => "EROFS",
        _ => return format!("errno {e}"),
    };
    name.into()
}

/// Opens and reads `path`: the secret means an escape.
fn read_attempt(path: &str, secret: &str) -> Outcome {
    match fs::File::open(path) {
        Ok(mut f) => {
            let mut text = String::new();
            let _ = f.read_to_string(&mut text);
            if text.contains(secret) {
                Outcome::Escaped
            } else {
                Outcome::Inside
            }
        }
        Err(e) => Outcome::Denied(e.raw_os_error().unwrap_or(0)),
    }
}

fn result_of(ret: libc::c_int) -> Outcome {
    if ret == 0 {
        Outcome::Inside
    } else {
        Outcome::Denied(errno())
    }
}

fn link(from: &str, to: &str) -> Outcome {
    let (a, b) = (cstr(from), cstr(to));
    // SAFETY: two NUL-terminated paths.
    result_of(unsafe { libc::link(a.as_ptr(), b.as_ptr()) })
}

fn rename(from: &str, to: &str) -> Outcome {
    let (a, b) = (cstr(from), cstr(to));
    // SAFETY: two NUL-terminated paths.
    result_of(unsafe { libc::rename(a.as_ptr(), b.as_ptr()) })
}

/// Every attempt, in order.
pub fn run_all(dir: &str, secret: &str, host_path: &str) {
    for up in 1..=4 {
        let path = format!("{dir}/{}outside/secret", "../".repeat(up));
        say(&format!("dotdot-{up}"), read_attempt(&path, secret));
    }
    say(
        "host-absolute-symlink",
        read_attempt(&format!("{dir}/abs-link"), secret),
    );
    say(
        "host-relative-symlink",
        read_attempt(&format!("{dir}/rel-link"), secret),
    );
    let guest_link = format!("{dir}/guest-abs-link");
    let _ = fs::remove_file(&guest_link);
    match std::os::unix::fs::symlink(host_path, &guest_link) {
        Ok(()) => say("guest-absolute-symlink", read_attempt(&guest_link, secret)),
        Err(e) => say(
            "guest-absolute-symlink",
            Outcome::Denied(e.raw_os_error().unwrap_or(0)),
        ),
    }
    say(
        "hardlink-into-share",
        link("/etc/passwd", &format!("{dir}/hl-in")),
    );
    say(
        "hardlink-out-of-share",
        link(&format!("{dir}/file"), "/tmp/hl-out"),
    );
    say(
        "rename-out-of-share",
        rename(&format!("{dir}/dir"), "/tmp/moved"),
    );
    say("rename-race", rename_race(dir, secret));
    say("open-by-handle", open_by_handle(dir, secret));
    say("mknod-char-device", mknod(&format!("{dir}/guest-null")));
    say(
        "host-device-null",
        read_attempt(&format!("{dir}/host-null"), secret),
    );
    say(
        "host-device-mem",
        read_attempt(&format!("{dir}/host-mem"), secret),
    );
}

/// One thread swaps two directories of the share while this one opens a
/// path that climbs out of them; the guest kernel resolves `..` itself, so
/// nothing may ever reach the secret.
fn rename_race(dir: &str, secret: &str) -> Outcome {
    let base = format!("{dir}/race");
    let _ = fs::create_dir_all(format!("{base}/a/sub"));
    let _ = fs::create_dir_all(format!("{base}/b/sub"));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let swapper = {
        let (stop, base) = (stop.clone(), base.clone());
        std::thread::spawn(move || {
            let (a, b, t) = (
                format!("{base}/a"),
                format!("{base}/b"),
                format!("{base}/t"),
            );
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = fs::rename(&a, &t);
                let _ = fs::rename(&b, &a);
                let _ = fs::rename(&t, &b);
            }
        })
    };
    let mut worst = Outcome::Denied(libc::ENOENT);
    for _ in 0..100 {
        for side in ["a", "b"] {
            let path = format!("{base}/{side}/sub/../../../../outside/secret");
            match read_attempt(&path, secret) {
                Outcome::Escaped => worst = Outcome::Escaped,
                Outcome::Inside if !matches!(worst, Outcome::Escaped) => worst = Outcome::Inside,
                _ => {}
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = swapper.join();
    worst
}

/// `name_to_handle_at` on a file of the share, then `open_by_handle_at`
/// with handles forged from it (other node ids and generations): nothing
/// may open the secret.
fn open_by_handle(dir: &str, secret: &str) -> Outcome {
    const MAX: usize = 128;
    #[repr(C)]
    struct Handle {
        bytes: u32,
        kind: i32,
        data: [u8; MAX],
    }
    let mut handle = Handle {
        bytes: MAX as u32,
        kind: 0,
        data: [0; MAX],
    };
    let mut mount_id = 0;
    let path = cstr(&format!("{dir}/file"));
    // SAFETY: a NUL-terminated path and out-pointers of the right shapes.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_name_to_handle_at,
            libc::AT_FDCWD,
            path.as_ptr(),
            &mut handle as *mut Handle,
            &mut mount_id as *mut i32,
            0,
        )
    };
    if ret == -1 {
        return Outcome::Denied(errno());
    }
    let dir_c: CString = cstr(dir);
    // SAFETY: a NUL-terminated path.
    let mount_fd = unsafe { libc::open(dir_c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY) };
    if mount_fd == -1 {
        return Outcome::Denied(errno());
    }
    let mut outcome = Outcome::Denied(libc::ESTALE);
    let len = (handle.bytes as usize).min(MAX);
    // The node id is the handle's first 8 bytes (FUSE's encoding).
    let own = u64::from_le_bytes(handle.data[..8].try_into().unwrap_or_default());
    let guesses = (1..=256u64).chain(own.saturating_sub(64)..own + 64);
    for node in guesses {
        let mut forged = Handle {
            bytes: handle.bytes,
            kind: handle.kind,
            data: handle.data,
        };
        forged.data[..8].copy_from_slice(&node.to_le_bytes());
        if len >= 12 {
            // Any generation.
            forged.data[8..12].copy_from_slice(&0u32.to_le_bytes());
        }
        // SAFETY: a handle structure of `bytes` data bytes.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_open_by_handle_at,
                mount_fd,
                &mut forged as *mut Handle,
                libc::O_RDONLY,
            )
        };
        if fd < 0 {
            if let Outcome::Denied(_) = outcome {
                outcome = Outcome::Denied(errno());
            }
            continue;
        }
        let mut text = String::new();
        // SAFETY: a new fd owned by this File from now on.
        let mut file = unsafe { <fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
        let _ = file.read_to_string(&mut text);
        if text.contains(secret) {
            outcome = Outcome::Escaped;
            break;
        }
        outcome = Outcome::Inside;
    }
    // SAFETY: our own fd.
    unsafe { libc::close(mount_fd) };
    outcome
}

fn mknod(path: &str) -> Outcome {
    let p = cstr(path);
    let dev = libc::makedev(1, 3);
    // SAFETY: a NUL-terminated path.
    result_of(unsafe { libc::mknod(p.as_ptr(), libc::S_IFCHR | 0o666, dev) })
}

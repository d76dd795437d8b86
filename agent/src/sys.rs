//! The syscalls the agent makes, behind [`Sys`], so logic is unit tested with a
//! recording fake. [`LinuxSys`] makes the real calls (in the guest);
//! [`HostSys`] is for `--listen` on a host: it reads but changes nothing.

use std::ffi::{CStr, CString};
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::io::{AsRawFd, IntoRawFd};
use std::path::Path;

/// One mount: `mount(source, target, fstype, flags, data)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mount {
    /// The source (device or pseudo name).
    pub source: &'static str,
    /// Where it goes.
    pub target: &'static str,
    /// The filesystem type.
    pub fstype: &'static str,
    /// `MS_*` flags.
    pub flags: libc::c_ulong,
    /// Filesystem options.
    pub data: Option<&'static str>,
}

/// A raw wait status of a child, as `waitpid` gives it.
pub type WaitStatus = i32;

/// The syscalls of the agent.
pub trait Sys: Send + Sync {
    /// Mounts `m`; errors as the syscall reports them (ENOENT: no mount point).
    fn mount(&self, m: &Mount) -> io::Result<()>;
    /// Creates one directory (not its parents).
    fn mkdir(&self, path: &Path) -> io::Result<()>;
    /// Moves the mount at `new_root` over `/` and chroots into it (what
    /// switch_root does).
    fn switch_root(&self, new_root: &str) -> io::Result<()>;
    /// Reads a small text file, e.g. `/proc/cmdline`.
    fn read_to_string(&self, path: &Path) -> io::Result<String>;
    /// Makes fds 0-2 the console if fd 1 is not open (no initial console).
    fn ensure_console(&self) -> io::Result<()>;
    /// Sets `CLOCK_REALTIME`.
    fn set_time(&self, seconds: i64, nanos: u32) -> io::Result<()>;
    /// Sets the hostname.
    fn set_hostname(&self, name: &str) -> io::Result<()>;
    /// Adds `data` to the entropy pool, credited.
    fn add_entropy(&self, data: &[u8]) -> io::Result<()>;
    /// The kernel release (`uname -r`).
    fn kernel_release(&self) -> io::Result<String>;
    /// Flushes filesystems.
    fn sync(&self);
    /// Restarts the machine (the VMM's exit). Returns only on failure.
    fn reboot(&self) -> io::Error;
    /// `waitpid(-1, WNOHANG)`: a reaped child, or `None` if none is ready.
    fn wait_any_nohang(&self) -> io::Result<Option<(i32, WaitStatus)>>;
    /// Sets the stack size of threads started from now on.
    fn set_thread_stack(&self, bytes: usize);
    /// Keeps all pages resident, now and later (`mlockall`).
    fn lock_memory(&self) -> io::Result<()>;
}

fn cstring(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `RNDADDENTROPY`: `_IOW('R', 0x03, int[2])`.
const RNDADDENTROPY: libc::c_ulong = 0x4008_5203;
/// `RNDRESEEDCRNG`: `_IO('R', 0x07)`.
const RNDRESEEDCRNG: libc::c_ulong = 0x5207;

/// Packs `data` as a `struct rand_pool_info { int entropy_count; int
/// buf_size; __u32 buf[]; }` crediting 8 bits per byte.
pub fn rand_pool_info(data: &[u8]) -> io::Result<Vec<i32>> {
    let len = i32::try_from(data.len()).map_err(|_| io::ErrorKind::InvalidInput)?;
    let mut info = vec![0i32; 2 + data.len().div_ceil(4)];
    info[0] = len.checked_mul(8).ok_or(io::ErrorKind::InvalidInput)?;
    info[1] = len;
    for (i, chunk) in data.chunks(4).enumerate() {
        let mut word = [0u8; 4];
        word[..chunk.len()].copy_from_slice(chunk);
        info[2 + i] = i32::from_ne_bytes(word);
    }
    Ok(info)
}

/// The real syscalls, for the agent as PID 1 in the guest.
#[derive(Debug, Default)]
pub struct LinuxSys;

impl Sys for LinuxSys {
    fn set_thread_stack(&self, bytes: usize) {
        // Read by std when it starts its first thread; no thread runs yet.
        std::env::set_var("RUST_MIN_STACK", bytes.to_string());
    }

    fn lock_memory(&self) -> io::Result<()> {
        // SAFETY: integer-only syscall.
        check(unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) })
    }

    fn mount(&self, m: &Mount) -> io::Result<()> {
        let source = cstring(m.source)?;
        let target = cstring(m.target)?;
        let fstype = cstring(m.fstype)?;
        let data = m.data.map(cstring).transpose()?;
        let data_ptr = data
            .as_ref()
            .map_or(std::ptr::null(), |d| d.as_ptr().cast::<libc::c_void>());
        // SAFETY: all pointers are NUL-terminated strings (or null data) that
        // outlive the call.
        check(unsafe {
            libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                m.flags,
                data_ptr,
            )
        })
    }

    fn mkdir(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir(path)
    }

    fn switch_root(&self, new_root: &str) -> io::Result<()> {
        std::env::set_current_dir(new_root)?;
        self.mount(&Mount {
            source: ".",
            target: "/",
            fstype: "",
            flags: libc::MS_MOVE,
            data: None,
        })?;
        // SAFETY: "." is NUL-terminated.
        check(unsafe { libc::chroot(c".".as_ptr()) })?;
        std::env::set_current_dir("/")
    }

    fn read_to_string(&self, path: &Path) -> io::Result<String> {
        std::fs::read_to_string(path)
    }

    fn ensure_console(&self) -> io::Result<()> {
        // SAFETY: F_GETFD only queries the descriptor table.
        if unsafe { libc::fcntl(1, libc::F_GETFD) } != -1 {
            return Ok(());
        }
        // With no initial console the kernel left 0..=2 closed, so this open
        // may itself land on one of them: never close what we dup from then.
        let console = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/console")?
            .into_raw_fd();
        for fd in 0..3 {
            if fd != console {
                // SAFETY: dup2 onto a standard descriptor, replacing whatever
                // is there (nothing, or a stale descriptor): the console
                // becomes it, as intended.
                check(unsafe { libc::dup2(console, fd) })?;
            }
        }
        if console > 2 {
            // SAFETY: `console` is our own descriptor, now duplicated onto 0..=2.
            unsafe { libc::close(console) };
        }
        Ok(())
    }

    fn set_time(&self, seconds: i64, nanos: u32) -> io::Result<()> {
        let ts = libc::timespec {
            tv_sec: seconds as libc::time_t,
            tv_nsec: nanos as libc::c_long,
        };
        // SAFETY: `ts` is a valid timespec for the duration of the call.
        check(unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) })
    }

    fn set_hostname(&self, name: &str) -> io::Result<()> {
        // SAFETY: the pointer and length describe `name`'s bytes.
        check(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) })
    }

    fn add_entropy(&self, data: &[u8]) -> io::Result<()> {
        let info = rand_pool_info(data)?;
        // Writing mixes the bytes in; RNDADDENTROPY mixes them in again and
        // credits them, so the pool counts as seeded.
        let mut file = OpenOptions::new().write(true).open("/dev/urandom")?;
        file.write_all(data)?;
        // SAFETY: `info` is a complete rand_pool_info that lives across the
        // call; the kernel only reads it.
        check(unsafe { libc::ioctl(file.as_raw_fd(), RNDADDENTROPY as _, info.as_ptr()) })?;
        // The CRNG reseeds from the pool by itself only every minute; VMs
        // restored from one snapshot would give the same bytes until then.
        // SAFETY: RNDRESEEDCRNG takes no argument.
        check(unsafe { libc::ioctl(file.as_raw_fd(), RNDRESEEDCRNG as _) })
    }

    fn kernel_release(&self) -> io::Result<String> {
        // SAFETY: utsname is plain old data; all zeroes is a valid value.
        let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
        // SAFETY: `uts` is a valid, writable utsname.
        check(unsafe { libc::uname(&mut uts) })?;
        // SAFETY: the kernel NUL-terminates `release` within the array.
        let release = unsafe { CStr::from_ptr(uts.release.as_ptr()) };
        Ok(release.to_string_lossy().into_owned())
    }

    fn sync(&self) {
        // SAFETY: sync takes no arguments and cannot fail.
        unsafe { libc::sync() }
    }

    fn reboot(&self) -> io::Error {
        // The hard guard: the real reboot never runs outside PID 1 (a host).
        if std::process::id() != 1 {
            return io::Error::other("refusing to reboot: not PID 1");
        }
        // SAFETY: reboot only takes a command; as PID 1 in the guest, ending
        // the machine is what is asked for.
        unsafe { libc::reboot(libc::LINUX_REBOOT_CMD_RESTART) };
        io::Error::last_os_error()
    }

    fn wait_any_nohang(&self) -> io::Result<Option<(i32, WaitStatus)>> {
        loop {
            let mut status = 0;
            // SAFETY: `status` is a valid out-pointer.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            match pid {
                0 => return Ok(None),
                -1 => {
                    let err = io::Error::last_os_error();
                    match err.raw_os_error() {
                        Some(libc::EINTR) => continue,
                        Some(libc::ECHILD) => return Ok(None),
                        _ => return Err(err),
                    }
                }
                pid => return Ok(Some((pid, status))),
            }
        }
    }
}

/// For `--listen` on a host (tests): reads like [`LinuxSys`] but changes
/// nothing on the machine; "reboot" exits the process.
#[derive(Debug, Default)]
pub struct HostSys;

impl Sys for HostSys {
    fn set_thread_stack(&self, _bytes: usize) {}

    fn lock_memory(&self) -> io::Result<()> {
        Ok(())
    }

    fn mount(&self, m: &Mount) -> io::Result<()> {
        tracing::info!(target = m.target, "host mode: not mounting");
        Ok(())
    }

    fn mkdir(&self, _path: &Path) -> io::Result<()> {
        Ok(())
    }

    fn switch_root(&self, _new_root: &str) -> io::Result<()> {
        Ok(())
    }

    fn read_to_string(&self, path: &Path) -> io::Result<String> {
        std::fs::read_to_string(path)
    }

    fn ensure_console(&self) -> io::Result<()> {
        Ok(())
    }

    fn set_time(&self, seconds: i64, nanos: u32) -> io::Result<()> {
        tracing::info!(seconds, nanos, "host mode: not setting the clock");
        Ok(())
    }

    fn set_hostname(&self, name: &str) -> io::Result<()> {
        tracing::info!(name, "host mode: not setting the hostname");
        Ok(())
    }

    fn add_entropy(&self, data: &[u8]) -> io::Result<()> {
        tracing::info!(bytes = data.len(), "host mode: not adding entropy");
        Ok(())
    }

    fn kernel_release(&self) -> io::Result<String> {
        LinuxSys.kernel_release()
    }

    fn sync(&self) {}

    fn reboot(&self) -> io::Error {
        tracing::info!("host mode: shutdown ends the agent process");
        std::process::exit(0)
    }

    fn wait_any_nohang(&self) -> io::Result<Option<(i32, WaitStatus)>> {
        LinuxSys.wait_any_nohang()
    }
}

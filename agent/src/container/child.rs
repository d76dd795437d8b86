//! [`LinuxChildSys`]: the real syscalls of a container process between
//! `clone3` and `execve`. The child shares the agent's memory (`CLONE_VM`)
//! and, until `execve`, even the thread-local storage of the agent thread
//! that cloned it. So every method is a raw syscall on data built
//! beforehand: no allocation, no locks, no logging, and no libc wrapper
//! (those write `errno`, which lives in that thread-local storage).

use std::ffi::{c_char, CStr, CString};
use std::os::fd::RawFd;

use syscalls::Sysno;

use super::caps::{self, CapSets};
use super::plan::{ChildSys, Report, Step};

/// The real [`ChildSys`].
#[derive(Debug, Default, Clone, Copy)]
pub struct LinuxChildSys;

/// One raw syscall: its return value or the errno, without touching `errno`.
///
/// # Safety
/// The arguments must be what syscall `nr` expects: pointers valid for
/// what the kernel reads or writes through them.
pub(super) unsafe fn sys(nr: Sysno, a: [usize; 6]) -> Result<usize, i32> {
    // SAFETY: the caller vouches for the arguments.
    unsafe { syscalls::syscall6(nr, a[0], a[1], a[2], a[3], a[4], a[5]) }.map_err(|e| e.into_raw())
}

/// [`sys`] for calls whose value is not wanted.
///
/// # Safety
/// As for [`sys`].
unsafe fn check(nr: Sysno, a: [usize; 6]) -> Result<(), i32> {
    // SAFETY: the caller vouches for the arguments.
    unsafe { sys(nr, a) }.map(drop)
}

fn p(s: &CStr) -> usize {
    s.as_ptr() as usize
}

/// `Ok` for success or for `errno == ok`.
fn allow(result: Result<(), i32>, ok: i32) -> Result<(), i32> {
    match result {
        Err(e) if e == ok => Ok(()),
        other => other,
    }
}

fn opt_ptr(s: &Option<CString>) -> *const c_char {
    s.as_ref().map_or(std::ptr::null(), |s| s.as_ptr())
}

/// `stat` is plain data.
fn zeroed<T>() -> T {
    // SAFETY: only used for C structures of integers, where zero is valid.
    unsafe { std::mem::zeroed() }
}

fn mount(
    source: *const c_char,
    target: &CStr,
    fstype: *const c_char,
    flags: libc::c_ulong,
    data: *const c_char,
) -> Result<(), i32> {
    let a = [
        source as usize,
        p(target),
        fstype as usize,
        flags as usize,
        data as usize,
        0,
    ];
    // SAFETY: every pointer is null or a NUL-terminated string that outlives
    // the call.
    unsafe { check(Sysno::mount, a) }
}

/// The flags a bind remount must keep (locked in a user namespace).
fn kept_flags(target: &CStr) -> Result<libc::c_ulong, i32> {
    // The x86-64 kernel's `struct statfs`: 15 words, `f_flags` the 11th
    // (libc's type hides it).
    let mut st = [0u64; 15];
    let a = [p(target), st.as_mut_ptr() as usize, 0, 0, 0, 0];
    // SAFETY: `target` is NUL-terminated and `st` is as large as the
    // kernel's structure.
    unsafe { check(Sysno::statfs, a) }?;
    // ST_NOSUID/ST_NODEV/ST_NOEXEC have the MS_* values.
    Ok(st[10] as libc::c_ulong & (libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC))
}

fn remount_bind(target: &CStr, flags: libc::c_ulong) -> Result<(), i32> {
    let flags = flags | kept_flags(target)? | libc::MS_BIND | libc::MS_REMOUNT;
    mount(
        std::ptr::null(),
        target,
        std::ptr::null(),
        flags,
        std::ptr::null(),
    )
}

fn prctl(option: libc::c_int, arg: libc::c_ulong) -> Result<(), i32> {
    // SAFETY: the prctl options used here take integer arguments only.
    unsafe { check(Sysno::prctl, [option as usize, arg as usize, 0, 0, 0, 0]) }
}

/// Creates an empty file; an existing file, directory or device is fine.
fn touch(path: &CStr) -> Result<(), i32> {
    let flags =
        libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW | libc::O_NONBLOCK;
    let at = libc::AT_FDCWD as usize;
    // SAFETY: `path` is NUL-terminated; the mode is a plain int.
    match unsafe { sys(Sysno::openat, [at, p(path), flags as usize, 0o644, 0, 0]) } {
        // SAFETY: `fd` was just opened by us.
        Ok(fd) => unsafe { check(Sysno::close, [fd, 0, 0, 0, 0, 0]) },
        Err(e) => allow(Err(e), libc::EISDIR),
    }
}

impl LinuxChildSys {
    fn mask(path: &CStr) -> Result<(), i32> {
        let null = c"/dev/null";
        match mount(
            null.as_ptr(),
            path,
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        ) {
            Ok(()) => Ok(()),
            Err(libc::ENOENT) => Ok(()),
            // A directory: cover it with an empty read-only tmpfs.
            Err(libc::ENOTDIR) => mount(
                c"tmpfs".as_ptr(),
                path,
                c"tmpfs".as_ptr(),
                libc::MS_RDONLY,
                std::ptr::null(),
            ),
            Err(e) => Err(e),
        }
    }

    fn readonly(path: &CStr) -> Result<(), i32> {
        let bind = mount(
            path.as_ptr(),
            path,
            std::ptr::null(),
            libc::MS_BIND | libc::MS_REC,
            std::ptr::null(),
        );
        match bind {
            Err(libc::ENOENT) => Ok(()),
            Err(e) => Err(e),
            Ok(()) => remount_bind(path, libc::MS_RDONLY),
        }
    }

    /// Raw syscalls, not glibc's wrappers: those broadcast the change to
    /// every thread glibc believes the process has, and after a raw
    /// `clone3` it still believes in the agent's threads, so it would wait
    /// for them forever.
    fn set_user(uid: libc::uid_t, gid: libc::gid_t) -> Result<(), i32> {
        prctl(libc::PR_SET_KEEPCAPS, 1)?;
        let (uid, gid) = (uid as usize, gid as usize);
        // SAFETY: plain integer syscall.
        unsafe { check(Sysno::setresgid, [gid, gid, gid, 0, 0, 0]) }?;
        // SAFETY: as above.
        unsafe { check(Sysno::setresuid, [uid, uid, uid, 0, 0, 0]) }?;
        prctl(libc::PR_SET_KEEPCAPS, 0)
    }

    fn set_caps(sets: &CapSets) -> Result<(), i32> {
        let (header, data) = caps::capset_data(sets);
        let a = [
            &header as *const _ as usize,
            data.as_ptr() as usize,
            0,
            0,
            0,
            0,
        ];
        // SAFETY: `header` and `data` are the v3 capset structures (one
        // header, two data words) and live across the call.
        unsafe { check(Sysno::capset, a) }?;
        for cap in caps::mask_bits(sets.ambient) {
            let raise = libc::PR_CAP_AMBIENT_RAISE as usize;
            let a = [libc::PR_CAP_AMBIENT as usize, raise, cap as usize, 0, 0, 0];
            // SAFETY: integer-only prctl.
            unsafe { check(Sysno::prctl, a) }?;
        }
        Ok(())
    }

    fn seccomp(filters: &[Vec<libc::sock_filter>], flags: libc::c_ulong) -> Result<(), i32> {
        for filter in filters {
            let prog = libc::sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_ptr().cast_mut(),
            };
            let mode = libc::SECCOMP_SET_MODE_FILTER as usize;
            let a = [mode, flags as usize, &prog as *const _ as usize, 0, 0, 0];
            // SAFETY: `prog` describes `filter`, which outlives the call; the
            // kernel copies the program.
            unsafe { check(Sysno::seccomp, a) }?;
        }
        Ok(())
    }

    fn write_file(path: &CStr, data: &CStr) -> Result<(), i32> {
        let flags = (libc::O_WRONLY | libc::O_CLOEXEC) as usize;
        let at = libc::AT_FDCWD as usize;
        // SAFETY: `path` is NUL-terminated.
        let fd = unsafe { sys(Sysno::openat, [at, p(path), flags, 0, 0, 0]) }?;
        let bytes = data.to_bytes();
        let a = [fd, bytes.as_ptr() as usize, bytes.len(), 0, 0, 0];
        // SAFETY: `bytes` is valid for its length; `fd` is ours.
        let result = unsafe { check(Sysno::write, a) };
        // SAFETY: `fd` is ours and closed once.
        let _ = unsafe { sys(Sysno::close, [fd, 0, 0, 0, 0, 0]) };
        result
    }
}

impl ChildSys for LinuxChildSys {
    fn step(&self, step: &Step) -> Result<(), i32> {
        // Every raw call below passes integers, or NUL-terminated strings
        // and buffers owned by the plan, which outlives the call.
        match step {
            // SAFETY: integers, or strings and buffers of the plan (see above).
            Step::SetNs { fd, nstype } => unsafe {
                check(Sysno::setns, [*fd as usize, *nstype as usize, 0, 0, 0, 0])
            },
            Step::Mount {
                source,
                target,
                fstype,
                flags,
                data,
            } => mount(
                opt_ptr(source),
                target,
                opt_ptr(fstype),
                *flags,
                opt_ptr(data),
            ),
            // SAFETY: integers, or strings and buffers of the plan (see above).
            Step::Unshare(flags) => unsafe {
                check(Sysno::unshare, [*flags as usize, 0, 0, 0, 0, 0])
            },
            // umask cannot fail; its value is the old mask.
            // SAFETY: integers, or strings and buffers of the plan (see above).
            Step::Umask(mode) => unsafe { check(Sysno::umask, [*mode as usize, 0, 0, 0, 0, 0]) },
            Step::RemountBind { target, flags } => remount_bind(target, *flags),
            Step::Mkdir { path, mode } => allow(
                // SAFETY: integers, or strings and buffers of the plan (see above).
                unsafe { check(Sysno::mkdir, [p(path), *mode as usize, 0, 0, 0, 0]) },
                libc::EEXIST,
            ),
            Step::Touch { path } => touch(path),
            Step::Mknod { path, mode, dev } => allow(
                // SAFETY: integers, or strings and buffers of the plan (see above).
                unsafe {
                    check(
                        Sysno::mknod,
                        [p(path), *mode as usize, *dev as usize, 0, 0, 0],
                    )
                },
                libc::EEXIST,
            ),
            Step::BindDevice { source, target } => {
                touch(target)?;
                mount(
                    source.as_ptr(),
                    target,
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                )
            }
            Step::Symlink { target, link } => allow(
                // SAFETY: integers, or strings and buffers of the plan (see above).
                unsafe { check(Sysno::symlink, [p(target), p(link), 0, 0, 0, 0]) },
                libc::EEXIST,
            ),
            // SAFETY: integers, or strings and buffers of the plan (see above).
            Step::Chdir(path) => unsafe { check(Sysno::chdir, [p(path), 0, 0, 0, 0, 0]) },
            Step::PivotRoot => {
                let dot = p(c".");
                // SAFETY: integers, or strings and buffers of the plan (see above).
                unsafe { check(Sysno::pivot_root, [dot, dot, 0, 0, 0, 0]) }?;
                // The old root now sits on top of the new one: detach it.
                let detach = libc::MNT_DETACH as usize;
                // SAFETY: integers, or strings and buffers of the plan (see above).
                unsafe { check(Sysno::umount2, [dot, detach, 0, 0, 0, 0]) }?;
                // SAFETY: integers, or strings and buffers of the plan (see above).
                unsafe { check(Sysno::chdir, [p(c"/"), 0, 0, 0, 0, 0]) }
            }
            Step::MaskPath(path) => LinuxChildSys::mask(path),
            Step::ReadonlyPath(path) => LinuxChildSys::readonly(path),
            Step::WriteFile { path, data } => LinuxChildSys::write_file(path, data),
            Step::SetHostname(name) => {
                let len = name.to_bytes().len();
                // SAFETY: integers, or strings and buffers of the plan (see above).
                unsafe { check(Sysno::sethostname, [p(name), len, 0, 0, 0, 0]) }
            }
            Step::SetDomainname(name) => {
                let len = name.to_bytes().len();
                // SAFETY: integers, or strings and buffers of the plan (see above).
                unsafe { check(Sysno::setdomainname, [p(name), len, 0, 0, 0, 0]) }
            }
            // SAFETY: integers, or strings and buffers of the plan (see above).
            Step::Setsid => unsafe { check(Sysno::setsid, [0; 6]) },
            Step::SetCtty(fd) => {
                let a = [*fd as usize, libc::TIOCSCTTY as usize, 0, 0, 0, 0];
                // SAFETY: integers, or strings and buffers of the plan (see above).
                unsafe { check(Sysno::ioctl, a) }
            }
            // SAFETY: integers, or strings and buffers of the plan (see above).
            Step::Dup2 { from, to } => unsafe {
                check(Sysno::dup2, [*from as usize, *to as usize, 0, 0, 0, 0])
            },
            Step::SetRlimit {
                resource,
                soft,
                hard,
            } => {
                let limit = libc::rlimit {
                    rlim_cur: *soft,
                    rlim_max: *hard,
                };
                let a = [0, *resource as usize, &limit as *const _ as usize, 0, 0, 0];
                // SAFETY: integers, or strings and buffers of the plan (see above).
                unsafe { check(Sysno::prlimit64, a) }
            }
            Step::SetGroups(groups) => {
                let a = [groups.len(), groups.as_ptr() as usize, 0, 0, 0, 0];
                // SAFETY: integers, or strings and buffers of the plan (see above).
                unsafe { check(Sysno::setgroups, a) }
            }
            Step::SetUser { uid, gid } => LinuxChildSys::set_user(*uid, *gid),
            Step::DropBounding { keep, last } => {
                for cap in 0..=*last {
                    if keep & (1u64 << cap) == 0 {
                        // EINVAL: a capability this kernel does not know.
                        allow(
                            prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong),
                            libc::EINVAL,
                        )?;
                    }
                }
                Ok(())
            }
            Step::SetCaps(sets) => LinuxChildSys::set_caps(sets),
            Step::NoNewPrivs => prctl(libc::PR_SET_NO_NEW_PRIVS, 1),
            Step::Seccomp { filters, flags } => LinuxChildSys::seccomp(filters, *flags),
            // Flow control is the walker's.
            Step::WaitParent | Step::FindExecutable | Step::WaitStart | Step::Exec => Ok(()),
        }
    }

    fn executable(&self, path: &CString) -> bool {
        let at = libc::AT_FDCWD as usize;
        let a = [at, p(path), libc::X_OK as usize, 0, 0, 0];
        // SAFETY: `path` is NUL-terminated.
        if unsafe { check(Sysno::faccessat, a) }.is_err() {
            return false;
        }
        let mut st: libc::stat = zeroed();
        let a = [at, p(path), &mut st as *mut libc::stat as usize, 0, 0, 0];
        // SAFETY: `path` is NUL-terminated and `st` a valid out-pointer.
        let found = unsafe { check(Sysno::newfstatat, a) };
        found.is_ok() && st.st_mode & libc::S_IFMT == libc::S_IFREG
    }

    fn report(&self, fd: RawFd, report: Report) {
        let buf = report.encode();
        let a = [fd as usize, buf.as_ptr() as usize, buf.len(), 0, 0, 0];
        // SAFETY: `buf` is valid for its length; a failed write has nobody
        // to tell (the agent then sees EOF).
        let _ = unsafe { sys(Sysno::write, a) };
    }

    fn read_byte(&self, fd: RawFd) -> bool {
        let mut byte = 0u8;
        loop {
            let a = [fd as usize, &mut byte as *mut u8 as usize, 1, 0, 0, 0];
            // SAFETY: one byte into `byte`.
            match unsafe { sys(Sysno::read, a) } {
                Ok(1) => return true,
                Err(libc::EINTR) => continue,
                _ => return false,
            }
        }
    }

    fn exec(&self, path: &CString, argv: &[*const c_char], envp: &[*const c_char]) -> i32 {
        let a = [
            p(path),
            argv.as_ptr() as usize,
            envp.as_ptr() as usize,
            0,
            0,
            0,
        ];
        // SAFETY: `argv`/`envp` are null-terminated arrays of pointers to
        // NUL-terminated strings owned by the plan, alive until execve.
        match unsafe { sys(Sysno::execve, a) } {
            Ok(_) => libc::EIO, // execve does not return on success
            Err(errno) => errno,
        }
    }
}

//! [`LinuxChildSys`]: the real syscalls of a container process between
//! `clone3` and `execve`. It runs in the cloned child of a multi-threaded
//! process, so every method is a direct libc call on data built beforehand:
//! no allocation, no locks, no logging.

use std::ffi::{c_char, CStr, CString};
use std::os::fd::RawFd;

use super::caps::{self, CapSets};
use super::plan::{ChildSys, Report, Step};

/// The real [`ChildSys`].
#[derive(Debug, Default, Clone, Copy)]
pub struct LinuxChildSys;

fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn check(ret: libc::c_long) -> Result<(), i32> {
    if ret == -1 {
        Err(errno())
    } else {
        Ok(())
    }
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

fn mount(
    source: *const c_char,
    target: &CStr,
    fstype: *const c_char,
    flags: libc::c_ulong,
    data: *const c_char,
) -> Result<(), i32> {
    // SAFETY: every pointer is null or a NUL-terminated string that outlives
    // the call.
    check(unsafe { libc::mount(source, target.as_ptr(), fstype, flags, data.cast()) }.into())
}

/// The flags a bind remount must keep (locked in a user namespace).
fn kept_flags(target: &CStr) -> Result<libc::c_ulong, i32> {
    // SAFETY: statvfs is plain data; zeroes are valid.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `target` is NUL-terminated and `st` a valid out-pointer.
    check(unsafe { libc::statvfs(target.as_ptr(), &mut st) }.into())?;
    // ST_NOSUID/ST_NODEV/ST_NOEXEC have the MS_* values.
    Ok(st.f_flag & (libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC))
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
    check(unsafe { libc::prctl(option, arg, 0, 0, 0) }.into())
}

/// Creates an empty file; an existing file, directory or device is fine.
fn touch(path: &CStr) -> Result<(), i32> {
    let flags =
        libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW | libc::O_NONBLOCK;
    // SAFETY: `path` is NUL-terminated; the mode is a plain int.
    let fd = unsafe { libc::open(path.as_ptr(), flags, 0o644) };
    if fd == -1 {
        return allow(Err(errno()), libc::EISDIR);
    }
    // SAFETY: `fd` was just opened by us.
    unsafe { libc::close(fd) };
    Ok(())
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
        // SAFETY: plain integer syscall.
        check(unsafe { libc::syscall(libc::SYS_setresgid, gid, gid, gid) })?;
        // SAFETY: as above.
        check(unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) })?;
        prctl(libc::PR_SET_KEEPCAPS, 0)
    }

    fn set_caps(sets: &CapSets) -> Result<(), i32> {
        let (header, data) = caps::capset_data(sets);
        // SAFETY: `header` and `data` are the v3 capset structures (one
        // header, two data words) and live across the call.
        check(unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) })?;
        for cap in caps::mask_bits(sets.ambient) {
            // SAFETY: integer-only prctl.
            let ret = unsafe {
                libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                    cap as libc::c_ulong,
                    0,
                    0,
                )
            };
            check(ret.into())?;
        }
        Ok(())
    }

    fn seccomp(filters: &[Vec<libc::sock_filter>], flags: libc::c_ulong) -> Result<(), i32> {
        for filter in filters {
            let prog = libc::sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_ptr().cast_mut(),
            };
            // SAFETY: `prog` describes `filter`, which outlives the call; the
            // kernel copies the program.
            let ret = unsafe {
                libc::syscall(
                    libc::SYS_seccomp,
                    libc::SECCOMP_SET_MODE_FILTER,
                    flags,
                    &prog as *const libc::sock_fprog,
                )
            };
            check(ret)?;
        }
        Ok(())
    }

    fn write_file(path: &CStr, data: &CStr) -> Result<(), i32> {
        // SAFETY: `path` is NUL-terminated.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
        check(fd.into())?;
        let bytes = data.to_bytes();
        // SAFETY: `bytes` is valid for its length; `fd` is ours.
        let written = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        let result = if written == -1 { Err(errno()) } else { Ok(()) };
        // SAFETY: `fd` is ours and closed once.
        unsafe { libc::close(fd) };
        result
    }
}

impl ChildSys for LinuxChildSys {
    fn step(&self, step: &Step) -> Result<(), i32> {
        match step {
            Step::SetNs { fd, nstype } => {
                // SAFETY: integer-only syscall on an inherited pidfd.
                check(unsafe { libc::setns(*fd, *nstype) }.into())
            }
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
            Step::Unshare(flags) => {
                // SAFETY: integer-only syscall.
                check(unsafe { libc::unshare(*flags) }.into())
            }
            Step::Umask(mode) => {
                // SAFETY: integer-only syscall; it cannot fail.
                unsafe { libc::umask(*mode) };
                Ok(())
            }
            Step::RemountBind { target, flags } => remount_bind(target, *flags),
            Step::Mkdir { path, mode } => {
                // SAFETY: `path` is NUL-terminated.
                let ret = unsafe { libc::mkdir(path.as_ptr(), *mode) };
                allow(check(ret.into()), libc::EEXIST)
            }
            Step::Touch { path } => touch(path),
            Step::Mknod { path, mode, dev } => {
                // SAFETY: `path` is NUL-terminated.
                let ret = unsafe { libc::mknod(path.as_ptr(), *mode, *dev) };
                allow(check(ret.into()), libc::EEXIST)
            }
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
            Step::Symlink { target, link } => {
                // SAFETY: both are NUL-terminated.
                let ret = unsafe { libc::symlink(target.as_ptr(), link.as_ptr()) };
                allow(check(ret.into()), libc::EEXIST)
            }
            Step::Chdir(path) => {
                // SAFETY: `path` is NUL-terminated.
                check(unsafe { libc::chdir(path.as_ptr()) }.into())
            }
            Step::PivotRoot => {
                let dot = c".";
                // SAFETY: both arguments are ".", NUL-terminated.
                check(unsafe { libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) })?;
                // The old root now sits on top of the new one: detach it.
                // SAFETY: "." is NUL-terminated.
                check(unsafe { libc::umount2(dot.as_ptr(), libc::MNT_DETACH) }.into())?;
                // SAFETY: "/" is NUL-terminated.
                check(unsafe { libc::chdir(c"/".as_ptr()) }.into())
            }
            Step::MaskPath(path) => LinuxChildSys::mask(path),
            Step::ReadonlyPath(path) => LinuxChildSys::readonly(path),
            Step::WriteFile { path, data } => LinuxChildSys::write_file(path, data),
            Step::SetHostname(name) => {
                let bytes = name.to_bytes();
                // SAFETY: pointer and length describe `name`.
                check(unsafe { libc::sethostname(bytes.as_ptr().cast(), bytes.len()) }.into())
            }
            Step::SetDomainname(name) => {
                let bytes = name.to_bytes();
                // SAFETY: pointer and length describe `name`.
                check(unsafe { libc::setdomainname(bytes.as_ptr().cast(), bytes.len()) }.into())
            }
            Step::Setsid => {
                // SAFETY: no arguments.
                check(unsafe { libc::setsid() }.into())
            }
            Step::SetCtty(fd) => {
                // SAFETY: integer-only ioctl on our terminal fd.
                check(unsafe { libc::ioctl(*fd, libc::TIOCSCTTY, 0) }.into())
            }
            Step::Dup2 { from, to } => {
                // SAFETY: integer-only syscall; replacing `to` is the intent.
                check(unsafe { libc::dup2(*from, *to) }.into())
            }
            Step::SetRlimit {
                resource,
                soft,
                hard,
            } => {
                let limit = libc::rlimit {
                    rlim_cur: *soft,
                    rlim_max: *hard,
                };
                // SAFETY: `limit` is valid for the call; no old value wanted.
                let ret = unsafe { libc::prlimit(0, *resource as _, &limit, std::ptr::null_mut()) };
                check(ret.into())
            }
            Step::SetGroups(groups) => {
                // Raw, for the reason given at `set_user`.
                // SAFETY: pointer and length describe `groups`.
                check(unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) })
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
        // SAFETY: `path` is NUL-terminated.
        let ret = unsafe { libc::faccessat(libc::AT_FDCWD, path.as_ptr(), libc::X_OK, 0) };
        if ret != 0 {
            return false;
        }
        // SAFETY: stat is plain data; zeroes are valid.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: `path` is NUL-terminated and `st` a valid out-pointer.
        let ret = unsafe { libc::stat(path.as_ptr(), &mut st) };
        ret == 0 && st.st_mode & libc::S_IFMT == libc::S_IFREG
    }

    fn report(&self, fd: RawFd, report: Report) {
        let buf = report.encode();
        // SAFETY: `buf` is valid for its length; a failed write has nobody
        // to tell (the agent then sees EOF).
        unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
    }

    fn read_byte(&self, fd: RawFd) -> bool {
        let mut byte = 0u8;
        loop {
            // SAFETY: one byte into `byte`.
            let n = unsafe { libc::read(fd, (&mut byte as *mut u8).cast(), 1) };
            match n {
                1 => return true,
                -1 if errno() == libc::EINTR => continue,
                _ => return false,
            }
        }
    }

    fn exec(&self, path: &CString, argv: &[*const c_char], envp: &[*const c_char]) -> i32 {
        // SAFETY: `argv`/`envp` are null-terminated arrays of pointers to
        // NUL-terminated strings owned by the plan, alive until execve.
        unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
        errno()
    }
}

//! Thin, checked wrappers over the few syscalls the probes make.

use std::ffi::CString;
use std::io;

pub type SysResult<T> = Result<T, String>;

fn cstr(s: &str) -> CString {
    CString::new(s).expect("probe paths have no NUL")
}

/// Turns a `-1` return into the errno text, naming the call.
pub fn check(ret: libc::c_long, what: &str) -> SysResult<libc::c_long> {
    if ret < 0 {
        Err(format!("{what}: {}", io::Error::last_os_error()))
    } else {
        Ok(ret)
    }
}

pub fn mount(
    source: &str,
    target: &str,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> SysResult<()> {
    let (source_c, target_c, fstype_c, data_c) =
        (cstr(source), cstr(target), cstr(fstype), cstr(data));
    let data_ptr = if data.is_empty() {
        std::ptr::null()
    } else {
        data_c.as_ptr()
    };
    // SAFETY: every pointer is a valid NUL-terminated string (or null for
    // data) that outlives the call.
    let ret = unsafe {
        libc::mount(
            source_c.as_ptr(),
            target_c.as_ptr(),
            fstype_c.as_ptr(),
            flags,
            data_ptr.cast(),
        )
    };
    check(ret.into(), &format!("mount {fstype} on {target}")).map(drop)
}

pub fn umount(target: &str) -> SysResult<()> {
    let target_c = cstr(target);
    // SAFETY: target_c is a valid NUL-terminated string.
    let ret = unsafe { libc::umount2(target_c.as_ptr(), libc::MNT_DETACH) };
    check(ret.into(), &format!("umount {target}")).map(drop)
}

pub fn mkdir_p(path: &str) -> SysResult<()> {
    std::fs::create_dir_all(path).map_err(|e| format!("mkdir {path}: {e}"))
}

pub fn close(fd: libc::c_int) {
    // SAFETY: the caller owns fd and does not use it again.
    unsafe { libc::close(fd) };
}

/// Waits for a probe child whose exit code is the step that failed (0: none).
pub fn wait_child(pid: libc::c_long) -> SysResult<()> {
    let mut status = 0;
    // SAFETY: status is a valid out-pointer; pid is our child.
    let ret = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, 0) };
    check(ret.into(), "waitpid")?;
    match (libc::WIFEXITED(status), libc::WEXITSTATUS(status)) {
        (true, 0) => Ok(()),
        (true, step) => Err(format!("child failed at step {step}")),
        _ => Err(format!("child died, wait status {status:#x}")),
    }
}

/// Reboots at once; in a microVM that ends the VM.
pub fn reboot() -> ! {
    // SAFETY: sync and reboot have no memory-safety preconditions; we are
    // PID 1 in a guest, where rebooting is the intended way out.
    unsafe {
        libc::sync();
        libc::reboot(libc::LINUX_REBOOT_CMD_RESTART);
    }
    // reboot() returns only on error; PID 1 must not exit, so wait forever.
    loop {
        std::thread::park();
    }
}

pub fn read_to_string(path: &str) -> SysResult<String> {
    std::fs::read_to_string(path).map_err(|e| format!("read {path}: {e}"))
}

pub fn write(path: &str, data: &str) -> SysResult<()> {
    std::fs::write(path, data).map_err(|e| format!("write {path}: {e}"))
}

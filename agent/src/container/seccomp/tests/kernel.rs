//! The filters in the kernel: each test installs one in a child process and
//! checks what syscalls return there (or that the child is killed).

use super::*;

#[test]
fn kernel_enforces_an_allow_list() {
    let prog = compile_json(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [
            {"names": ["getpid", "exit_group", "exit"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 0xffff_ffffu64, "op": "SCMP_CMP_EQ"}]},
            {"names": ["uname"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EXDEV},
        ]
    }));
    let x32_getpid = libc::c_long::from(X32_SYSCALL_BIT) | libc::SYS_getpid;
    let checks = || {
        [
            raw_syscall(libc::SYS_getpid, 0).is_ok(),
            raw_syscall(libc::SYS_getppid, 0) == Err(libc::EPERM),
            raw_syscall(libc::SYS_uname, 0) == Err(libc::EXDEV),
            raw_syscall(libc::SYS_personality, 0xffff_ffff).is_ok(),
            raw_syscall(libc::SYS_personality, 0x0004_0000) == Err(libc::EPERM),
            // Above exit_group (231), the highest named.
            raw_syscall(libc::SYS_getrandom, 0) == Err(libc::ENOSYS),
            raw_syscall(x32_getpid, 0) == Err(libc::ENOSYS),
        ]
    };
    if let Some(status) = in_child(&prog, checks) {
        assert!(libc::WIFEXITED(status), "child died: status {status:#x}");
        assert_eq!(libc::WEXITSTATUS(status), 0, "a check failed");
    }
}

#[test]
fn kernel_enforces_a_deny_list() {
    let prog = compile_json(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "flags": ["SECCOMP_FILTER_FLAG_LOG"],
        "syscalls": [
            {"names": ["getppid"], "action": "SCMP_ACT_KILL_PROCESS"},
            {"names": ["uname"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EXDEV},
        ]
    }));
    let checks = || {
        let ok = [
            raw_syscall(libc::SYS_getpid, 0).is_ok(),
            raw_syscall(libc::SYS_uname, 0) == Err(libc::EXDEV),
        ];
        // Must not return.
        let _ = raw_syscall(libc::SYS_getppid, 0);
        ok
    };
    if let Some(status) = in_child(&prog, checks) {
        assert!(
            libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSYS,
            "child not killed by SIGSYS: status {status:#x}"
        );
    }
}

/// A raw syscall with one integer argument; the errno on failure.
fn raw_syscall(nr: libc::c_long, arg: libc::c_long) -> Result<libc::c_long, i32> {
    // SAFETY: the syscalls called here take integer arguments or none.
    let ret = unsafe { libc::syscall(nr, arg) };
    if ret == -1 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(ret)
    }
}

/// Installs the filters in a child process, runs `checks` there, and
/// returns the child's wait status: exit status 0 when every check passed,
/// 1 when a filter was refused, else 2 plus the index of the first failing
/// check. `None` when this machine cannot install seccomp filters.
fn in_child<const N: usize>(prog: &SeccompProgram, checks: impl Fn() -> [bool; N]) -> Option<i32> {
    const UNAVAILABLE: i32 = 100;
    let fprogs: Vec<libc::sock_fprog> = prog
        .filters
        .iter()
        .map(|f| libc::sock_fprog {
            len: f.len() as u16,
            filter: f.as_ptr().cast_mut(),
        })
        .collect();
    let allow_all = [stmt(RET_K, ALLOW)];
    let probe = libc::sock_fprog {
        len: 1,
        filter: allow_all.as_ptr().cast_mut(),
    };
    let seccomp = |prog: &libc::sock_fprog, flags: libc::c_ulong| {
        let mode = libc::c_long::from(libc::SECCOMP_SET_MODE_FILTER);
        // SAFETY: `prog` points to a valid sock_fprog whose filter outlives the call.
        unsafe { libc::syscall(libc::SYS_seccomp, mode, flags, prog as *const _) }
    };

    // SAFETY: the child only makes raw syscalls on memory prepared before
    // the fork and leaves with _exit; it allocates nothing and takes no lock.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        // SAFETY: PR_SET_NO_NEW_PRIVS takes integer arguments.
        let nnp = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
        let code = if nnp != 0 || seccomp(&probe, 0) != 0 {
            UNAVAILABLE
        } else if fprogs.iter().any(|f| seccomp(f, prog.flags) != 0) {
            1
        } else {
            checks()
                .iter()
                .position(|ok| !ok)
                .map_or(0, |i| i as i32 + 2)
        };
        // SAFETY: ends the child without running the parent's destructors.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child with a valid status pointer.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(waited, pid);
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == UNAVAILABLE {
        eprintln!("seccomp filters unavailable here; kernel check skipped");
        return None;
    }
    Some(status)
}

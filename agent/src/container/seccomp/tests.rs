//! Tests: compile profiles and run the filter with a small classic-BPF
//! interpreter (combining the verdicts of several filters as the kernel
//! would); `kernel` installs filters in child processes to check that the
//! kernel accepts and enforces them.

use super::*;
use serde_json::json;

mod kernel;

const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
const KILL_THREAD: u32 = libc::SECCOMP_RET_KILL_THREAD;
const KILL_PROCESS: u32 = libc::SECCOMP_RET_KILL_PROCESS;
const TRAP: u32 = libc::SECCOMP_RET_TRAP;
const LOG: u32 = libc::SECCOMP_RET_LOG;
const AUDIT_ARCH_I386: u32 = 0x4000_0003;

fn errno(e: i32) -> u32 {
    libc::SECCOMP_RET_ERRNO | e as u32
}

fn trace(data: u32) -> u32 {
    libc::SECCOMP_RET_TRACE | data
}

fn nr(name: &str) -> u32 {
    Sysno::from_str(name).expect("known syscall").id() as u32
}

fn profile(value: serde_json::Value) -> LinuxSeccomp {
    serde_json::from_value(value).expect("valid profile")
}

fn compile_json(value: serde_json::Value) -> SeccompProgram {
    compile(&profile(value)).expect("profile compiles")
}

/// One `struct seccomp_data`.
struct Call {
    nr: u32,
    arch: u32,
    args: [u64; 6],
}

impl Call {
    fn new(name: &str, args: &[u64]) -> Call {
        Call::raw(nr(name), args)
    }

    fn raw(nr: u32, args: &[u64]) -> Call {
        let mut all = [0; 6];
        all[..args.len()].copy_from_slice(args);
        Call {
            nr,
            arch: AUDIT_ARCH_X86_64,
            args: all,
        }
    }

    fn bytes(&self) -> [u8; 64] {
        let mut b = [0u8; 64];
        b[0..4].copy_from_slice(&self.nr.to_ne_bytes());
        b[4..8].copy_from_slice(&self.arch.to_ne_bytes());
        for (i, arg) in self.args.iter().enumerate() {
            b[16 + 8 * i..24 + 8 * i].copy_from_slice(&arg.to_ne_bytes());
        }
        b
    }
}

/// Runs one filter the way the kernel's classic BPF does, for the opcodes
/// our filters use; panics on anything else or on a jump out of the program.
fn run(prog: &[libc::sock_filter], call: &Call) -> u32 {
    const AND_K: u16 = (libc::BPF_ALU | libc::BPF_AND | libc::BPF_K) as u16;
    const JA: u16 = (libc::BPF_JMP | libc::BPF_JA) as u16;
    const JSET_K: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
    assert!(!prog.is_empty() && prog.len() <= BPF_MAXINSNS);
    let data = call.bytes();
    let mut acc = 0u32;
    let mut pc = 0usize;
    loop {
        let ins = prog.get(pc).expect("jumped past the end of the filter");
        pc += 1;
        let cond = |taken: bool| usize::from(if taken { ins.jt } else { ins.jf });
        match ins.code {
            LD_W_ABS => {
                let off = ins.k as usize;
                assert!(off & 3 == 0 && off + 4 <= data.len(), "bad load {off}");
                acc = u32::from_ne_bytes(data[off..off + 4].try_into().unwrap());
            }
            AND_K => acc &= ins.k,
            JA => pc += ins.k as usize,
            JEQ_K => pc += cond(acc == ins.k),
            JGT_K => pc += cond(acc > ins.k),
            JGE_K => pc += cond(acc >= ins.k),
            JSET_K => pc += cond(acc & ins.k != 0),
            RET_K => return ins.k,
            code => panic!("unsupported BPF opcode {code:#x}"),
        }
    }
}

/// The kernel's verdict over all filters: the most restrictive action, and
/// between equal actions the value of the filter installed last.
fn verdict(prog: &SeccompProgram, call: &Call) -> u32 {
    let precedence = |ret: u32| (ret & libc::SECCOMP_RET_ACTION_FULL) as i32;
    let mut ret = ALLOW;
    for filter in prog.filters.iter().rev() {
        let cur = run(filter, call);
        if precedence(cur) < precedence(ret) {
            ret = cur;
        }
    }
    ret
}

fn check(prog: &SeccompProgram, name: &str, args: &[u64], expected: u32) {
    let got = verdict(prog, &Call::new(name, args));
    assert_eq!(
        got, expected,
        "{name}{args:x?}: got {got:#x}, want {expected:#x}"
    );
}

#[test]
fn seccomp_data_layout() {
    assert_eq!(
        std::mem::offset_of!(libc::seccomp_data, nr),
        NR_OFFSET as usize
    );
    assert_eq!(
        std::mem::offset_of!(libc::seccomp_data, arch),
        ARCH_OFFSET as usize
    );
    assert_eq!(std::mem::offset_of!(libc::seccomp_data, args), 16);
}

#[test]
fn allow_list_with_default_errno() {
    let prog = compile_json(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [
            {"names": ["read", "write", "openat", "exit_group"], "action": "SCMP_ACT_ALLOW"},
        ]
    }));
    assert_eq!(prog.flags, 0);
    assert_eq!(prog.filters.len(), 1);
    for name in ["read", "write", "openat", "exit_group"] {
        check(&prog, name, &[1, 2, 3], ALLOW);
    }
    check(&prog, "mount", &[], errno(libc::EPERM));
    check(&prog, "close", &[], errno(libc::EPERM));
    // Above the highest syscall named (openat, 257): ENOSYS, as with runc.
    check(&prog, "clone3", &[], errno(libc::ENOSYS));
    // x32 and other architectures.
    let x32_read = Call::raw(X32_SYSCALL_BIT | nr("read"), &[]);
    assert_eq!(verdict(&prog, &x32_read), errno(libc::ENOSYS));
    let mut i386 = Call::new("read", &[]);
    i386.arch = AUDIT_ARCH_I386;
    assert_eq!(verdict(&prog, &i386), KILL_PROCESS);
}

#[test]
fn custom_default_errno_and_rule_errno() {
    let prog = compile_json(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": libc::EACCES,
        "syscalls": [
            {"names": ["getpid"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::ENOSYS},
            {"names": ["mount"], "action": "SCMP_ACT_ERRNO"},
            // Same as the default: skipped, like runc does.
            {"names": ["umount2"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EACCES},
        ]
    }));
    check(&prog, "getpid", &[], ALLOW);
    check(&prog, "getppid", &[], errno(libc::EACCES));
    check(&prog, "clone3", &[], errno(libc::ENOSYS));
    check(&prog, "mount", &[], errno(libc::EPERM));
    check(&prog, "umount2", &[], errno(libc::EACCES));
    // clone3 (435) is the highest named.
    check(&prog, "open_tree", &[], errno(libc::EACCES));
    check(&prog, "openat2", &[], errno(libc::ENOSYS));
}

#[test]
fn argument_conditions() {
    const NAMESPACES: u64 = 0x7e02_0000;
    let prog = compile_json(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [
            {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": NAMESPACES, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 0xffff_ffffu64, "op": "SCMP_CMP_EQ"}]},
            // ANDed conditions, two on the same argument.
            {"names": ["kill"], "action": "SCMP_ACT_ALLOW",
             "args": [
                {"index": 0, "value": 10, "op": "SCMP_CMP_GE"},
                {"index": 0, "value": 20, "op": "SCMP_CMP_LT"},
                {"index": 1, "value": 9, "op": "SCMP_CMP_NE"},
             ]},
            {"names": ["lseek"], "action": "SCMP_ACT_ALLOW",
             "args": [
                {"index": 2, "value": 0x1_0000_0000u64, "op": "SCMP_CMP_LE"},
                {"index": 1, "value": 0x1_0000_0000u64, "op": "SCMP_CMP_GT"},
             ]},
        ]
    }));
    let eperm = errno(libc::EPERM);
    check(&prog, "clone", &[libc::SIGCHLD as u64], ALLOW);
    check(&prog, "clone", &[0x3d0f00 | libc::SIGCHLD as u64], ALLOW);
    check(&prog, "clone", &[libc::CLONE_NEWUSER as u64], eperm);
    check(&prog, "clone", &[libc::CLONE_NEWNET as u64 | 17], eperm);
    check(&prog, "clone", &[1 << 40], ALLOW);
    for persona in [0, 8, 0xffff_ffff] {
        check(&prog, "personality", &[persona], ALLOW);
    }
    check(&prog, "personality", &[0x0004_0000], eperm);
    check(&prog, "personality", &[0x1_0000_0000], eperm);
    check(&prog, "personality", &[0xffff_ffff_ffff_ffff], eperm);
    check(&prog, "kill", &[10, 15], ALLOW);
    check(&prog, "kill", &[19, 0], ALLOW);
    check(&prog, "kill", &[15, 9], eperm);
    check(&prog, "kill", &[9, 15], eperm);
    check(&prog, "kill", &[20, 15], eperm);
    check(&prog, "lseek", &[0, 0x1_0000_0001, 0x1_0000_0000], ALLOW);
    check(&prog, "lseek", &[0, 0x2_0000_0000, 5], ALLOW);
    check(&prog, "lseek", &[0, 0x1_0000_0000, 5], eperm);
    check(&prog, "lseek", &[0, 0x1_0000_0001, 0x1_0000_0001], eperm);
    check(&prog, "lseek", &[0, 0xffff_ffff, 0], eperm);
}

#[test]
fn deny_list_with_default_allow() {
    let prog = compile_json(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["mount", "umount2"], "action": "SCMP_ACT_ERRNO"},
            {"names": ["unshare"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EACCES},
            {"names": ["reboot"], "action": "SCMP_ACT_KILL_PROCESS"},
            {"names": ["kexec_load"], "action": "SCMP_ACT_KILL"},
            {"names": ["init_module"], "action": "SCMP_ACT_KILL_THREAD"},
            {"names": ["ptrace"], "action": "SCMP_ACT_TRAP"},
            {"names": ["bpf"], "action": "SCMP_ACT_LOG"},
            {"names": ["perf_event_open"], "action": "SCMP_ACT_TRACE", "errnoRet": 7},
            {"names": ["acct"], "action": "SCMP_ACT_TRACE"},
            {"names": ["socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EAFNOSUPPORT,
             "args": [{"index": 0, "value": libc::AF_VSOCK, "op": "SCMP_CMP_EQ"}]},
            {"names": ["getpid"], "action": "SCMP_ACT_ALLOW"},
        ]
    }));
    assert_eq!(prog.filters.len(), 1);
    check(&prog, "mount", &[], errno(libc::EPERM));
    check(&prog, "umount2", &[], errno(libc::EPERM));
    check(&prog, "unshare", &[], errno(libc::EACCES));
    check(&prog, "reboot", &[], KILL_PROCESS);
    check(&prog, "kexec_load", &[], KILL_THREAD);
    check(&prog, "init_module", &[], KILL_THREAD);
    check(&prog, "ptrace", &[], TRAP);
    check(&prog, "bpf", &[], LOG);
    check(&prog, "perf_event_open", &[], trace(7));
    check(&prog, "acct", &[], trace(libc::EPERM as u32));
    check(
        &prog,
        "socket",
        &[libc::AF_VSOCK as u64],
        errno(libc::EAFNOSUPPORT),
    );
    check(&prog, "socket", &[libc::AF_INET as u64], ALLOW);
    for name in ["getpid", "read", "clone3", "file_setattr"] {
        check(&prog, name, &[], ALLOW);
    }
    // No ENOSYS above the highest name with a permissive default, but x32
    // numbers cannot slip past the deny-list.
    let x32_mount = Call::raw(X32_SYSCALL_BIT | nr("mount"), &[]);
    assert_eq!(verdict(&prog, &x32_mount), errno(libc::ENOSYS));
}

#[test]
fn default_kill_and_log() {
    let prog = compile_json(json!({
        "defaultAction": "SCMP_ACT_KILL_PROCESS",
        "syscalls": [
            {"names": ["read"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["write"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EROFS},
            {"names": ["close"], "action": "SCMP_ACT_LOG"},
        ]
    }));
    check(&prog, "read", &[], ALLOW);
    check(&prog, "write", &[], errno(libc::EROFS));
    check(&prog, "close", &[], LOG);
    check(&prog, "open", &[], KILL_PROCESS);
    // Above close (3), the highest named.
    check(&prog, "fstat", &[], errno(libc::ENOSYS));

    // Nothing named: the default everywhere, no ENOSYS.
    let prog = compile_json(json!({"defaultAction": "SCMP_ACT_KILL"}));
    assert_eq!(prog.filters.len(), 1);
    check(&prog, "read", &[], KILL_THREAD);
    check(&prog, "file_setattr", &[], KILL_THREAD);

    // Audit mode: log everything but the allowed and the denied.
    let prog = compile_json(json!({
        "defaultAction": "SCMP_ACT_LOG",
        "syscalls": [
            {"names": ["read"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["mount"], "action": "SCMP_ACT_ERRNO"},
        ]
    }));
    check(&prog, "read", &[], ALLOW);
    check(&prog, "mount", &[], errno(libc::EPERM));
    check(&prog, "write", &[], LOG);
    check(&prog, "file_setattr", &[], LOG);
}

#[test]
fn overlapping_rules() {
    let prog = compile_json(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [
            {"names": ["socket"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EINVAL,
             "args": [{"index": 0, "value": libc::AF_VSOCK, "op": "SCMP_CMP_EQ"}]},
            {"names": ["ptrace"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EACCES},
            {"names": ["ptrace"], "action": "SCMP_ACT_KILL_PROCESS",
             "args": [{"index": 0, "value": 16, "op": "SCMP_CMP_EQ"}]},
            {"names": ["ptrace"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EBUSY},
        ]
    }));
    check(&prog, "socket", &[libc::AF_INET as u64], ALLOW);
    check(
        &prog,
        "socket",
        &[libc::AF_VSOCK as u64],
        errno(libc::EINVAL),
    );
    check(&prog, "ptrace", &[16], KILL_PROCESS);
    // Two ERRNO values: the earlier entry wins.
    check(&prog, "ptrace", &[0], errno(libc::EACCES));
}

#[test]
fn unknown_names_are_skipped() {
    let prog = compile_json(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [
            {"names": ["read", "no_such_syscall", "_llseek"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["socketcall", "sigreturn"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["also_unknown"], "action": "SCMP_ACT_KILL"},
        ]
    }));
    check(&prog, "read", &[], ALLOW);
    // read (0) is the only name known, hence the highest.
    check(&prog, "write", &[], errno(libc::ENOSYS));
    check(&prog, "close", &[], errno(libc::ENOSYS));
    let prog = compile_json(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["nope"], "action": "SCMP_ACT_ERRNO"}]
    }));
    assert!(prog.filters.is_empty());
}

#[test]
fn nothing_to_install() {
    for value in [
        json!({"defaultAction": "SCMP_ACT_ALLOW"}),
        json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": []}),
        json!({"defaultAction": "SCMP_ACT_ALLOW",
               "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}]}),
    ] {
        assert!(compile_json(value).filters.is_empty());
    }
}

#[test]
fn every_syscall_allowed_fits() {
    let names: Vec<&str> = Sysno::iter().map(|s| s.name()).collect();
    let prog = compile_json(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [{"names": names, "action": "SCMP_ACT_ALLOW"}]
    }));
    assert_eq!(prog.filters.len(), 1);
    for sysno in Sysno::iter() {
        check(&prog, sysno.name(), &[], ALLOW);
    }
    let beyond = Sysno::last().id() as u32 + 1;
    assert_eq!(verdict(&prog, &Call::raw(beyond, &[])), errno(libc::ENOSYS));
}

#[test]
fn flags() {
    let prog = compile_json(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "flags": ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG",
                  "SECCOMP_FILTER_FLAG_SPEC_ALLOW"]
    }));
    assert_eq!(
        prog.flags,
        libc::SECCOMP_FILTER_FLAG_TSYNC
            | libc::SECCOMP_FILTER_FLAG_LOG
            | libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW
    );
    let err = compile(&profile(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "flags": ["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]
    })))
    .unwrap_err();
    assert!(matches!(err, SeccompError::UnsupportedFlag(_)), "{err}");
    // Unknown flags do not get past the spec's parser.
    let unknown: Result<LinuxSeccomp, _> = serde_json::from_value(json!({
        "defaultAction": "SCMP_ACT_ERRNO", "flags": ["SECCOMP_FILTER_FLAG_NOPE"]
    }));
    assert!(unknown.is_err());
}

#[test]
fn refused_profiles() {
    let refused = |value| compile(&profile(value)).unwrap_err();
    let notify = [
        json!({"defaultAction": "SCMP_ACT_NOTIFY"}),
        json!({"defaultAction": "SCMP_ACT_ALLOW",
               "syscalls": [{"names": ["mount"], "action": "SCMP_ACT_NOTIFY"}]}),
        json!({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/run/agent.sock"}),
    ];
    for value in notify {
        assert!(matches!(refused(value), SeccompError::UnsupportedNotify));
    }
    let err = refused(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_AARCH64", "SCMP_ARCH_X86"]
    }));
    assert!(matches!(err, SeccompError::MissingArch(_)), "{err}");
    assert_eq!(
        err.to_string(),
        "the seccomp architectures (SCMP_ARCH_AARCH64, SCMP_ARCH_X86) do not include SCMP_ARCH_X86_64"
    );
    let err = refused(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mmap"], "action": "SCMP_ACT_ERRNO",
                      "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]
    }));
    assert!(
        matches!(&err, SeccompError::InvalidArgIndex { syscall, index: 6 } if syscall == "mmap"),
        "{err}"
    );
    let err = refused(json!({
        "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 70000
    }));
    assert!(matches!(
        err,
        SeccompError::InvalidReturnValue { value: 70000, .. }
    ));

    // Native stands for x86_64.
    let native = json!({"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_NATIVE"]});
    assert_eq!(compile_json(native).filters.len(), 1);
}

#[test]
fn too_large_for_one_filter() {
    let rules: Vec<_> = (0..350)
        .map(|i| {
            json!({"names": ["ioctl"], "action": "SCMP_ACT_ERRNO",
                        "args": [{"index": 1, "value": i, "op": "SCMP_CMP_EQ"}]})
        })
        .collect();
    let err = compile(&profile(
        json!({"defaultAction": "SCMP_ACT_KILL", "syscalls": rules}),
    ))
    .unwrap_err();
    assert!(
        matches!(err, SeccompError::FilterTooLarge { len } if len > 4096),
        "{err}"
    );
}

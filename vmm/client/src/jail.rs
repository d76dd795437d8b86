//! The VMM's jail as whoever starts one sees it: the flags that set it
//! ([`JailSpec`]), the exit status of a VMM its seccomp policy stopped
//! ([`BAD_SYSCALL_EXIT_CODE`]), and the reason any VMM exit gives
//! ([`exit_reason`]). The VMM enforces it (`vessel_vmm::jail`).

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

/// The exit code of a VMM one of whose threads made a syscall outside its
/// seccomp policy (128 + SIGSYS, as a shell reports a process killed by
/// SIGSYS). The VMM's log names the thread and the syscall's number.
pub const BAD_SYSCALL_EXIT_CODE: i32 = 128 + 31;

/// How the VMM's log line about a trapped syscall starts; the line then
/// names the thread and the syscall's number.
pub const SECCOMP_REPORT_PREFIX: &str = "vessel-vmm: seccomp: ";

/// The last line of a VMM's log `text` about a trapped syscall, if any.
pub fn seccomp_report(text: &str) -> Option<&str> {
    text.lines()
        .rev()
        .find(|line| line.starts_with(SECCOMP_REPORT_PREFIX))
}

/// What happens when a VMM thread makes a syscall outside its policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SeccompMode {
    /// The VMM logs the thread and the syscall and exits with
    /// [`BAD_SYSCALL_EXIT_CODE`]. The default.
    #[default]
    Kill,
    /// Debugging only (deriving a policy): the syscall runs and the kernel
    /// logs it (`audit: type=1326` in the kernel log, with the thread's name
    /// and the syscall's number).
    Log,
}

impl SeccompMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SeccompMode::Kill => "kill",
            SeccompMode::Log => "log",
        }
    }

    pub fn parse(text: &str) -> Option<SeccompMode> {
        match text {
            "kill" => Some(SeccompMode::Kill),
            "log" => Some(SeccompMode::Log),
            _ => None,
        }
    }
}

/// How a VMM is jailed. The default is the whole jail; every field that
/// weakens it is for debugging only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JailSpec {
    /// `--jail off`: no namespaces of its own, every capability kept, no
    /// seccomp, no rlimits. Debugging only.
    pub disabled: bool,
    /// `--seccomp MODE`.
    pub seccomp: SeccompMode,
    /// `--rlimit-nofile N`: the most files the VMM may hold open; `None` is
    /// the VMM's default (virtio-fs passthrough holds one per guest inode
    /// it knows of).
    pub max_open_files: Option<u64>,
    /// `--rlimit-fsize BYTES`: the largest file the VMM may write; `None`
    /// is no limit (a guest writes files of any size on its volumes, and a
    /// snapshot's memory file is the guest's memory).
    pub max_file_bytes: Option<u64>,
    /// `--debug-api on`: the API also serves `debug_forbidden_syscall`,
    /// which makes a syscall outside the API thread's policy, to test that
    /// the policy kills the VMM. Never in production.
    pub debug_api: bool,
}

impl JailSpec {
    /// The VMM flags of this jail (none for the default).
    pub fn args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if self.disabled {
            args.extend(["--jail".to_owned(), "off".to_owned()]);
        }
        if self.seccomp != SeccompMode::Kill {
            args.extend(["--seccomp".to_owned(), self.seccomp.as_str().to_owned()]);
        }
        if let Some(n) = self.max_open_files {
            args.extend(["--rlimit-nofile".to_owned(), n.to_string()]);
        }
        if let Some(n) = self.max_file_bytes {
            args.extend(["--rlimit-fsize".to_owned(), n.to_string()]);
        }
        if self.debug_api {
            args.extend(["--debug-api".to_owned(), "on".to_owned()]);
        }
        args
    }
}

/// The VMM proper of a jailed VMM whose process (its monitor, the one its
/// starter spawned) is `pid`: the monitor's one child, pid 1 of the VMM's
/// pid namespace. `pid` itself when it has no child (`--jail off`, or the
/// VMM has not forked yet or is gone). Memory and `/proc` checks read this
/// one; signals go to `pid`, which passes a kill on.
pub fn vmm_pid(pid: u32) -> u32 {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(pid)
}

/// Every process of the VMM spawned as `pid`: its monitor and the VM's
/// process, or `pid` alone when it has no child ([`vmm_pid`]). Memory
/// figures sum them.
pub fn vmm_processes(pid: u32) -> Vec<u32> {
    match vmm_pid(pid) {
        vm if vm == pid => vec![pid],
        vm => vec![pid, vm],
    }
}

/// Why a VMM exited, in words for a log or an error: its seccomp policy
/// stopped it, a signal killed it, it failed, or the guest shut down.
pub fn exit_reason(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(0), _) => "the VM shut down".to_owned(),
        (Some(BAD_SYSCALL_EXIT_CODE), _) => {
            "a VMM thread made a syscall outside its seccomp policy, which stopped the VMM \
             (vmm.log names the thread and the syscall)"
                .to_owned()
        }
        (Some(code), _) => format!("the VMM failed with exit code {code} (see vmm.log)"),
        (None, Some(libc::SIGSYS)) => {
            "the kernel killed the VMM for a syscall outside its seccomp policy".to_owned()
        }
        (None, Some(signal)) => format!("the VMM was killed by signal {signal}"),
        (None, None) => format!("the VMM ended: {status}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_jail_adds_no_flags_and_each_weakening_is_spelled_out() {
        assert!(JailSpec::default().args().is_empty());
        let debug = JailSpec {
            disabled: true,
            seccomp: SeccompMode::Log,
            max_open_files: Some(4096),
            max_file_bytes: Some(1 << 30),
            debug_api: true,
        };
        assert_eq!(
            debug.args().join(" "),
            "--jail off --seccomp log --rlimit-nofile 4096 --rlimit-fsize 1073741824 \
             --debug-api on"
        );
    }

    #[test]
    fn the_vmm_is_the_monitors_child_and_a_process_without_one_is_its_own() {
        // sh plays the monitor: its one child plays the VMM.
        let mut monitor = std::process::Command::new("sh")
            .args(["-c", "sleep 30 & wait"])
            .spawn()
            .unwrap();
        let pid = monitor.id();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while vmm_pid(pid) == pid && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let vmm = vmm_pid(pid);
        assert_ne!(vmm, pid);
        assert_eq!(vmm_processes(pid), [pid, vmm]);
        assert!(std::fs::read_to_string(format!("/proc/{vmm}/cmdline"))
            .unwrap()
            .starts_with("sleep"));
        assert_eq!(vmm_pid(vmm), vmm);
        assert_eq!(vmm_processes(vmm), [vmm]);
        // SAFETY: kill takes integers; the sleep is our grandchild.
        unsafe { libc::kill(vmm as i32, libc::SIGKILL) };
        monitor.wait().unwrap();
    }

    #[test]
    fn the_report_is_the_last_seccomp_line() {
        let log = "x\nvessel-vmm: seccomp: the api thread made syscall 121, which its policy \
                   forbids; exiting with 159\ny\n";
        assert!(seccomp_report(log).unwrap().contains("syscall 121"));
        assert_eq!(seccomp_report("nothing\n"), None);
    }

    #[test]
    fn modes_round_trip() {
        for mode in [SeccompMode::Kill, SeccompMode::Log] {
            assert_eq!(SeccompMode::parse(mode.as_str()), Some(mode));
        }
        assert_eq!(SeccompMode::parse("trap"), None);
    }

    #[test]
    fn a_seccomp_stop_is_told_apart_from_other_exits() {
        let exit = |code: i32| ExitStatus::from_raw(code << 8);
        assert!(exit_reason(exit(BAD_SYSCALL_EXIT_CODE)).contains("seccomp policy"));
        assert!(exit_reason(ExitStatus::from_raw(libc::SIGSYS)).contains("seccomp"));
        assert_eq!(exit_reason(exit(0)), "the VM shut down");
        assert!(exit_reason(exit(1)).contains("exit code 1"));
        assert!(exit_reason(ExitStatus::from_raw(libc::SIGKILL)).contains("signal 9"));
    }
}

//! Per-thread seccomp filters. Each VMM thread applies its own policy as
//! it starts, before it touches anything the guest controls: `monitor`
//! (the parent in the host's pid namespace), `main` (waits for the VM's
//! end), `events` (the device event loop: serial, rng, vsock), `fs` (the
//! virtio-fs server), `vcpu` (each vCPU) and `api` (the API socket and
//! its connections). The policies are commented JSON
//! (`vmm/seccomp/x86_64.json`), compiled to BPF by `build.rs`.
//!
//! A syscall outside a thread's policy traps: the SIGSYS handler writes
//! the thread's role and the syscall's number to the VMM's log and exits
//! with [`BAD_SYSCALL_EXIT_CODE`], which the shim reports as the reason the
//! sandbox ended (`vessel_vmm_client::jail::exit_reason`). With `--seccomp
//! log` (debugging only: deriving a policy) the syscall runs and the kernel
//! logs it instead.

use std::cell::Cell;
use std::fmt::Write as _;

use vessel_vmm_client::jail::{SeccompMode, BAD_SYSCALL_EXIT_CODE, SECCOMP_REPORT_PREFIX};

/// One BPF instruction: code, jump if true, jump if false, immediate.
type Insn = (u16, u8, u8, u32);

include!(concat!(env!("OUT_DIR"), "/seccomp_filters.rs"));

/// Why a seccomp filter could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("install the SIGSYS handler")]
    InstallHandler(#[source] std::io::Error),
    #[error("no seccomp policy for the {0} thread in seccomp/x86_64.json")]
    NoPolicy(&'static str),
    #[error("apply the {role} thread's seccomp filter")]
    Apply {
        role: &'static str,
        #[source]
        source: seccompiler::Error,
    },
}

/// What a thread does, and so which policy it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Monitor,
    Main,
    Events,
    Fs,
    Vcpu,
    Api,
}

impl Role {
    pub const ALL: [Role; 6] = [
        Role::Monitor,
        Role::Main,
        Role::Events,
        Role::Fs,
        Role::Vcpu,
        Role::Api,
    ];

    /// The policy's name in the JSON file.
    pub fn name(self) -> &'static str {
        match self {
            Role::Monitor => "monitor",
            Role::Main => "main",
            Role::Events => "events",
            Role::Fs => "fs",
            Role::Vcpu => "vcpu",
            Role::Api => "api",
        }
    }
}

thread_local! {
    /// The role of this thread's filter, for the SIGSYS handler.
    static ROLE: Cell<Option<Role>> = const { Cell::new(None) };
}

/// The filters every thread applies: `None` when the jail is off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadFilters(Option<SeccompMode>);

impl ThreadFilters {
    /// No filters (`--jail off`).
    pub const OFF: ThreadFilters = ThreadFilters(None);

    /// Filters in `mode`, after installing the SIGSYS handler that reports
    /// a trapped syscall. Call while the VMM has one thread.
    pub fn install(mode: SeccompMode) -> Result<ThreadFilters, SeccompError> {
        install_sigsys_handler()?;
        Ok(ThreadFilters(Some(mode)))
    }

    /// Names `role` as the calling thread's, for the SIGSYS handler's
    /// report, in a thread that inherited that role's filter from the
    /// thread that started it.
    pub fn inherited(self, role: Role) {
        if self.0.is_some() {
            ROLE.with(|r| r.set(Some(role)));
        }
    }

    /// Applies `role`'s filter to the calling thread (and the threads it
    /// starts later). A thread that cannot be filtered must not run
    /// unfiltered: the VMM exits.
    pub fn apply(self, role: Role) {
        let Some(mode) = self.0 else {
            return;
        };
        if let Err(error) = apply(role, mode) {
            tracing::error!(error = %crate::error_chain(&error), "seccomp: exiting");
            std::process::exit(1);
        }
    }
}

/// The BPF program of `role` in `mode`.
fn program(role: Role, mode: SeccompMode) -> Result<seccompiler::BpfProgram, SeccompError> {
    let (_, trap, log) = FILTERS
        .iter()
        .find(|(name, _, _)| *name == role.name())
        .ok_or(SeccompError::NoPolicy(role.name()))?;
    let insns = match mode {
        SeccompMode::Kill => trap,
        SeccompMode::Log => log,
    };
    Ok(insns
        .iter()
        .map(|&(code, jt, jf, k)| seccompiler::sock_filter { code, jt, jf, k })
        .collect())
}

fn apply(role: Role, mode: SeccompMode) -> Result<(), SeccompError> {
    let program = program(role, mode)?;
    ROLE.with(|r| r.set(Some(role)));
    seccompiler::apply_filter(&program).map_err(|source| SeccompError::Apply {
        role: role.name(),
        source,
    })
}

/// The part of `siginfo_t` that SIGSYS fills (x86_64 layout).
#[repr(C)]
struct SigsysInfo {
    signo: libc::c_int,
    errno: libc::c_int,
    code: libc::c_int,
    _pad: libc::c_int,
    call_addr: *mut libc::c_void,
    syscall: libc::c_int,
    arch: libc::c_uint,
}

/// A message in a fixed buffer: formatting without allocating, for the
/// signal handler.
struct StackMessage {
    buf: [u8; 192],
    len: usize,
}

impl std::fmt::Write for StackMessage {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// The message of a trapped syscall.
fn trapped_message(role: Option<Role>, syscall: i32) -> StackMessage {
    let mut message = StackMessage {
        buf: [0; 192],
        len: 0,
    };
    let role = role.map_or("unfiltered", Role::name);
    let _ = writeln!(
        message,
        "{SECCOMP_REPORT_PREFIX}the {role} thread made syscall {syscall}, which its policy \
         forbids; exiting with {BAD_SYSCALL_EXIT_CODE}"
    );
    message
}

extern "C" fn on_sigsys(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel hands SIGSYS's handler a siginfo whose _sigsys
    // fields follow the common header, as SigsysInfo lays them out.
    let syscall = unsafe { (*(info as *const SigsysInfo)).syscall };
    let message = trapped_message(ROLE.with(Cell::get), syscall);
    // SAFETY: write(2) and _exit(2) are async-signal-safe, and every
    // policy allows them; the buffer lives on this stack.
    unsafe {
        libc::write(2, message.buf.as_ptr().cast(), message.len);
        libc::_exit(BAD_SYSCALL_EXIT_CODE);
    }
}

fn install_sigsys_handler() -> Result<(), SeccompError> {
    // SAFETY: a zeroed sigaction is valid; we set the handler and flags.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = on_sigsys as *const () as usize;
    action.sa_flags = libc::SA_SIGINFO;
    // SAFETY: sigemptyset initialises the mask it is given.
    unsafe { libc::sigemptyset(&mut action.sa_mask) };
    // SAFETY: installs a handler that only formats on its stack, writes
    // and exits.
    if unsafe { libc::sigaction(libc::SIGSYS, &action, std::ptr::null_mut()) } != 0 {
        return Err(SeccompError::InstallHandler(std::io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_role_has_a_policy_in_both_modes() {
        for role in Role::ALL {
            for mode in [SeccompMode::Kill, SeccompMode::Log] {
                let program = program(role, mode).unwrap();
                assert!(
                    program.len() > 10,
                    "{}: {} instructions",
                    role.name(),
                    program.len()
                );
            }
        }
        assert_eq!(
            FILTERS.len(),
            Role::ALL.len(),
            "a policy for a thread that does not exist"
        );
    }

    #[test]
    fn the_trap_message_names_the_thread_and_the_syscall() {
        let message = trapped_message(Some(Role::Vcpu), 59);
        let text = std::str::from_utf8(&message.buf[..message.len]).unwrap();
        assert_eq!(
            text,
            "vessel-vmm: seccomp: the vcpu thread made syscall 59, which its policy forbids; \
             exiting with 159\n"
        );
    }

    /// In a child process: a filter cannot be taken back.
    #[test]
    fn a_syscall_outside_the_policy_exits_with_the_bad_syscall_code() {
        // SAFETY: the child only applies a filter, makes syscalls and exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: prctl(PR_SET_NO_NEW_PRIVS) takes integers only.
            unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
            let filters = ThreadFilters::install(SeccompMode::Kill).unwrap();
            filters.apply(Role::Monitor);
            // SAFETY: getpgid(0) has no preconditions; the monitor's policy
            // does not allow it.
            unsafe { libc::syscall(libc::SYS_getpgid, 0) };
            // SAFETY: only reached if the filter let getpgid through.
            unsafe { libc::_exit(0) };
        }
        let mut status = 0;
        // SAFETY: waits for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status), "status {status:#x}");
        assert_eq!(libc::WEXITSTATUS(status), BAD_SYSCALL_EXIT_CODE);
    }
}

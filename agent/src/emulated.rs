//! The agent's part of the emulated-CPL0 host profile (see
//! kernel-config/README.md): on hosts where KVM emulates guest kernel code,
//! a kernel copy to user memory can land wrongly when it page-faults while
//! another thread of the same process changes the address space (here: the
//! agent starting ttrpc threads for a new connection while the reader
//! thread receives a large request). The bytes the agent then reads are
//! corrupt ("Incorrect tag" from ttrpc, or a hang on a wrong length).
//!
//! The cure: keep every page of the agent resident (`mlockall` with
//! `MCL_FUTURE`), so copies into it never fault, and give its threads small
//! stacks so that costs little memory. The runners pass `emulated_cpl0` on
//! the kernel command line only on such hosts; elsewhere nothing changes.

use crate::sys::Sys;

/// The kernel command-line word of the emulated-CPL0 profile.
pub const CMDLINE_FLAG: &str = "emulated_cpl0";

/// Stack size of the agent's threads under the profile: ttrpc's handlers
/// need little, and locked stacks are resident memory.
pub const THREAD_STACK: usize = 256 * 1024;

/// Whether `cmdline` asks for the emulated-CPL0 profile.
pub fn requested(cmdline: &str) -> bool {
    cmdline.split_whitespace().any(|w| w == CMDLINE_FLAG)
}

/// Applies the cure; call before any thread starts. Returns whether it was
/// applied.
pub fn apply(sys: &dyn Sys, cmdline: &str) -> std::io::Result<bool> {
    if !requested(cmdline) {
        return Ok(false);
    }
    sys.set_thread_stack(THREAD_STACK);
    sys.lock_memory()?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{Call, FakeSys};

    #[test]
    fn only_the_profile_locks_memory() {
        let sys = FakeSys::default();
        assert!(!apply(&sys, "console=ttyS0 quiet").unwrap());
        assert!(sys.calls().is_empty());
        assert!(apply(&sys, "console=ttyS0 emulated_cpl0 noxsave").unwrap());
        assert_eq!(
            sys.calls(),
            [Call::ThreadStack(THREAD_STACK), Call::LockMemory]
        );
        assert!(!requested("emulated_cpl0x"));
    }
}

//! What runs beside the Task API calls, on threads of its own:
//!
//! - `pumps.rs`: a process's stdio pumps (containerd's FIFOs to and from
//!   the agent's streams).
//! - `exit.rs`: the waiter that turns a process's guest exit into a
//!   recorded exit and a TaskExit, once its output has drained.
//! - `oom.rs`: the sandbox's OOM long poll, as TaskOOM events.
//! - `vm.rs`: the VM's death, reported as every running process's exit.
//!
//! Only the verbs start these. They get what they need when started: the
//! sandbox to connect to, and a [`std::sync::Weak`] of the tasks' shared
//! state ([`super::Shared`]) to record exits and send events through; they
//! end (or do nothing) once it is gone. They never call [`super::Tasks`].

pub(super) mod exit;
pub(super) mod oom;
pub(super) mod pumps;
pub(super) mod vm;

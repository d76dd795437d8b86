//! Domain types of the tasks the shim serves: processes, their state and
//! exits, and the events containerd hears about. No protobuf here
//! (convert.rs is where these meet containerd's types).

use std::thread::JoinHandle;
use std::time::SystemTime;

use tokio::sync::watch;

use crate::stdio::StdioPaths;

/// A process's state as containerd sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessStatus {
    Created,
    Running,
    Paused,
    Stopped,
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// The exit code, or 128 + signal.
    pub status: u32,
    pub at: SystemTime,
}

/// What a dead VM reports for each process it took down: SIGKILL's.
pub const VM_GONE_STATUS: u32 = 128 + 9;

/// One process: a container's init (`exec_id` empty) or an exec.
#[derive(Debug)]
pub struct Process {
    pub exec_id: String,
    /// Its pid inside the guest (0 before it exists).
    pub guest_pid: u32,
    pub status: ProcessStatus,
    pub stdio: StdioPaths,
    /// An exec's OCI process (JSON), until it starts.
    pub spec: Vec<u8>,
    pub exit: watch::Sender<Option<Exit>>,
    /// The output pumps: joined before the exit is told, so that no output
    /// arrives after containerd heard of the exit.
    pub pumps: Vec<JoinHandle<()>>,
}

impl Process {
    pub fn new(exec_id: &str, stdio: StdioPaths, spec: Vec<u8>) -> Process {
        Process {
            exec_id: exec_id.to_owned(),
            guest_pid: 0,
            status: ProcessStatus::Created,
            stdio,
            spec,
            exit: watch::channel(None).0,
            pumps: Vec::new(),
        }
    }

    pub fn exited(&self) -> Option<Exit> {
        *self.exit.borrow()
    }
}

/// Events containerd expects from a shim.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskEvent {
    Create {
        id: String,
        bundle: String,
        stdio: StdioPaths,
        pid: u32,
    },
    Start {
        id: String,
        pid: u32,
    },
    Exit {
        id: String,
        exec_id: String,
        pid: u32,
        exit: Exit,
    },
    Delete {
        id: String,
        pid: u32,
        exit: Exit,
    },
    Oom {
        id: String,
    },
    ExecAdded {
        id: String,
        exec_id: String,
    },
    ExecStarted {
        id: String,
        exec_id: String,
        pid: u32,
    },
    Paused {
        id: String,
    },
    Resumed {
        id: String,
    },
}

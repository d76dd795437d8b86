//! The task part's domain types: processes, their state and exits, what
//! the Task API's calls carry in and out, what the shim asks of the agent,
//! and the events containerd hears about. No protobuf here: `convert/` is
//! where these meet containerd's messages and the agent's.

use std::path::PathBuf;
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

/// One rootfs mount containerd hands over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootfsMount {
    pub fstype: String,
    pub source: String,
    pub options: Vec<String>,
}

/// A Create call, in domain terms.
#[derive(Debug, Clone)]
pub struct CreateTask {
    pub id: String,
    pub bundle: PathBuf,
    pub rootfs: Vec<RootfsMount>,
    pub stdio: StdioPaths,
}

/// An Exec call, in domain terms: a process to register and start later.
#[derive(Debug, Clone)]
pub struct ExecProcess {
    pub id: String,
    pub exec_id: String,
    pub stdio: StdioPaths,
    /// The OCI process, JSON.
    pub spec: Vec<u8>,
}

/// A process's state for State.
#[derive(Debug, Clone)]
pub struct ProcessState {
    pub bundle: String,
    pub pid: u32,
    pub status: ProcessStatus,
    pub stdio: StdioPaths,
    pub exit: Option<Exit>,
}

/// What the agent's CreateContainer is asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerCreate {
    pub id: String,
    pub sandbox_id: String,
    /// The guest's OCI spec (spec.rs), JSON.
    pub spec: Vec<u8>,
    /// The rootfs, relative to the share.
    pub rootfs: PathBuf,
    pub terminal: bool,
}

/// A container's cgroup counters, as the agent reports them; a group it
/// did not report is `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerStats {
    pub cpu: Option<CpuStats>,
    pub memory: Option<MemoryStats>,
    pub pids: Option<PidsStats>,
    pub io: Option<IoStats>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuStats {
    pub usage_total_ns: u64,
    pub usage_user_ns: u64,
    pub usage_system_ns: u64,
    pub throttled_periods: u64,
    pub throttled_time_ns: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryStats {
    pub usage_bytes: u64,
    /// 0 when unlimited.
    pub limit_bytes: u64,
    pub max_usage_bytes: u64,
    pub oom_kills: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PidsStats {
    pub current: u64,
    /// 0 when unlimited.
    pub limit: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IoStats {
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub read_ios: u64,
    pub write_ios: u64,
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

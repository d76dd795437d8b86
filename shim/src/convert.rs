//! Where containerd's protobuf types meet the shim's domain types: the
//! only module that knows both.

use std::time::{SystemTime, UNIX_EPOCH};

use containerd_shim::api::{self, Status};
use containerd_shim::event::Event;
use containerd_shim::protos::cgroups_v2::metrics::{
    CPUStat, IOEntry, IOStat, MemoryEvents, MemoryStat, Metrics, PidsStat,
};
use containerd_shim::protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskOOM, TaskPaused,
    TaskResumed, TaskStart,
};
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::{Message, MessageDyn, MessageField};
use vessel_agent_protocol::agent::StatsContainerResponse;

use crate::process::{Exit, ProcessStatus, TaskEvent};
use crate::stdio::StdioPaths;
use crate::tasks::{CreateTask, ProcessState, RootfsMount};

/// The type URL containerd (ctr, CRI) reads cgroup v2 metrics by.
const METRICS_V2: &str = "io.containerd.cgroups.v2.Metrics";

pub fn timestamp(t: SystemTime) -> Timestamp {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let mut ts = Timestamp::new();
    ts.seconds = since.as_secs() as i64;
    ts.nanos = since.subsec_nanos() as i32;
    ts
}

pub fn status(s: ProcessStatus) -> Status {
    match s {
        ProcessStatus::Created => Status::CREATED,
        ProcessStatus::Running => Status::RUNNING,
        ProcessStatus::Paused => Status::PAUSED,
        ProcessStatus::Stopped => Status::STOPPED,
    }
}

pub fn create_task(req: &api::CreateTaskRequest) -> CreateTask {
    CreateTask {
        id: req.id.clone(),
        bundle: req.bundle.clone().into(),
        rootfs: req
            .rootfs
            .iter()
            .map(|m| RootfsMount {
                fstype: m.type_.clone(),
                source: m.source.clone(),
                options: m.options.clone(),
            })
            .collect(),
        stdio: StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        },
    }
}

pub fn exec_stdio(req: &api::ExecProcessRequest) -> StdioPaths {
    StdioPaths {
        stdin: req.stdin.clone(),
        stdout: req.stdout.clone(),
        stderr: req.stderr.clone(),
        terminal: req.terminal,
    }
}

pub fn state_response(id: &str, exec_id: &str, state: ProcessState) -> api::StateResponse {
    let mut resp = api::StateResponse::new();
    resp.id = id.to_owned();
    resp.exec_id = exec_id.to_owned();
    resp.bundle = state.bundle;
    resp.pid = state.pid;
    resp.set_status(status(state.status));
    resp.stdin = state.stdio.stdin;
    resp.stdout = state.stdio.stdout;
    resp.stderr = state.stdio.stderr;
    resp.terminal = state.stdio.terminal;
    if let Some(exit) = state.exit {
        resp.exit_status = exit.status;
        resp.exited_at = MessageField::some(timestamp(exit.at));
    }
    resp
}

pub fn wait_response(exit: Exit) -> api::WaitResponse {
    let mut resp = api::WaitResponse::new();
    resp.exit_status = exit.status;
    resp.exited_at = MessageField::some(timestamp(exit.at));
    resp
}

pub fn delete_response(pid: u32, exit: Exit) -> api::DeleteResponse {
    let mut resp = api::DeleteResponse::new();
    resp.pid = pid;
    resp.exit_status = exit.status;
    resp.exited_at = MessageField::some(timestamp(exit.at));
    resp
}

fn boxed<E: Event + 'static>(e: E) -> (String, Box<dyn MessageDyn>) {
    (e.topic(), Box::new(e))
}

/// The topic and message of an event.
pub fn event(e: TaskEvent) -> (String, Box<dyn MessageDyn>) {
    match e {
        TaskEvent::Create {
            id,
            bundle,
            stdio,
            pid,
        } => {
            let mut io = TaskIO::new();
            io.stdin = stdio.stdin;
            io.stdout = stdio.stdout;
            io.stderr = stdio.stderr;
            io.terminal = stdio.terminal;
            let mut m = TaskCreate::new();
            m.container_id = id;
            m.bundle = bundle;
            m.io = MessageField::some(io);
            m.pid = pid;
            boxed(m)
        }
        TaskEvent::Start { id, pid } => {
            let mut m = TaskStart::new();
            m.container_id = id;
            m.pid = pid;
            boxed(m)
        }
        TaskEvent::Exit {
            id,
            exec_id,
            pid,
            exit,
        } => {
            let mut m = TaskExit::new();
            // containerd names the init process by the container id.
            m.id = if exec_id.is_empty() {
                id.clone()
            } else {
                exec_id
            };
            m.container_id = id;
            m.pid = pid;
            m.exit_status = exit.status;
            m.exited_at = MessageField::some(timestamp(exit.at));
            boxed(m)
        }
        TaskEvent::Delete { id, pid, exit } => {
            let mut m = TaskDelete::new();
            m.id = id.clone();
            m.container_id = id;
            m.pid = pid;
            m.exit_status = exit.status;
            m.exited_at = MessageField::some(timestamp(exit.at));
            boxed(m)
        }
        TaskEvent::Oom { id } => {
            let mut m = TaskOOM::new();
            m.container_id = id;
            boxed(m)
        }
        TaskEvent::ExecAdded { id, exec_id } => {
            let mut m = TaskExecAdded::new();
            m.container_id = id;
            m.exec_id = exec_id;
            boxed(m)
        }
        TaskEvent::ExecStarted { id, exec_id, pid } => {
            let mut m = TaskExecStarted::new();
            m.container_id = id;
            m.exec_id = exec_id;
            m.pid = pid;
            boxed(m)
        }
        TaskEvent::Paused { id } => {
            let mut m = TaskPaused::new();
            m.container_id = id;
            boxed(m)
        }
        TaskEvent::Resumed { id } => {
            let mut m = TaskResumed::new();
            m.container_id = id;
            boxed(m)
        }
    }
}

/// The agent's cgroup v2 stats as containerd's v2 metrics.
pub fn metrics(
    stats: &StatsContainerResponse,
) -> Result<Any, containerd_shim::protos::protobuf::Error> {
    let mut m = Metrics::new();
    if let Some(cpu) = stats.cpu.as_ref() {
        let mut c = CPUStat::new();
        c.usage_usec = cpu.usage_total_ns / 1000;
        c.user_usec = cpu.usage_user_ns / 1000;
        c.system_usec = cpu.usage_system_ns / 1000;
        c.nr_throttled = cpu.throttled_periods;
        c.throttled_usec = cpu.throttled_time_ns / 1000;
        m.cpu = MessageField::some(c);
    }
    if let Some(mem) = stats.memory.as_ref() {
        let mut s = MemoryStat::new();
        s.usage = mem.usage_bytes;
        s.usage_limit = mem.limit_bytes;
        s.max_usage = mem.max_usage_bytes;
        m.memory = MessageField::some(s);
        let mut events = MemoryEvents::new();
        events.oom_kill = mem.oom_kills;
        m.memory_events = MessageField::some(events);
    }
    if let Some(pids) = stats.pids.as_ref() {
        let mut p = PidsStat::new();
        p.current = pids.current;
        p.limit = pids.limit;
        m.pids = MessageField::some(p);
    }
    if let Some(io) = stats.io.as_ref() {
        let mut entry = IOEntry::new();
        entry.rbytes = io.read_bytes;
        entry.wbytes = io.write_bytes;
        entry.rios = io.read_ios;
        entry.wios = io.write_ios;
        let mut s = IOStat::new();
        s.usage.push(entry);
        m.io = MessageField::some(s);
    }
    let mut any = Any::new();
    any.type_url = METRICS_V2.to_owned();
    any.value = m.write_to_bytes()?;
    Ok(any)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vessel_agent_protocol::agent::{MemoryStats, PidsStats};

    #[test]
    fn exits_name_the_init_process_by_container_id() {
        let exit = Exit {
            status: 3,
            at: UNIX_EPOCH + std::time::Duration::from_millis(1500),
        };
        let (topic, msg) = event(TaskEvent::Exit {
            id: "c".into(),
            exec_id: String::new(),
            pid: 7,
            exit,
        });
        assert_eq!(topic, "/tasks/exit");
        let bytes = msg.write_to_bytes_dyn().unwrap();
        let back = TaskExit::parse_from_bytes(&bytes).unwrap();
        assert_eq!(
            (
                back.id.as_str(),
                back.container_id.as_str(),
                back.exit_status
            ),
            ("c", "c", 3)
        );
        assert_eq!(
            (back.exited_at.seconds, back.exited_at.nanos),
            (1, 500_000_000)
        );
    }

    #[test]
    fn metrics_carry_the_guest_counters() {
        let mut stats = StatsContainerResponse::new();
        let mut mem = MemoryStats::new();
        mem.usage_bytes = 4096;
        mem.limit_bytes = 8192;
        stats.memory = MessageField::some(mem);
        let mut pids = PidsStats::new();
        pids.current = 2;
        stats.pids = MessageField::some(pids);
        let any = metrics(&stats).unwrap();
        assert_eq!(any.type_url, METRICS_V2);
        let back = Metrics::parse_from_bytes(&any.value).unwrap();
        assert_eq!(back.memory.usage, 4096);
        assert_eq!(back.memory.usage_limit, 8192);
        assert_eq!(back.pids.current, 2);
    }

    #[test]
    fn statuses_map_one_to_one() {
        assert_eq!(status(ProcessStatus::Created), Status::CREATED);
        assert_eq!(status(ProcessStatus::Stopped), Status::STOPPED);
    }
}

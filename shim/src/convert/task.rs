//! The Task API's messages: requests into domain calls, domain answers into
//! responses.

use containerd_shim::api::{self, Empty};
use containerd_shim::protos::protobuf::MessageField;
use containerd_shim::protos::types::task::ProcessInfo;

use super::metrics::metrics;
use super::{status, timestamp, ConvertError};
use crate::domain::{ContainerStats, CreateTask, ExecProcess, Exit, ProcessState, RootfsMount};
use crate::stdio::StdioPaths;

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

pub fn exec_process(req: &api::ExecProcessRequest) -> ExecProcess {
    ExecProcess {
        id: req.id.clone(),
        exec_id: req.exec_id.clone(),
        stdio: StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        },
        spec: req
            .spec
            .as_ref()
            .map(|s| s.value.clone())
            .unwrap_or_default(),
    }
}

/// Update's new limits: OCI LinuxResources JSON (empty: none given).
pub fn update_resources(req: &api::UpdateTaskRequest) -> Vec<u8> {
    req.resources
        .as_ref()
        .map(|r| r.value.clone())
        .unwrap_or_default()
}

pub fn empty() -> Empty {
    Empty::new()
}

pub fn create_response(pid: u32) -> api::CreateTaskResponse {
    let mut resp = api::CreateTaskResponse::new();
    resp.pid = pid;
    resp
}

pub fn start_response(pid: u32) -> api::StartResponse {
    let mut resp = api::StartResponse::new();
    resp.pid = pid;
    resp
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

pub fn pids_response(pids: Vec<u32>) -> api::PidsResponse {
    let mut resp = api::PidsResponse::new();
    resp.processes = pids
        .into_iter()
        .map(|pid| {
            let mut info = ProcessInfo::new();
            info.pid = pid;
            info
        })
        .collect();
    resp
}

pub fn stats_response(stats: &ContainerStats) -> Result<api::StatsResponse, ConvertError> {
    let mut resp = api::StatsResponse::new();
    resp.stats = MessageField::some(metrics(stats)?);
    Ok(resp)
}

pub fn connect_response(shim_pid: u32, task_pid: u32, version: &str) -> api::ConnectResponse {
    let mut resp = api::ConnectResponse::new();
    resp.shim_pid = shim_pid;
    resp.task_pid = task_pid;
    resp.version = version.to_owned();
    resp
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use containerd_shim::api::Status;

    use super::*;
    use crate::domain::ProcessStatus;

    #[test]
    fn a_stopped_process_reports_its_exit() {
        let state = ProcessState {
            bundle: "/b".into(),
            pid: 42,
            status: ProcessStatus::Stopped,
            stdio: StdioPaths {
                stdout: "/f".into(),
                ..StdioPaths::default()
            },
            exit: Some(Exit {
                status: 137,
                at: UNIX_EPOCH + std::time::Duration::from_secs(3),
            }),
        };
        let resp = state_response("c", "e", state);
        assert_eq!(
            (resp.id.as_str(), resp.exec_id.as_str(), resp.pid),
            ("c", "e", 42)
        );
        assert_eq!(resp.status(), Status::STOPPED);
        assert_eq!((resp.exit_status, resp.exited_at.seconds), (137, 3));
        assert_eq!(resp.stdout, "/f");
    }

    #[test]
    fn pids_become_process_infos() {
        let resp = pids_response(vec![1, 7]);
        let pids: Vec<u32> = resp.processes.iter().map(|p| p.pid).collect();
        assert_eq!(pids, vec![1, 7]);
    }
}

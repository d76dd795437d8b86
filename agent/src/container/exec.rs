//! ExecProcess: a new process in a running container's namespaces and
//! cgroup, started at once.

use std::os::fd::AsRawFd;
use std::sync::Arc;

use super::create::setup_error;
use super::error::{check_id, ContainerError};
use super::spawn::SpawnRequest;
use super::spec::{exec_plan, parse_process};
use super::stdio::Stdio;
use super::{lock, raw, Engine, Process, State};

impl Engine {
    /// ExecProcess; returns the new process's pid.
    pub fn exec(
        &self,
        id: &str,
        exec_id: &str,
        process: &[u8],
        terminal: bool,
    ) -> Result<i32, ContainerError> {
        check_id(exec_id)?;
        let spec = parse_process(process)?;
        let container = self.get(id)?;
        if !matches!(container.state(), State::Running) {
            return Err(container.wrong_state("exec"));
        }
        // Held across the spawn: a second exec with this id waits, then fails.
        let mut execs = lock(&container.execs);
        if execs.contains_key(exec_id) {
            return Err(ContainerError::AlreadyExists(format!(
                "process {exec_id:?} of container {id:?}"
            )));
        }
        let terminal = terminal || spec.terminal() == Some(true);
        let (stdio, ends) = if terminal {
            Stdio::tty()
        } else {
            Stdio::pipes()
        }
        .map_err(ContainerError::sys("creating the process's stdio"))?;
        let init_fd = raw(&container.init.pidfd);
        let mut plan = exec_plan(
            &spec,
            init_fd,
            container.join,
            container.seccomp.as_deref(),
            &ends.io,
            self.facts,
        )?;
        let cgroup_dir = container.cgroup.open_dir()?;
        let (exit, mut spawned) = self
            .reaper
            .spawn_watched(|| {
                let spawned = self.spawner.spawn(SpawnRequest {
                    plan: &mut plan,
                    namespaces: 0,
                    cgroup: Some(cgroup_dir.as_raw_fd()),
                    pid_ns_of: Some(init_fd),
                    id_maps: None,
                })?;
                Ok((spawned.pid, spawned))
            })
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ESRCH) => container.wrong_state("exec"),
                _ => ContainerError::sys("starting the process")(e),
            })?;
        drop(ends);
        match spawned.next_report() {
            Ok(None) => {}
            Ok(Some(report)) => return Err(setup_error(&plan, report)),
            Err(e) => return Err(ContainerError::sys("reading the process's report")(e)),
        }
        let pid = spawned.pid;
        execs.insert(
            exec_id.to_string(),
            Arc::new(Process {
                exec_id: exec_id.to_string(),
                pid,
                pidfd: spawned.pidfd,
                exit,
                stdio,
            }),
        );
        tracing::info!(id, exec_id, pid, "process started");
        Ok(pid)
    }
}

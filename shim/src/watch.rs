//! What runs beside the Task API calls for each process: its stdio pumps,
//! the waiter that turns its guest exit into a TaskExit, the sandbox's OOM
//! long poll, and the VM's death reported as every process's exit.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use crate::error::ShimError;
use crate::process::{Exit, ProcessStatus, TaskEvent, VM_GONE_STATUS};
use crate::sandbox::Sandbox;
use crate::stdio::{self, Output, StdioPaths, STREAM_CALL_TIMEOUT};
use crate::tasks::Tasks;

/// How long an exit waits for its output pumps to drain.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

impl Tasks {
    /// The stdio pumps of a process that exists in the guest: the output
    /// pumps are returned (an exit waits for them); the stdin pump ends at
    /// containerd's EOF or with the process.
    pub(crate) fn start_stdio(
        &self,
        sandbox: &Sandbox,
        id: &str,
        exec_id: &str,
        stdio: &StdioPaths,
    ) -> Result<Vec<JoinHandle<()>>, ShimError> {
        let mut pumps = Vec::new();
        for (which, path) in [
            (Output::Stdout, &stdio.stdout),
            (Output::Stderr, &stdio.stderr),
        ] {
            if let Some(fifo) = stdio::open_output(path)? {
                let agent = sandbox.connect(STREAM_CALL_TIMEOUT)?;
                let pump =
                    stdio::spawn_output(agent, id.to_owned(), exec_id.to_owned(), which, fifo)
                        .map_err(ShimError::SpawnThread)?;
                pumps.push(pump);
            }
        }
        if let Some(path) = stdio::stdin_path(&stdio.stdin)? {
            let agent = sandbox.connect(STREAM_CALL_TIMEOUT)?;
            stdio::spawn_stdin(agent, id.to_owned(), exec_id.to_owned(), path)
                .map_err(ShimError::SpawnThread)?;
        }
        Ok(pumps)
    }

    /// Waits in the guest for a process's exit, then records it. Started
    /// once the process's pumps are stored, so that its exit drains them.
    pub(crate) fn watch_exit(
        &self,
        sandbox: &Sandbox,
        id: &str,
        exec_id: &str,
    ) -> Result<(), ShimError> {
        let agent = sandbox.connect(STREAM_CALL_TIMEOUT)?;
        let me = self.me.clone();
        let (id, exec_id) = (id.to_owned(), exec_id.to_owned());
        std::thread::Builder::new()
            .name(format!("wait-{id}"))
            .spawn(move || {
                let status = match agent.wait_process(&id, &exec_id) {
                    Ok(resp) => resp.exit_status as u32,
                    Err(error) => {
                        tracing::info!(%id, %exec_id, %error, "WaitProcess failed: the VM is gone");
                        VM_GONE_STATUS
                    }
                };
                if let Some(tasks) = me.upgrade() {
                    tasks.process_exited(&id, &exec_id, status);
                }
            })
            .map_err(ShimError::SpawnThread)?;
        Ok(())
    }

    /// Records an exit once output has drained, and tells containerd.
    pub(crate) fn process_exited(&self, id: &str, exec_id: &str, status: u32) {
        let pumps = match self.process_mut(id, exec_id) {
            Ok(mut found) => std::mem::take(&mut found.get().pumps),
            Err(_) => return,
        };
        join_within(pumps, DRAIN_TIMEOUT);
        let exit = Exit {
            status,
            at: SystemTime::now(),
        };
        let pid = {
            let mut inner = self.lock();
            let Some(container) = inner.containers.get_mut(id) else {
                return;
            };
            let pid = container.sandbox.vmm_pid();
            let Some(process) = container.processes.get_mut(exec_id) else {
                return;
            };
            if process.exited().is_some() {
                return;
            }
            process.status = ProcessStatus::Stopped;
            process.exit.send_replace(Some(exit));
            pid
        };
        tracing::info!(%id, %exec_id, status, "process exited");
        self.emit(TaskEvent::Exit {
            id: id.to_owned(),
            exec_id: exec_id.to_owned(),
            pid,
            exit,
        });
    }

    /// The VMM died: every process still running exits now.
    pub(crate) fn vm_exited(&self) {
        let running: Vec<(String, String)> = self
            .lock()
            .containers
            .iter()
            .flat_map(|(id, c)| {
                c.processes
                    .values()
                    .filter(|p| p.exited().is_none())
                    .map(move |p| (id.clone(), p.exec_id.clone()))
            })
            .collect();
        if !running.is_empty() {
            tracing::warn!(
                processes = running.len(),
                "the VM exited; its processes are reported killed"
            );
        }
        for (id, exec_id) in running {
            self.process_exited(&id, &exec_id, VM_GONE_STATUS);
        }
    }

    pub(crate) fn spawn_oom_watch(&self, sandbox: &Arc<Sandbox>) {
        let agent = match sandbox.connect(STREAM_CALL_TIMEOUT) {
            Ok(agent) => agent,
            Err(error) => {
                tracing::warn!(%error, "no OOM events for this sandbox");
                return;
            }
        };
        let me = self.me.clone();
        let exited = sandbox.exited();
        let spawned = std::thread::Builder::new()
            .name("oom".into())
            .spawn(move || loop {
                match agent.get_oom_event() {
                    Ok(id) => match me.upgrade() {
                        Some(tasks) => {
                            tracing::info!(%id, "OOM kill in the guest");
                            tasks.emit(TaskEvent::Oom { id });
                        }
                        None => return,
                    },
                    Err(_) if *exited.borrow() => return,
                    Err(error) => {
                        tracing::debug!(%error, "GetOOMEvent");
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
            });
        if let Err(error) = spawned {
            tracing::warn!(%error, "no OOM events for this sandbox");
        }
    }
}

/// Joins `pumps`, giving up on those still running after `timeout`.
fn join_within(pumps: Vec<JoinHandle<()>>, timeout: Duration) {
    let deadline = std::time::Instant::now() + timeout;
    for pump in pumps {
        while !pump.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if pump.is_finished() {
            let _ = pump.join();
        } else {
            tracing::warn!("an output stream is still open after the exit; leaving it");
        }
    }
}

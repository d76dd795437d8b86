//! containerd's Task service (task API v2) on top of [`Tasks`]. Each call
//! unpacks its request, runs the domain call off the async runtime and
//! packs the answer; `convert/` does the unpacking and the packing. The
//! service's own errors are `crate::error::ShimError`'s.

use std::sync::Arc;

use async_trait::async_trait;
use containerd_shim::api::{self, Empty};
use containerd_shim::asynchronous::ExitSignal;
use containerd_shim::protos::shim_async::Task;
use containerd_shim::protos::ttrpc::r#async::TtrpcContext;
use containerd_shim::TtrpcResult;

use crate::config::ConfigError;
use crate::convert;
use crate::error::ShimError;
use crate::task::{TaskError, Tasks};

/// The Task service of one shim.
pub struct TaskService {
    tasks: Arc<Tasks>,
    exit: Arc<ExitSignal>,
    /// Why the config could not be read: every Create reports it.
    config_error: Option<Arc<ConfigError>>,
}

impl TaskService {
    pub fn new(
        tasks: Arc<Tasks>,
        exit: Arc<ExitSignal>,
        config_error: Option<Arc<ConfigError>>,
    ) -> Self {
        TaskService {
            tasks,
            exit,
            config_error,
        }
    }

    /// Runs `f` on the blocking pool; its error becomes the call's status.
    async fn run<T, F>(&self, call: &'static str, f: F) -> TtrpcResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Tasks) -> Result<T, TaskError> + Send + 'static,
    {
        let tasks = self.tasks.clone();
        let result = tokio::task::spawn_blocking(move || f(&tasks))
            .await
            .map_err(ShimError::RunBlocking)
            .and_then(|r| r.map_err(ShimError::from));
        result.map_err(|e| {
            tracing::warn!(call, error = %e.chain(), "task call failed");
            e.into()
        })
    }
}

#[async_trait]
impl Task for TaskService {
    async fn create(
        &self,
        _ctx: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> TtrpcResult<api::CreateTaskResponse> {
        if let Some(error) = &self.config_error {
            return Err(ShimError::from(ConfigError::LoadAtStart(Arc::clone(error))).into());
        }
        if !req.checkpoint.is_empty() {
            return Err(ShimError::Unsupported("restoring from a checkpoint").into());
        }
        let create = convert::create_task(&req);
        let pid = self.run("Create", move |t| t.create(create)).await?;
        Ok(convert::create_response(pid))
    }

    async fn start(
        &self,
        _ctx: &TtrpcContext,
        req: api::StartRequest,
    ) -> TtrpcResult<api::StartResponse> {
        let pid = self
            .run("Start", move |t| t.start(&req.id, &req.exec_id))
            .await?;
        Ok(convert::start_response(pid))
    }

    async fn delete(
        &self,
        _ctx: &TtrpcContext,
        req: api::DeleteRequest,
    ) -> TtrpcResult<api::DeleteResponse> {
        let (pid, exit) = self
            .run("Delete", move |t| t.delete(&req.id, &req.exec_id))
            .await?;
        Ok(convert::delete_response(pid, exit))
    }

    async fn exec(&self, _ctx: &TtrpcContext, req: api::ExecProcessRequest) -> TtrpcResult<Empty> {
        let exec = convert::exec_process(&req);
        self.run("Exec", move |t| t.exec(exec)).await?;
        Ok(convert::empty())
    }

    async fn kill(&self, _ctx: &TtrpcContext, req: api::KillRequest) -> TtrpcResult<Empty> {
        self.run("Kill", move |t| {
            t.kill(&req.id, &req.exec_id, req.signal, req.all)
        })
        .await?;
        Ok(convert::empty())
    }

    async fn wait(
        &self,
        _ctx: &TtrpcContext,
        req: api::WaitRequest,
    ) -> TtrpcResult<api::WaitResponse> {
        let mut exit = self.tasks.exit_watch(&req.id, &req.exec_id)?;
        loop {
            if let Some(done) = *exit.borrow_and_update() {
                return Ok(convert::wait_response(done));
            }
            if exit.changed().await.is_err() {
                // The process record went away (deleted) without an exit.
                return Err(ShimError::from(TaskError::ProcessNotFound {
                    id: req.id,
                    exec_id: req.exec_id,
                })
                .into());
            }
        }
    }

    async fn state(
        &self,
        _ctx: &TtrpcContext,
        req: api::StateRequest,
    ) -> TtrpcResult<api::StateResponse> {
        let state = self.tasks.state(&req.id, &req.exec_id)?;
        Ok(convert::state_response(&req.id, &req.exec_id, state))
    }

    async fn pids(
        &self,
        _ctx: &TtrpcContext,
        req: api::PidsRequest,
    ) -> TtrpcResult<api::PidsResponse> {
        let pids = self.run("Pids", move |t| t.pids(&req.id)).await?;
        Ok(convert::pids_response(pids))
    }

    async fn pause(&self, _ctx: &TtrpcContext, req: api::PauseRequest) -> TtrpcResult<Empty> {
        self.run("Pause", move |t| t.pause(&req.id, true)).await?;
        Ok(convert::empty())
    }

    async fn resume(&self, _ctx: &TtrpcContext, req: api::ResumeRequest) -> TtrpcResult<Empty> {
        self.run("Resume", move |t| t.pause(&req.id, false)).await?;
        Ok(convert::empty())
    }

    async fn checkpoint(
        &self,
        _ctx: &TtrpcContext,
        _req: api::CheckpointTaskRequest,
    ) -> TtrpcResult<Empty> {
        Err(ShimError::Unsupported("Checkpoint").into())
    }

    async fn close_io(&self, _ctx: &TtrpcContext, req: api::CloseIORequest) -> TtrpcResult<Empty> {
        if req.stdin {
            self.run("CloseIO", move |t| t.close_stdin(&req.id, &req.exec_id))
                .await?;
        }
        Ok(convert::empty())
    }

    async fn resize_pty(
        &self,
        _ctx: &TtrpcContext,
        req: api::ResizePtyRequest,
    ) -> TtrpcResult<Empty> {
        self.run("ResizePty", move |t| {
            t.resize(&req.id, &req.exec_id, req.height, req.width)
        })
        .await?;
        Ok(convert::empty())
    }

    async fn update(&self, _ctx: &TtrpcContext, req: api::UpdateTaskRequest) -> TtrpcResult<Empty> {
        let resources = convert::update_resources(&req);
        self.run("Update", move |t| t.update(&req.id, &resources))
            .await?;
        Ok(convert::empty())
    }

    async fn stats(
        &self,
        _ctx: &TtrpcContext,
        req: api::StatsRequest,
    ) -> TtrpcResult<api::StatsResponse> {
        let stats = self.run("Stats", move |t| t.stats(&req.id)).await?;
        Ok(convert::stats_response(&stats).map_err(ShimError::from)?)
    }

    async fn connect(
        &self,
        _ctx: &TtrpcContext,
        _req: api::ConnectRequest,
    ) -> TtrpcResult<api::ConnectResponse> {
        Ok(convert::connect_response(
            std::process::id(),
            self.tasks.vmm_pid(),
            env!("CARGO_PKG_VERSION"),
        ))
    }

    async fn shutdown(
        &self,
        _ctx: &TtrpcContext,
        _req: api::ShutdownRequest,
    ) -> TtrpcResult<Empty> {
        // A pod's shim serves its other containers until the last is gone.
        if self.tasks.is_empty() {
            self.exit.signal();
        }
        Ok(convert::empty())
    }
}

//! containerd's Task service (task API v2) on top of [`Tasks`]. Each call
//! unpacks its request, runs the domain call off the async runtime and
//! packs the answer (convert.rs).

use std::sync::Arc;

use async_trait::async_trait;
use containerd_shim::api::{self, Empty};
use containerd_shim::asynchronous::ExitSignal;
use containerd_shim::protos::shim_async::Task;
use containerd_shim::protos::ttrpc::r#async::TtrpcContext;
use containerd_shim::TtrpcResult;

use crate::convert;
use crate::error::ShimError;
use crate::tasks::Tasks;

/// The Task service of one shim.
pub struct TaskService {
    tasks: Arc<Tasks>,
    exit: Arc<ExitSignal>,
    /// Why the config could not be read: every Create reports it.
    config_error: Option<String>,
}

impl TaskService {
    pub fn new(tasks: Arc<Tasks>, exit: Arc<ExitSignal>, config_error: Option<String>) -> Self {
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
        F: FnOnce(&Tasks) -> Result<T, ShimError> + Send + 'static,
    {
        let tasks = self.tasks.clone();
        let result = tokio::task::spawn_blocking(move || f(&tasks))
            .await
            .map_err(ShimError::Join)
            .and_then(|r| r);
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
            return Err(ShimError::InvalidConfig(error.clone()).into());
        }
        if !req.checkpoint.is_empty() {
            return Err(ShimError::Unsupported("restoring from a checkpoint").into());
        }
        let create = convert::create_task(&req);
        let pid = self.run("Create", move |t| t.create(create)).await?;
        let mut resp = api::CreateTaskResponse::new();
        resp.pid = pid;
        Ok(resp)
    }

    async fn start(
        &self,
        _ctx: &TtrpcContext,
        req: api::StartRequest,
    ) -> TtrpcResult<api::StartResponse> {
        let pid = self
            .run("Start", move |t| t.start(&req.id, &req.exec_id))
            .await?;
        let mut resp = api::StartResponse::new();
        resp.pid = pid;
        Ok(resp)
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
        let stdio = convert::exec_stdio(&req);
        let spec = req
            .spec
            .as_ref()
            .map(|s| s.value.clone())
            .unwrap_or_default();
        self.run("Exec", move |t| t.exec(&req.id, &req.exec_id, stdio, spec))
            .await?;
        Ok(Empty::new())
    }

    async fn kill(&self, _ctx: &TtrpcContext, req: api::KillRequest) -> TtrpcResult<Empty> {
        self.run("Kill", move |t| {
            t.kill(&req.id, &req.exec_id, req.signal, req.all)
        })
        .await?;
        Ok(Empty::new())
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
                return Err(ShimError::ProcessNotFound {
                    id: req.id,
                    exec_id: req.exec_id,
                }
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
        let mut resp = api::PidsResponse::new();
        resp.processes = pids
            .into_iter()
            .map(|pid| {
                let mut info = containerd_shim::protos::types::task::ProcessInfo::new();
                info.pid = pid;
                info
            })
            .collect();
        Ok(resp)
    }

    async fn pause(&self, _ctx: &TtrpcContext, req: api::PauseRequest) -> TtrpcResult<Empty> {
        self.run("Pause", move |t| t.pause(&req.id, true)).await?;
        Ok(Empty::new())
    }

    async fn resume(&self, _ctx: &TtrpcContext, req: api::ResumeRequest) -> TtrpcResult<Empty> {
        self.run("Resume", move |t| t.pause(&req.id, false)).await?;
        Ok(Empty::new())
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
        Ok(Empty::new())
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
        Ok(Empty::new())
    }

    async fn update(&self, _ctx: &TtrpcContext, req: api::UpdateTaskRequest) -> TtrpcResult<Empty> {
        let resources = req
            .resources
            .as_ref()
            .map(|r| r.value.clone())
            .unwrap_or_default();
        self.run("Update", move |t| t.update(&req.id, &resources))
            .await?;
        Ok(Empty::new())
    }

    async fn stats(
        &self,
        _ctx: &TtrpcContext,
        req: api::StatsRequest,
    ) -> TtrpcResult<api::StatsResponse> {
        let stats = self.run("Stats", move |t| t.stats(&req.id)).await?;
        let mut resp = api::StatsResponse::new();
        resp.stats = containerd_shim::protos::protobuf::MessageField::some(
            convert::metrics(&stats).map_err(|e| ShimError::InvalidSpec(e.to_string()))?,
        );
        Ok(resp)
    }

    async fn connect(
        &self,
        _ctx: &TtrpcContext,
        _req: api::ConnectRequest,
    ) -> TtrpcResult<api::ConnectResponse> {
        let mut resp = api::ConnectResponse::new();
        resp.shim_pid = std::process::id();
        resp.task_pid = self.tasks.vmm_pid();
        resp.version = env!("CARGO_PKG_VERSION").to_owned();
        Ok(resp)
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
        Ok(Empty::new())
    }
}

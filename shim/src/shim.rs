//! The shim binary's commands: `start` (find or start the pod's shim),
//! `delete` (clean up after a dead one) and the daemon's set-up.

use std::sync::Arc;

use async_trait::async_trait;
use containerd_shim::api::DeleteResponse;
use containerd_shim::asynchronous::{spawn, ExitSignal, Shim};
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::util::write_str_to_file;
use containerd_shim::{Config, Context, Flags, StartOpts};
use tokio::sync::mpsc;

use crate::config::VesselConfig;
use crate::convert;
use crate::domain::{Exit, VM_GONE_STATUS};
use crate::error::ShimError;
use crate::service::TaskService;
use crate::spec;
use crate::task::Tasks;
use crate::vm;

pub struct VesselShim {
    exit: Arc<ExitSignal>,
    namespace: String,
    id: String,
}

#[async_trait]
impl Shim for VesselShim {
    type T = TaskService;

    async fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        VesselShim {
            exit: Arc::new(ExitSignal::default()),
            namespace: args.namespace.clone(),
            id: args.id.clone(),
        }
    }

    /// Containers of one pod share a shim (and so a VM): the grouping is
    /// the CRI sandbox id, else the container's own id. Nothing but the
    /// address may be printed here (containerd reads stdout and stderr).
    async fn start_shim(&mut self, opts: StartOpts) -> containerd_shim::Result<String> {
        let cwd = std::env::current_dir().map_err(|err| containerd_shim::Error::IoError {
            context: "reading the bundle directory (the current directory)".into(),
            err,
        })?;
        let bundle_spec = spec::read_bundle_spec(&cwd).map_err(ShimError::from)?;
        let grouping = spec::sandbox_of(&opts.id, &spec::annotations(&bundle_spec));
        let address = spawn(opts, &grouping, Vec::new()).await?;
        write_str_to_file("address", &address).await?;
        Ok(address)
    }

    /// The daemon is gone: stop its VM if this was the sandbox's container,
    /// and remove what it left.
    async fn delete_shim(&mut self) -> containerd_shim::Result<DeleteResponse> {
        let root = VesselConfig::load()
            .map(|c| c.state_dir)
            .unwrap_or_else(|_| VesselConfig::default().state_dir);
        let cwd = std::env::current_dir().unwrap_or_default();
        let sandbox_id = spec::read_bundle_spec(&cwd)
            .map(|s| spec::sandbox_of(&self.id, &spec::annotations(&s)))
            .unwrap_or_else(|_| self.id.clone());
        if !vessel_agent_protocol::valid_id(&self.id)
            || !vessel_agent_protocol::valid_id(&sandbox_id)
        {
            // No Create took these ids, so nothing was made under them.
            tracing::warn!(id = %self.id, sandbox = %sandbox_id, "delete of invalid ids: nothing to clean");
        } else {
            let dir = vm::state_dir(&root, &self.namespace, &sandbox_id);
            if sandbox_id == self.id {
                vm::cleanup_dead(&dir);
            } else {
                crate::mounts::remove_dead_container(&dir.join("shared"), &self.id);
            }
        }
        let exit = Exit {
            status: VM_GONE_STATUS,
            at: std::time::SystemTime::now(),
        };
        Ok(convert::delete_response(0, exit))
    }

    async fn wait(&mut self) {
        self.exit.wait().await;
    }

    async fn create_task_service(&self, publisher: RemotePublisher) -> TaskService {
        let (config, config_error) = match VesselConfig::load() {
            Ok(config) => (config, None),
            Err(e) => {
                let error = crate::cause::chain(&e);
                tracing::error!(%error, "cannot read the vessel config");
                (VesselConfig::default(), Some(Arc::new(e)))
            }
        };
        let (tx, mut rx) = mpsc::unbounded_channel();
        let namespace = self.namespace.clone();
        tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                let (topic, message) = convert::event(event);
                if let Err(error) = publisher
                    .publish(Context::default(), &topic, &namespace, message)
                    .await
                {
                    tracing::warn!(%topic, %error, "cannot publish an event");
                }
            }
        });
        let tasks = Tasks::new(config, self.namespace.clone(), tx);
        TaskService::new(tasks, self.exit.clone(), config_error)
    }
}

//! VM templates: a guest booted once to a listening agent, paused,
//! snapshotted, and restored by every later VM of the same make, so that a
//! VM does not pay for a kernel boot.
//!
//! - [`cache`]: where templates live, keyed by what made them, made once
//!   under a lock, sealed, checked on every use;
//! - [`get_or_make`]: the one maker, used by the shim and the test harness
//!   alike: boot the [`BootSpec`] (a never-mounted placeholder share where
//!   it has one), wait for the agent, pause, snapshot, shut down;
//! - [`adopt`]: what makes a restored guest this VM's own.
//!
//! A template's share can be snapshotted only before the guest mounted it
//! (the VMM refuses afterwards), so a restored VM serves its own directory
//! under the template's tag and the agent mounts it on MountShare.

pub mod cache;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

pub use cache::{Template, TemplateCache, TemplateError, TemplateSpec};
use vessel_agent_protocol::{AgentClient, ClientError};

use crate::api::VmState;
use crate::api_client::{ApiClient, ApiClientError};
use crate::process::{ConnectAgentError, OutputTail, ProcessError, VmmProcess};
use crate::spec::{BootSpec, Endpoints, Launch, RestoreSpec, VmmCommand};

/// How much of the template VMM's log an error keeps.
const LOG_TAIL: usize = 16 * 1024;
/// How long the template VMM may take to exit after its shutdown.
const EXIT_TIMEOUT: Duration = Duration::from_secs(60);

/// A step of making a template that failed.
#[derive(Debug, thiserror::Error)]
pub enum MakeStep {
    #[error("prepare the maker's directory {path}")]
    PrepareDir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("start the template VM")]
    Spawn(#[source] ProcessError),
    #[error("drain the template VMM's log")]
    DrainLog(#[source] std::io::Error),
    #[error("reach the template guest's agent")]
    ConnectAgent(#[source] ConnectAgentError),
    #[error("pause, snapshot or stop the template VM")]
    Api(#[source] ApiClientError),
    #[error("the snapshot left the VM {0:?}, not paused")]
    NotPaused(VmState),
    #[error("wait for the template VMM")]
    Wait(#[source] ProcessError),
    #[error("the template VMM did not exit within {0:?} of its shutdown")]
    NoExit(Duration),
    #[error("the template VMM exited with {0}")]
    Exit(std::process::ExitStatus),
}

/// Making a template failed: the step, and what the VMM logged.
#[derive(Debug, thiserror::Error)]
#[error("making a template VM failed{}", said(.vmm_log))]
pub struct MakeError {
    #[source]
    pub step: Box<MakeStep>,
    /// The end of the VMM's stderr.
    pub vmm_log: String,
}

fn said(log: &str) -> String {
    match log.trim() {
        "" => String::new(),
        log => format!("; the VMM said: {log}"),
    }
}

/// The template of `guest` (whose endpoints are ignored) under `cache`:
/// checked and reused, or made now by [`make`] with its sockets and
/// placeholder share in the directory `work` (short, so socket paths fit;
/// made and removed by the maker). Blocking; concurrent callers make it
/// once.
pub fn get_or_make(
    cache: &TemplateCache,
    vmm: &VmmCommand,
    guest: &BootSpec,
    work: &Path,
    boot_timeout: Duration,
) -> Result<Template, TemplateError> {
    let spec = TemplateSpec {
        kernel: guest.kernel.clone(),
        initrd: guest.initrd.clone(),
        vcpus: guest.vcpus,
        memory_mib: guest.memory_mib,
        vmm: vmm.resolved(),
        recipe: guest.recipe(),
    };
    cache.get_or_create(&spec, |dir: &Path| {
        let made = make(vmm, guest, work, dir, boot_timeout);
        if let Err(error) = std::fs::remove_dir_all(work) {
            tracing::warn!(%error, dir = %work.display(), "cannot remove the template maker's files");
        }
        made
    })
}

/// Boots `guest` with its endpoints (and a placeholder share, if it has
/// one) in `work`, waits for its agent, pauses it and snapshots it into
/// `dir/state` and `dir/memory`, then shuts it down.
pub fn make(
    vmm: &VmmCommand,
    guest: &BootSpec,
    work: &Path,
    dir: &Path,
    boot_timeout: Duration,
) -> Result<(), MakeError> {
    let fail = |step| MakeError {
        step: Box::new(step),
        vmm_log: String::new(),
    };
    let prepare = |path: &Path| {
        std::fs::create_dir_all(path).map_err(|source| {
            fail(MakeStep::PrepareDir {
                path: path.to_owned(),
                source,
            })
        })
    };
    prepare(work)?;
    let mut boot = guest.clone();
    boot.endpoints = Endpoints::in_dir(work);
    if let Some(fs) = &mut boot.fs {
        fs.dir = work.join("share");
        prepare(&fs.dir)?;
    }
    let mut command = vmm.command(&Launch::Boot(boot.clone()));
    command.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut process = VmmProcess::spawn(&mut command).map_err(|e| fail(MakeStep::Spawn(e)))?;
    let (log, reader) = match process
        .take_stderr()
        .map(|e| OutputTail::drain(e, LOG_TAIL))
    {
        Some(Ok((tail, reader))) => (tail, Some(reader)),
        Some(Err(e)) => return Err(fail(MakeStep::DrainLog(e))),
        None => (OutputTail::default(), None),
    };
    let snapshot = |process: &mut VmmProcess| -> Result<(), MakeStep> {
        let (vsock, api) = (&boot.endpoints.vsock_uds, &boot.endpoints.api_sock);
        let (Some(vsock), Some(api)) = (vsock, api) else {
            unreachable!("Endpoints::in_dir names both sockets");
        };
        let agent = process
            .connect_agent(vsock, boot_timeout, boot_timeout)
            .map_err(MakeStep::ConnectAgent)?;
        drop(agent);
        let mut api = ApiClient::connect(api, boot_timeout).map_err(MakeStep::Api)?;
        api.pause().map_err(MakeStep::Api)?;
        let info = api
            .snapshot(&dir.join("state"), &dir.join("memory"))
            .map_err(MakeStep::Api)?;
        if info.state != VmState::Paused {
            return Err(MakeStep::NotPaused(info.state));
        }
        api.shutdown().map_err(MakeStep::Api)?;
        match process.wait_timeout(EXIT_TIMEOUT).map_err(MakeStep::Wait)? {
            Some(status) if status.success() => Ok(()),
            Some(status) => Err(MakeStep::Exit(status)),
            None => Err(MakeStep::NoExit(EXIT_TIMEOUT)),
        }
    };
    let made = snapshot(&mut process);
    // Killed (if it still runs) and reaped: its log is whole.
    let _ = process.kill();
    if let Some(reader) = reader {
        let _ = reader.join();
    }
    made.map_err(|step| MakeError {
        step: Box::new(step),
        vmm_log: log.text(),
    })?;
    tracing::info!(dir = %dir.display(), "template VM snapshotted");
    Ok(())
}

impl Template {
    /// A restore of this template, with no endpoints or share yet.
    pub fn restore_spec(&self) -> RestoreSpec {
        RestoreSpec::new(&self.state, &self.memory)
    }
}

/// What makes a restored guest this VM's own: the host's clock and fresh
/// entropy (VMs of one template must never share random numbers), and its
/// share mounted under `share_tag` if it has one.
pub fn adopt(agent: &AgentClient, share_tag: Option<&str>) -> Result<(), ClientError> {
    agent.give_identity()?;
    match share_tag {
        Some(tag) => agent.mount_share(tag),
        None => Ok(()),
    }
}

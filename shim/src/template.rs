//! Pod VMs from a template: a guest booted once to a listening agent,
//! snapshotted, and restored for every later pod of the same make, so a
//! pod does not pay for a kernel boot.
//!
//! The template's guest has the pod's virtio-fs device but has never
//! mounted it: the VMM can snapshot a share only before its first FUSE
//! request. Each restored VMM serves the pod's own shared directory under
//! the template's tag; [`personalise`] then gives the guest the host's
//! clock, fresh entropy (VMs of one template must never share random
//! numbers) and has the agent mount the share.
//!
//! Templates live in `vessel_template`'s cache under the config's
//! `template_dir`, keyed by the kernel, the initramfs, the VMM binary, the
//! vCPUs, the memory and the command line.

use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use vessel_agent_protocol::AgentClient;
use vessel_template::{Template, TemplateCache, TemplateSpec};

use crate::config::VesselConfig;
use crate::error::ShimError;
use crate::sandbox;

/// The virtio-fs tag of every pod's share.
pub const SHARE_TAG: &str = "vessel";
/// How long one VMM API call may take (a snapshot writes guest memory).
const API_TIMEOUT: Duration = Duration::from_secs(120);

/// The command line of a pod's guest (without `vessel.share=`, which a
/// booted guest adds and a restored one gets as MountShare).
pub fn base_cmdline(config: &VesselConfig) -> String {
    let mut cmdline = format!("vessel.log={}", config.log_level);
    if config.debug_console {
        cmdline.push_str(" loglevel=7");
    }
    cmdline
}

/// The template for `config`'s VMs: from the cache, or booted and
/// snapshotted now (blocking; other shims wait for the same one).
pub fn get_or_make(config: &VesselConfig) -> Result<Template, ShimError> {
    let cmdline = base_cmdline(config);
    let spec = TemplateSpec {
        kernel: config.kernel.clone(),
        initrd: config.initrd.clone(),
        vcpus: config.vcpus,
        memory_mib: config.memory_mib,
        vmm: on_path(config.vmm_binary()),
        recipe: format!("cmdline={cmdline} vsock fs_tag={SHARE_TAG}"),
    };
    let cache = TemplateCache::new(&config.template_dir);
    cache
        .get_or_create(&spec, |dir: &Path| make(config, &cmdline, dir))
        .map_err(ShimError::Template)
}

/// Boots a template guest with a placeholder share, and once its agent
/// answers, pauses it and snapshots it into `dir`. Its sockets live in the
/// state directory: the template directory's paths are too long for a
/// socket's address.
fn make(config: &VesselConfig, cmdline: &str, dir: &Path) -> Result<(), ShimError> {
    let work = config
        .state_dir
        .join(format!("template-{}", std::process::id()));
    let placeholder = work.join("share");
    std::fs::create_dir_all(&placeholder).map_err(|source| ShimError::CreateDir {
        path: placeholder.clone(),
        source,
    })?;
    let (vsock, api, console) = (
        work.join("vsock.sock"),
        work.join("api.sock"),
        work.join("console.log"),
    );
    let mut child = Command::new(config.vmm_binary())
        .args(boot_args(
            config,
            cmdline,
            &console,
            &vsock,
            &api,
            &placeholder,
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| ShimError::SpawnVmm {
            path: config.vmm_binary(),
            source,
        })?;
    let mut snapshot = || -> Result<(), ShimError> {
        let timeout = Duration::from_secs(config.boot_timeout_secs);
        sandbox::connect_booting(&vsock, timeout, || vmm_exited(&mut child)).map_err(|source| {
            ShimError::ConnectAgent {
                console: console.clone(),
                source,
            }
        })?;
        api_call(&api, &json!({"action": "pause"}))?;
        api_call(
            &api,
            &json!({"action": "snapshot", "state": dir.join("state"), "memory": dir.join("memory")}),
        )?;
        api_call(&api, &json!({"action": "shutdown"}))?;
        Ok(())
    };
    let made = snapshot();
    if made.is_err() {
        let _ = child.kill();
    }
    let status = child.wait();
    let mut stderr = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut stderr);
    }
    if let Err(error) = std::fs::remove_dir_all(&work) {
        tracing::warn!(%error, dir = %work.display(), "cannot remove the template's boot files");
    }
    made.map_err(|e| match stderr.trim() {
        "" => e,
        vmm => ShimError::MakeTemplate(format!("{e}; the VMM said: {vmm}")),
    })?;
    tracing::info!(?status, "template VMM done");
    Ok(())
}

/// `bin` as a path to hash: a bare name is looked up on `PATH`.
fn on_path(bin: PathBuf) -> PathBuf {
    if bin.components().count() != 1 || bin.is_absolute() {
        return bin;
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(&bin))
        .find(|path| path.is_file())
        .unwrap_or(bin)
}

fn vmm_exited(child: &mut Child) -> bool {
    !matches!(child.try_wait(), Ok(None))
}

/// One request on the VMM's API socket (a JSON line, answered by one).
fn api_call(sock: &Path, request: &Value) -> Result<Value, ShimError> {
    let fail = |reason: String| ShimError::VmmApi {
        request: request.to_string(),
        reason,
    };
    let mut stream = UnixStream::connect(sock).map_err(|e| fail(e.to_string()))?;
    stream
        .set_read_timeout(Some(API_TIMEOUT))
        .map_err(|e| fail(e.to_string()))?;
    writeln!(stream, "{request}").map_err(|e| fail(e.to_string()))?;
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .map_err(|e| fail(e.to_string()))?;
    let reply: Value = serde_json::from_str(&line).map_err(|e| fail(format!("{e}: {line:?}")))?;
    if reply["ok"] != true {
        return Err(fail(reply.to_string()));
    }
    Ok(reply)
}

/// The arguments that boot a pod VM of `config` with `cmdline`, its
/// sockets, console and shared directory.
pub fn boot_args(
    config: &VesselConfig,
    cmdline: &str,
    console: &Path,
    vsock: &Path,
    api: &Path,
    share: &Path,
) -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::with_capacity(20);
    let mut pair = |flag: &str, value: &OsStr| {
        args.push(flag.into());
        args.push(value.to_owned());
    };
    pair("--kernel", config.kernel.as_os_str());
    pair("--initrd", config.initrd.as_os_str());
    pair("--vcpus", config.vcpus.to_string().as_ref());
    pair("--memory-mib", config.memory_mib.to_string().as_ref());
    pair("--cmdline", cmdline.as_ref());
    pair("--serial", console.as_os_str());
    pair("--vsock-uds", vsock.as_os_str());
    pair("--api-sock", api.as_os_str());
    pair("--fs-dir", share.as_os_str());
    pair("--fs-tag", SHARE_TAG.as_ref());
    args
}

/// The arguments that restore `template` as a pod VM with its own sockets,
/// console and shared directory.
pub fn restore_args(
    template: &Template,
    console: &Path,
    vsock: &Path,
    api: &Path,
    share: &Path,
) -> Vec<PathBuf> {
    [
        "--restore-state".as_ref(),
        template.state.as_path(),
        "--restore-memory".as_ref(),
        template.memory.as_path(),
        "--serial".as_ref(),
        console,
        "--vsock-uds".as_ref(),
        vsock,
        "--api-sock".as_ref(),
        api,
        "--fs-dir".as_ref(),
        share,
    ]
    .iter()
    .map(PathBuf::from)
    .collect()
}

/// What makes a restored guest this pod's: the host's clock and fresh
/// entropy ([`AgentClient::give_identity`]), and its share mounted.
pub fn personalise(agent: &AgentClient) -> Result<(), ShimError> {
    agent.give_identity().map_err(ShimError::Agent)?;
    agent.mount_share(SHARE_TAG).map_err(ShimError::Agent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_cmdline_leaves_the_share_to_mount_share() {
        let mut config = VesselConfig::default();
        assert_eq!(base_cmdline(&config), "vessel.log=info");
        config.debug_console = true;
        config.log_level = "debug".into();
        assert_eq!(base_cmdline(&config), "vessel.log=debug loglevel=7");
    }

    #[test]
    fn a_restore_gets_its_own_sockets_and_share() {
        let template = Template {
            key: "k".into(),
            state: "/t/state".into(),
            memory: "/t/memory".into(),
        };
        let args = restore_args(
            &template,
            Path::new("/s/console.log"),
            Path::new("/s/vsock.sock"),
            Path::new("/s/api.sock"),
            Path::new("/s/shared"),
        );
        let args: Vec<_> = args.iter().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(
            args.join(" "),
            "--restore-state /t/state --restore-memory /t/memory --serial /s/console.log \
             --vsock-uds /s/vsock.sock --api-sock /s/api.sock --fs-dir /s/shared"
        );
    }

    #[test]
    fn a_boot_gets_the_configs_guest_and_the_share() {
        let config = VesselConfig {
            kernel: "/k/vmlinux".into(),
            initrd: "/k/agent.cpio".into(),
            vcpus: 2,
            memory_mib: 256,
            ..VesselConfig::default()
        };
        let args = boot_args(
            &config,
            "vessel.log=info",
            Path::new("/s/console.log"),
            Path::new("/s/vsock.sock"),
            Path::new("/s/api.sock"),
            Path::new("/s/shared"),
        );
        let args: Vec<_> = args.iter().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(
            args.join(" "),
            "--kernel /k/vmlinux --initrd /k/agent.cpio --vcpus 2 --memory-mib 256 \
             --cmdline vessel.log=info --serial /s/console.log --vsock-uds /s/vsock.sock \
             --api-sock /s/api.sock --fs-dir /s/shared --fs-tag vessel"
        );
    }

    #[test]
    fn a_refused_api_call_names_the_request() {
        let dir = tempfile::tempdir().unwrap();
        let err = api_call(&dir.path().join("none.sock"), &json!({"action": "pause"})).unwrap_err();
        assert!(err.to_string().contains(r#"{"action":"pause"}"#), "{err}");
    }
}

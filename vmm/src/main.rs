//! `vessel-vmm`: the microVM monitor binary.
//!
//! `vessel-vmm check` tells whether this host can run Vessel.
//!
//! `vessel-vmm [--config FILE] --kernel PATH --initrd PATH [--cmdline EXTRA]
//! [--vcpus N] [--memory-mib N] [--serial stdout|PATH] [--api-sock PATH]
//! [--vsock-uds PATH] [--guest-cid N] [--fs-dir PATH [--fs-tag TAG]
//! [--fs-cache auto|always|never] [--fs-xattr on|off]]`, or
//! `vessel-vmm [--config FILE] --restore-state FILE --restore-memory FILE
//! [--serial stdout|PATH] [--api-sock PATH] [--vsock-uds PATH]
//! [--fs-dir PATH ...]` (the directory of a share the snapshot's guest had
//! not mounted yet)
//!
//! Flags and the JSON config file are parsed and checked by
//! [`vessel_vmm::config::from_args`]; this file only sets the process up.
//! With a shared directory, that includes moving the VMM into a private
//! mount namespace; then the VMM enters its jail ([`vessel_vmm::jail`]:
//! namespaces, rlimits, the fork into its pid namespace, privileges,
//! seccomp). Both must happen while it is still single-threaded.

use std::io::Write;
use std::process::ExitCode;

use std::sync::Arc;

use anyhow::{Context, Result};
use vessel_vmm::config::{self, FsConfig, Launch, RestoreConfig, USAGE};
use vessel_vmm::cpu::vcpu::VmExit;
use vessel_vmm::devices::virtio::fs::{share, SharedDir};
use vessel_vmm::jail;
use vessel_vmm::profile::HostProfile;
use vessel_vmm::snapshot;
use vessel_vmm::vm::Vm;
use vessel_vmm_client::jail::JailSpec;

fn run(args: &[String]) -> Result<VmExit> {
    let profile = HostProfile::detect()?;
    let jail_spec = config::jail(args)?;
    let config = match config::from_args(args, profile)? {
        Launch::Boot(config) => config,
        Launch::Restore(config) => return restore(&config, &jail_spec),
    };
    let shared_dir = prepare_share(config.fs.as_ref())?;
    let filters = jail::enter(&jail_spec, shared_dir.is_some()).context("jailing the VMM")?;
    tracing::info!(cmdline = %config.cmdline, "starting VM");
    let vm = Vm::new(&config, profile, shared_dir).context("cannot build the VM")?;
    Ok(vm.run(filters, jail_spec.debug_api)?)
}

/// The share of `fs` in the VMM's own mount namespace. No thread may
/// exist yet: unshare(CLONE_NEWNS) must apply to the whole VMM.
fn prepare_share(fs: Option<&FsConfig>) -> Result<Option<Arc<SharedDir>>> {
    let Some(fs) = fs else {
        return Ok(None);
    };
    share::enter_private_mount_namespace().context("--fs-dir")?;
    let shared = SharedDir::prepare(&fs.dir).context("--fs-dir")?;
    Ok(Some(Arc::new(shared)))
}

/// Restores the snapshot of `config` and runs it. Every check of the
/// snapshot files comes before any KVM object exists.
fn restore(config: &RestoreConfig, jail_spec: &JailSpec) -> Result<VmExit> {
    let start = std::time::Instant::now();
    let loaded = snapshot::load(&config.state, &config.memory)?;
    let shared_dir = prepare_share(config.fs.as_ref())?;
    let filters = jail::enter(jail_spec, shared_dir.is_some()).context("jailing the VMM")?;
    let vm = Vm::restore(config, loaded, shared_dir).context("cannot restore the VM")?;
    tracing::info!(
        millis = start.elapsed().as_millis() as u64,
        "snapshot restored; resuming"
    );
    Ok(vm.run(filters, jail_spec.debug_api)?)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    if args.first().map(String::as_str) == Some("check") {
        // `vessel-vmm check`: can this host run Vessel, and why not.
        return if vessel_vmm::check::run() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    let log_max_bytes = match config::log_max_bytes(&args) {
        Ok(n) => n,
        Err(err) => {
            eprintln!("vessel-vmm: {err}");
            return ExitCode::FAILURE;
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // fuse-backend-rs logs at error level what a guest can
                // trigger at will (bad names, unknown inodes); our fs device
                // counts and logs those itself. RUST_LOG overrides this.
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,fuse_backend_rs=off")),
        )
        // Rate limited per call site, and capped where stderr is a file.
        .with_writer(vessel_vmm::log::LogWriter::stderr(log_max_bytes))
        .init();
    let code = match run(&args) {
        Ok(VmExit::Reset | VmExit::Shutdown | VmExit::AllHalted | VmExit::Stopped) => {
            ExitCode::SUCCESS
        }
        Ok(VmExit::Error(msg)) => {
            eprintln!("vessel-vmm: {msg}");
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("vessel-vmm: {err:#}");
            ExitCode::FAILURE
        }
    };
    let _ = std::io::stdout().flush();
    code
}

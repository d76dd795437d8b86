//! `vessel-agent`: PID 1 in the Vessel guest. It mounts the basic
//! filesystems, reaps orphans, and serves the agent API (ttrpc) on vsock port
//! 1024. Any failure prints a message on the console and reboots the guest,
//! which the VMM treats as its exit.
//!
//! `vessel-agent --listen unix:///path` serves the same API on a unix socket
//! without touching the machine (no mounts, no clock or hostname changes, no
//! reboot), for tests on a host.

mod container;
mod emulated;
mod error;
#[cfg(test)]
mod fake;
mod guest;
mod init;
mod logging;
mod reaper;
mod server;
mod share;
mod sys;

use std::error::Error;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use vessel_agent_protocol::AGENT_VSOCK_PORT;

use crate::guest::Guest;
use crate::sys::{HostSys, LinuxSys, Sys};

const USAGE: &str = "usage: vessel-agent (as PID 1 in the guest)\n       \
                     vessel-agent --listen unix:///path/to.sock (serve on a host, for tests)";

/// How the agent runs.
#[derive(Debug, PartialEq, Eq)]
enum Mode {
    /// PID 1 in the guest, serving on vsock.
    Guest,
    /// On a host, serving on this ttrpc address; changes nothing.
    Listen(String),
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Mode, String> {
    let mut args = args.into_iter();
    let mode = match args.next().as_deref() {
        None => Mode::Guest,
        Some("--listen") => match args.next() {
            Some(addr) if addr.starts_with("unix://") => Mode::Listen(addr),
            Some(addr) => return Err(format!("--listen takes unix:///path, not {addr:?}")),
            None => return Err("--listen needs an address".into()),
        },
        Some(other) => return Err(format!("unknown argument {other:?}")),
    };
    match args.next() {
        Some(extra) => Err(format!("unexpected argument {extra:?}")),
        None => Ok(mode),
    }
}

/// `err` and its sources, joined by ": ".
fn chain(err: &dyn Error) -> String {
    let mut msg = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        msg.push_str(": ");
        msg.push_str(&e.to_string());
        source = e.source();
    }
    msg
}

/// Says why on the console and ends the guest. Never returns: PID 1 must not
/// exit (the kernel would panic).
fn fatal(msg: &str) -> ! {
    eprintln!("vessel-agent: fatal: {msg}; rebooting the guest");
    let sys = LinuxSys;
    sys.sync();
    let err = sys.reboot();
    eprintln!("vessel-agent: reboot failed: {err}");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn main() -> ExitCode {
    // As PID 1, argv is whatever the kernel made of command-line words it
    // did not know (e.g. `noxsave`, which early CPU code reads but never
    // registers): never a reason to stop.
    if std::process::id() == 1 {
        std::panic::set_hook(Box::new(|info| fatal(&format!("panic: {info}"))));
        let err = run_guest();
        fatal(&chain(err.as_ref()))
    }
    let mode = match parse_args(std::env::args().skip(1)) {
        Ok(mode) => mode,
        Err(msg) => {
            eprintln!("vessel-agent: {msg}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match mode {
        Mode::Listen(addr) => run_host(&addr),
        Mode::Guest => {
            eprintln!("vessel-agent: refusing to run: not PID 1\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

/// PID 1: set up the guest and serve; returns only on failure.
fn run_guest() -> Box<dyn Error> {
    // Before any thread starts, so only the reaper loop takes SIGCHLD.
    if let Err(e) = reaper::block_sigchld() {
        return format!("blocking SIGCHLD: {e}").into();
    }
    let sys: Arc<dyn Sys> = Arc::new(LinuxSys);
    // Containers pivot_root out of the agent's root, which the initramfs
    // cannot be: first move a bind of it over / (as switch_root would).
    if let Err(e) = init::leave_initramfs(sys.as_ref()) {
        return Box::new(e);
    }
    if let Err(e) = init::mount_all(sys.as_ref()) {
        return Box::new(e);
    }
    if let Err(e) = sys.ensure_console() {
        // Nowhere to say it if this failed; carry on serving regardless.
        let _ = e;
    }
    let cmdline = logging::kernel_cmdline(sys.as_ref());
    let (level, unknown) = logging::level_from_cmdline(&cmdline);
    logging::init(level);
    if let Some(value) = unknown {
        tracing::warn!(value, "unknown vessel.log level; using info");
    }
    match emulated::apply(sys.as_ref(), &cmdline) {
        Ok(true) => tracing::info!("emulated-CPL0 profile: agent memory locked"),
        Ok(false) => {}
        Err(e) => tracing::error!(error = %e, "emulated-CPL0 profile: locking memory"),
    }
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        kernel = %sys.kernel_release().unwrap_or_default(),
        "vessel-agent starting"
    );
    let guest = Guest::new(sys.clone());
    // Without its share the host's containers have no rootfs: fatal. (A
    // guest booted for a template has none yet: the host's MountShare
    // mounts it after the restore.)
    if let Some(tag) = share::tag_from_cmdline(&cmdline) {
        if let Err(e) = guest.mount_share(tag) {
            return format!("the virtio-fs share {tag:?}: {}", chain(&e)).into();
        }
    }
    let reaper = Arc::new(reaper::Reaper::default());
    let engine = Arc::new(container_engine(reaper.clone(), sys.as_ref()));
    let addr = format!("vsock://-1:{AGENT_VSOCK_PORT}");
    let _server = match server::start(&addr, server::Service::new(guest, Some(engine))) {
        Ok(server) => server,
        Err(e) => return format!("serving the agent API on {addr}: {e}").into(),
    };
    tracing::info!(port = AGENT_VSOCK_PORT, "serving the agent API on vsock");

    let err = reaper::run(&reaper, sys.as_ref());
    format!("reaping children: {err}").into()
}

/// The container engine over the guest's cgroups and `clone3`. A cgroup or
/// memory-event setup failure is logged: the agent still serves, and
/// container calls report the failure.
fn container_engine(reaper: Arc<reaper::Reaper>, sys: &dyn Sys) -> container::Engine {
    use container::cgroup::{Cgroups, RealCgroupFs, DEFAULT_ROOT};
    let cgroups = Cgroups::new(Arc::new(RealCgroupFs), DEFAULT_ROOT.into());
    if let Err(e) = cgroups.init() {
        tracing::error!(error = %chain(&e), "setting up cgroups");
    }
    let oom = match container::oom::OomWatcher::start() {
        Ok(oom) => Some(oom),
        Err(e) => {
            tracing::error!(error = %e, "not watching memory events");
            None
        }
    };
    let last_cap = sys
        .read_to_string(std::path::Path::new("/proc/sys/kernel/cap_last_cap"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(container::caps::last_cap);
    container::Engine::new(
        cgroups,
        Arc::new(container::spawn::LinuxSpawner),
        reaper,
        oom,
        container::spec::GuestFacts { last_cap },
    )
}

/// `--listen`: serve on a host socket with [`HostSys`]; Shutdown exits.
fn run_host(addr: &str) -> ExitCode {
    let level = std::env::var("VESSEL_LOG").unwrap_or_default();
    let (level, _) = logging::level_from_cmdline(&vessel_agent_protocol::contract::log_arg(&level));
    logging::init(level);
    let guest = Guest::new(Arc::new(HostSys));
    match server::start(addr, server::Service::new(guest, None)) {
        Ok(_server) => {
            tracing::info!(addr, "serving the agent API (host mode)");
            loop {
                std::thread::park();
            }
        }
        Err(e) => {
            eprintln!("vessel-agent: serving the agent API on {addr}: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_modes() {
        assert_eq!(parse_args(args(&[])), Ok(Mode::Guest));
        assert_eq!(
            parse_args(args(&["--listen", "unix:///tmp/a.sock"])),
            Ok(Mode::Listen("unix:///tmp/a.sock".into()))
        );
        assert!(parse_args(args(&["--listen", "vsock://-1:1024"])).is_err());
        assert!(parse_args(args(&["--listen"])).is_err());
        assert!(parse_args(args(&["--bogus"])).is_err());
        assert!(parse_args(args(&["--listen", "unix:///a", "x"])).is_err());
    }

    #[test]
    fn chains_sources() {
        let e = crate::init::MountError {
            fstype: "proc",
            target: "/proc",
            source: std::io::Error::from_raw_os_error(libc::ENODEV),
        };
        assert!(chain(&e).starts_with("mounting proc on /proc: "));
    }
}

//! Logging to the console with `tracing`; the level comes from the kernel
//! command line (`vessel.log=<level>`).

use std::path::Path;

use tracing::level_filters::LevelFilter;
use vessel_agent_protocol::contract::CMDLINE_LOG;

use crate::sys::Sys;

/// The level when the command line names none.
pub const DEFAULT_LEVEL: LevelFilter = LevelFilter::INFO;

/// The level `cmdline` asks for with `vessel.log=<level>` (the last one
/// wins), and the value that was not understood, if any.
pub fn level_from_cmdline(cmdline: &str) -> (LevelFilter, Option<String>) {
    let Some(value) = cmdline
        .split_whitespace()
        .filter_map(|arg| arg.strip_prefix(CMDLINE_LOG))
        .next_back()
    else {
        return (DEFAULT_LEVEL, None);
    };
    match value.to_ascii_lowercase().as_str() {
        "off" => (LevelFilter::OFF, None),
        "error" => (LevelFilter::ERROR, None),
        "warn" | "warning" => (LevelFilter::WARN, None),
        "info" => (LevelFilter::INFO, None),
        "debug" => (LevelFilter::DEBUG, None),
        "trace" => (LevelFilter::TRACE, None),
        _ => (DEFAULT_LEVEL, Some(value.to_owned())),
    }
}

/// The kernel command line, read through `sys` (proc must be mounted);
/// empty if it cannot be read.
pub fn kernel_cmdline(sys: &dyn Sys) -> String {
    sys.read_to_string(Path::new("/proc/cmdline"))
        .unwrap_or_default()
}

/// Logs to stderr (the console for PID 1) at `level`, with uptime stamps;
/// `log` records (from ttrpc) go there too.
pub fn init(level: LevelFilter) {
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_timer(tracing_subscriber::fmt::time::uptime())
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_level() {
        let base = "console=ttyS0 reboot=k panic=-1";
        assert_eq!(level_from_cmdline(base), (LevelFilter::INFO, None));
        assert_eq!(
            level_from_cmdline(&format!("{base} vessel.log=debug")),
            (LevelFilter::DEBUG, None)
        );
        assert_eq!(
            level_from_cmdline("vessel.log=warn quiet vessel.log=TRACE\n"),
            (LevelFilter::TRACE, None)
        );
        assert_eq!(
            level_from_cmdline("vessel.log=loud"),
            (LevelFilter::INFO, Some("loud".into()))
        );
        assert_eq!(
            level_from_cmdline("xvessel.log=debug"),
            (LevelFilter::INFO, None)
        );
    }

    #[test]
    fn reads_the_kernel_cmdline() {
        let sys = crate::fake::FakeSys::default();
        sys.set_cmdline("console=ttyS0 vessel.log=error\n");
        let cmdline = kernel_cmdline(&sys);
        assert_eq!(level_from_cmdline(&cmdline), (LevelFilter::ERROR, None));
    }
}

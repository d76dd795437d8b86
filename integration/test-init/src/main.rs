//! `vessel-test-init`: PID 1 for guest-kernel tests.
//!
//! It prints `VESSEL-TEST-INIT-START`, then one `VESSEL-REPORT key=value` line
//! per probe, then `VESSEL-TEST-INIT-DONE`, and reboots (which ends a
//! microVM). Each probe drives a kernel path the agent and containers depend
//! on, so an emulation failure on an emulated-CPL0 host shows up here by name.
//! A failed probe reports `error: ...` and the run goes on.
//!
//! It must be linked statically (`-C target-feature=+crt-static`).

mod probes;
mod sys;
mod vsock_sink;

use std::io::Write;

fn report(key: &str, result: Result<String, String>) {
    let value = result.unwrap_or_else(|err| format!("error: {err}"));
    println!("VESSEL-REPORT {key}={value}");
    let _ = std::io::stdout().flush();
}

fn main() {
    // SAFETY: getpid has no preconditions.
    if unsafe { libc::getpid() } != 1 {
        eprintln!(
            "vessel-test-init: refusing to run as anything but PID 1 (it reboots the machine)"
        );
        std::process::exit(2);
    }
    std::panic::set_hook(Box::new(|info| {
        println!("VESSEL-TEST-INIT-PANIC {info}");
        let _ = std::io::stdout().flush();
        sys::reboot();
    }));

    println!("VESSEL-TEST-INIT-START");
    report("mounts", probes::mount_base());
    match vsock_sink::requested_mode().as_deref() {
        Some("vsock-sink") => {
            report(
                "vsock_sink",
                vsock_sink::serve().map(|n| format!("{n} bytes")),
            );
            finish();
        }
        Some("vsock-dial") => {
            report("vsock_dial", vsock_sink::dial());
            finish();
        }
        _ => {}
    }
    report("kernel", probes::kernel_release());
    report("cpus", probes::online_cpus());
    report("mem_kib", probes::mem_total_kib());
    report("filesystems", probes::filesystems());
    report("cgroup2", probes::cgroup2());
    report("overlay", probes::overlay());
    report("namespaces", probes::namespaces_pivot_root());
    report("netlink", probes::netlink_loopback_up());
    report("epoll", probes::epoll_eventfd());
    report("vsock", probes::vsock_listen());
    report("fuse", probes::fuse_init());
    report("pty", probes::pty());
    report("seccomp", probes::seccomp_filter());
    report("hwrng", probes::hwrng());
    finish();
}

/// Prints the done marker and ends the guest.
fn finish() -> ! {
    println!("VESSEL-TEST-INIT-DONE");
    let _ = std::io::stdout().flush();
    sys::reboot();
}

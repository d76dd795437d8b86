//! Real runs on the host (as root, with busybox-static installed): the plan
//! from a spec, `clone3` into new namespaces, mounts, `pivot_root`, stdio
//! pipes and the exit status, without the guest. The host's cgroups are v1,
//! so these runs use no cgroup; the guest tests cover that part.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use oci_spec::runtime::Spec;
use serde_json::json;

use super::plan::Report;
use super::spawn::{LinuxSpawner, SpawnRequest, Spawned, Spawner};
use super::spec::{init_plan, parse_spec, GuestFacts, InitPlan, ProcessIo};
use super::stdio::{Output, Stdio};

const BUSYBOX: &str = "/bin/busybox";

/// A rootfs with busybox, or `None` (and why) where the host cannot run it.
fn busybox_rootfs() -> Option<tempfile::TempDir> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: not root");
        return None;
    }
    if !Path::new(BUSYBOX).exists() {
        eprintln!("skipped: {BUSYBOX} missing (apt install busybox-static)");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    for sub in ["bin", "proc", "dev", "tmp", "etc"] {
        std::fs::create_dir(dir.path().join(sub)).unwrap();
    }
    let bin = dir.path().join("bin/busybox");
    std::fs::copy(BUSYBOX, &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("busybox", dir.path().join("bin/sh")).unwrap();
    Some(dir)
}

/// Plans the init of `spec` and starts it with no cgroup.
fn spawn_init(spec: &Spec, rootfs: &Path, io: &ProcessIo) -> (InitPlan, Spawned) {
    let mut init = init_plan(spec, rootfs, io, None, GuestFacts { last_cap: 40 }).unwrap();
    let spawned = LinuxSpawner
        .spawn(SpawnRequest {
            plan: &mut init.plan,
            namespaces: init.namespaces,
            cgroup: None,
            pid_ns_of: None,
            id_maps: None,
        })
        .unwrap();
    (init, spawned)
}

/// Runs `script` in a container on the host; returns (stdout, stderr,
/// wait status).
fn run(rootfs: &Path, script: &str, stdin: &[u8]) -> (String, String, i32) {
    let spec = parse_spec(
        json!({
            "ociVersion": "1.0.2",
            "process": {"user": {"uid": 0, "gid": 0}, "args": ["sh", "-c", script],
                        "env": ["PATH=/bin"], "cwd": "/tmp",
                        "capabilities": {"bounding": ["CAP_SYS_ADMIN"], "effective": ["CAP_SYS_ADMIN"],
                                         "permitted": ["CAP_SYS_ADMIN"]}},
            "root": {"path": rootfs, "readonly": true},
            "hostname": "in-container",
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]},
                {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"}
            ],
            "linux": {
                "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}],
                "maskedPaths": ["/proc/cmdline"]
            }
        })
        .to_string()
        .as_bytes(),
    )
    .unwrap();
    let (stdio, ends) = Stdio::pipes().unwrap();
    let (init, mut spawned) = spawn_init(&spec, rootfs, &ends.io);
    drop(ends);
    let ready = spawned.next_report().unwrap();
    assert_eq!(
        ready,
        Some(Report::READY),
        "{}",
        ready
            .map(|r| init.plan.describe(r.step))
            .unwrap_or_default()
    );
    spawned.start.write_all(&[1]).unwrap();
    assert_eq!(spawned.next_report().unwrap(), None, "exec'd");
    stdio.write_stdin(stdin).unwrap();
    stdio.close_stdin().unwrap();
    let drain = |which| {
        let mut all = Vec::new();
        loop {
            let chunk = stdio.read(which, 0).unwrap();
            if chunk.is_empty() {
                return String::from_utf8(all).unwrap();
            }
            all.extend(chunk);
        }
    };
    let out = drain(Output::Stdout);
    let err = drain(Output::Stderr);
    let mut status = 0;
    // SAFETY: waits for our own child; `status` is a valid out-pointer.
    let reaped = unsafe { libc::waitpid(spawned.pid, &mut status, 0) };
    assert_eq!(reaped, spawned.pid);
    while spawned.next_report().unwrap().is_some() {}
    (out, err, status)
}

#[test]
fn a_container_runs_in_its_own_namespaces_and_root() {
    let Some(rootfs) = busybox_rootfs() else {
        return;
    };
    let script = "echo pid=$$; hostname; cat /proc/cmdline | wc -c; \
                  touch /ro 2>/dev/null || echo ro-root; pwd; cat; echo oops >&2; exit 7";
    let (out, err, status) = run(rootfs.path(), script, b"from-stdin\n");
    assert_eq!(
        out, "pid=1\nin-container\n0\nro-root\n/tmp\nfrom-stdin\n",
        "stderr: {err}"
    );
    assert_eq!(err, "oops\n");
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 7);
    // The host's hostname and mounts are untouched.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_ne!(host.trim(), "in-container");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&rootfs.path().display().to_string()));
}

#[test]
fn a_missing_command_fails_before_start_naming_it() {
    let Some(rootfs) = busybox_rootfs() else {
        return;
    };
    let spec = parse_spec(
        json!({
            "ociVersion": "1.0.2",
            "process": {"user": {"uid": 0, "gid": 0}, "args": ["no-such-cmd"], "cwd": "/"},
            "root": {"path": rootfs.path()},
            "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}]}
        })
        .to_string()
        .as_bytes(),
    )
    .unwrap();
    let (_stdio, ends) = Stdio::pipes().unwrap();
    let (init, mut spawned) = spawn_init(&spec, rootfs.path(), &ends.io);
    let report = spawned.next_report().unwrap().expect("a failure report");
    assert_eq!(report.errno, libc::ENOENT);
    assert_eq!(
        init.plan.describe(report.step),
        "finding executable \"no-such-cmd\" in $PATH"
    );
    let mut status = 0;
    // SAFETY: waits for our own child.
    unsafe { libc::waitpid(spawned.pid, &mut status, 0) };
    assert_eq!(libc::WEXITSTATUS(status), 127);
}

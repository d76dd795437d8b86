use super::*;
use serde_json::json;

const FACTS: GuestFacts = GuestFacts { last_cap: 40 };
const IO: ProcessIo = ProcessIo::Pipes {
    stdin: 10,
    stdout: 11,
    stderr: 12,
};

fn runc_like(rootfs: &Path) -> serde_json::Value {
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "user": {"uid": 1000, "gid": 1000, "additionalGids": [10]},
            "args": ["sh", "-c", "echo hi"],
            "env": ["PATH=/usr/bin:/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"], "permitted": ["CAP_KILL"]},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": rootfs, "readonly": true},
        "hostname": "pod-a",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]}
        ],
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}],
            "maskedPaths": ["/proc/kcore"],
            "readonlyPaths": ["/proc/sys"],
            "sysctl": {"net.ipv4.ip_forward": "1"}
        }
    })
}

fn spec_of(v: &serde_json::Value) -> Spec {
    parse_spec(v.to_string().as_bytes()).unwrap()
}

fn steps(plan: &Plan) -> Vec<String> {
    plan.steps.iter().map(|s| format!("{s:?}")).collect()
}

fn position(lines: &[String], prefix: &str) -> usize {
    lines
        .iter()
        .position(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix} in {lines:#?}"))
}

#[test]
fn a_runc_spec_becomes_an_ordered_plan() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec_of(&runc_like(dir.path()));
    let init = init_plan(&spec, dir.path(), &IO, None, FACTS).unwrap();
    let flags =
        (libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS) as u64;
    assert_eq!(
        init.namespaces, flags,
        "no network namespace: the guest's is the pod's"
    );
    assert_eq!(
        init.join,
        libc::CLONE_NEWNS | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS
    );
    assert!(init.pid_ns_of.is_none() && init.id_maps.is_none());
    let lines = steps(&init.plan);
    let order = [
        "Mount { source: None, target: \"/\"",
        "Chdir",
        "PivotRoot",
        "MaskPath(\"/proc/kcore\")",
        "ReadonlyPath(\"/proc/sys\")",
        "RemountBind { target: \"/\", flags: 1 }",
        "WriteFile { path: \"/proc/sys/net/ipv4/ip_forward\"",
        "SetHostname(\"pod-a\")",
        "Setsid",
        "Dup2 { from: 10, to: 0 }",
        "SetRlimit { resource: 7, soft: 1024, hard: 1024 }",
        "DropBounding { keep: 32, last: 40 }",
        "SetGroups([10])",
        "SetUser { uid: 1000, gid: 1000 }",
        "SetCaps",
        "Umask(18)",
        "NoNewPrivs",
        "FindExecutable",
        "WaitStart",
        "Exec",
    ];
    let positions: Vec<usize> = order.iter().map(|p| position(&lines, p)).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{lines:#?}");
    // The default devices come with the /dev tmpfs.
    assert!(lines
        .iter()
        .any(|l| l.starts_with("Mknod") && l.contains("/dev/null")));
    assert!(lines
        .iter()
        .any(|l| l.starts_with("Symlink") && l.contains("pts/ptmx")));
    let candidates: Vec<_> = init
        .plan
        .command
        .candidates
        .iter()
        .map(|c| c.to_str().unwrap())
        .collect();
    assert_eq!(candidates, ["/usr/bin/sh", "/bin/sh"]);
    assert_eq!(init.plan.command.envp.len(), 2);
}

#[test]
fn later_containers_join_the_pods_uts_and_ipc() {
    let dir = tempfile::tempdir().unwrap();
    let mut v = runc_like(dir.path());
    v["linux"]["namespaces"] = json!([
        {"type": "pid", "path": "/proc/42/ns/pid"}, {"type": "ipc", "path": "/proc/42/ns/ipc"},
        {"type": "uts", "path": "/proc/42/ns/uts"}, {"type": "mount"}
    ]);
    let init = init_plan(&spec_of(&v), dir.path(), &IO, Some(7), FACTS).unwrap();
    assert_eq!(init.namespaces, libc::CLONE_NEWNS as u64);
    assert_eq!(init.pid_ns_of, Some(7));
    let lines = steps(&init.plan);
    assert_eq!(
        lines[0],
        format!(
            "SetNs {{ fd: 7, nstype: {} }}",
            libc::CLONE_NEWUTS | libc::CLONE_NEWIPC
        )
    );
    assert!(
        !lines.iter().any(|l| l.starts_with("SetHostname")),
        "the pod's hostname stays"
    );

    // Without a pod, a pid namespace path cannot be honoured.
    let err = init_plan(&spec_of(&v), dir.path(), &IO, None, FACTS).unwrap_err();
    assert!(err.to_string().contains("pod"), "{err}");
}

#[test]
fn user_namespaces_write_maps_and_bind_devices() {
    let dir = tempfile::tempdir().unwrap();
    let mut v = runc_like(dir.path());
    v["linux"]["namespaces"] = json!([{"type": "user"}, {"type": "mount"}, {"type": "uts"}]);
    v["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    v["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    let init = init_plan(&spec_of(&v), dir.path(), &IO, None, FACTS).unwrap();
    assert_eq!(
        init.id_maps,
        Some(("0 100000 65536\n".into(), "0 100000 65536\n".into()))
    );
    let lines = steps(&init.plan);
    assert_eq!(lines[0], "WaitParent");
    assert!(lines
        .iter()
        .any(|l| l.starts_with("BindDevice") && l.contains("/dev/null")));
    assert!(!lines.iter().any(|l| l.starts_with("Mknod")));

    v["linux"]["uidMappings"] = json!([]);
    let err = init_plan(&spec_of(&v), dir.path(), &IO, None, FACTS).unwrap_err();
    assert!(err.to_string().contains("uid mappings"), "{err}");
}

#[test]
fn a_terminal_becomes_the_controlling_tty_and_the_console() {
    let dir = tempfile::tempdir().unwrap();
    let io = ProcessIo::Tty {
        follower: 9,
        path: "/dev/pts/3".into(),
    };
    let init = init_plan(
        &spec_of(&runc_like(dir.path())),
        dir.path(),
        &io,
        None,
        FACTS,
    )
    .unwrap();
    let lines = steps(&init.plan);
    assert!(lines.iter().any(|l| l.starts_with("BindDevice")
        && l.contains("/dev/pts/3")
        && l.contains("dev/console")));
    let ctty = position(&lines, "SetCtty(0)");
    assert!(position(&lines, "Dup2 { from: 9, to: 2 }") < ctty);
}

#[test]
fn bad_specs_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    type Edit = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(&str, Edit)> = vec![
        (
            "no process",
            Box::new(|v| {
                v.as_object_mut().unwrap().remove("process");
            }),
        ),
        ("no args", Box::new(|v| v["process"]["args"] = json!([]))),
        (
            "not absolute",
            Box::new(|v| v["process"]["cwd"] = json!("relative")),
        ),
        (
            "uts namespace",
            Box::new(|v| v["linux"]["namespaces"] = json!([{"type": "mount"}])),
        ),
        (
            "mount namespace by path",
            Box::new(|v| v["linux"]["namespaces"] = json!([{"type": "mount", "path": "/x"}])),
        ),
        (
            "NUL",
            Box::new(|v| v["process"]["env"] = json!(["A=\u{0}"])),
        ),
        (
            "rootfsPropagation",
            Box::new(|v| v["linux"]["rootfsPropagation"] = json!("sideways")),
        ),
    ];
    for (needle, edit) in cases {
        let mut v = runc_like(dir.path());
        edit(&mut v);
        let err = init_plan(&spec_of(&v), dir.path(), &IO, None, FACTS).unwrap_err();
        assert!(err.to_string().contains(needle), "{needle}: {err}");
    }
    let err = parse_spec(b"{not json").unwrap_err();
    assert!(err.to_string().starts_with("parsing the OCI runtime spec"));
}

#[test]
fn execs_join_the_init_and_start_at_once() {
    let process = parse_process(
        json!({"args": ["/bin/echo", "x"], "cwd": "/tmp", "user": {"uid": 0, "gid": 0}})
            .to_string()
            .as_bytes(),
    )
    .unwrap();
    let plan = exec_plan(&process, 5, libc::CLONE_NEWNS, None, &IO, FACTS).unwrap();
    let lines = steps(&plan);
    assert_eq!(
        lines[0],
        format!("SetNs {{ fd: 5, nstype: {} }}", libc::CLONE_NEWNS)
    );
    assert!(!lines.iter().any(|l| l == "WaitStart"));
    assert_eq!(lines.last().unwrap(), "Exec");
    assert_eq!(plan.command.candidates, [c"/bin/echo".to_owned()]);
}

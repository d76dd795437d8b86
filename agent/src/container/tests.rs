//! The engine's verbs over fakes: a spawner whose "child" walks the plan in
//! a thread, an in-memory cgroup tree, and the real reaper fed by hand.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::json;

use super::cgroup::Cgroups;
use super::create::CreateRequest;
use super::error::ContainerError;
use super::fake::{FakeSpawner, MemCgroupFs};
use super::spec::GuestFacts;
use super::{Engine, State};
use crate::reaper::Reaper;

struct Fixture {
    engine: Engine,
    spawner: Arc<FakeSpawner>,
    fs: Arc<MemCgroupFs>,
    reaper: Arc<Reaper>,
    rootfs: tempfile::TempDir,
}

const ROOT: &str = "/sys/fs/cgroup";

fn fixture() -> Fixture {
    let fs = Arc::new(MemCgroupFs::with_root(Path::new(ROOT)));
    let cgroups = Cgroups::new(fs.clone(), PathBuf::from(ROOT));
    cgroups.init().unwrap();
    let spawner = Arc::new(FakeSpawner::with_executables(&["/bin/sh", "/bin/true"]));
    let reaper = Arc::new(Reaper::default());
    let engine = Engine::new(
        cgroups,
        spawner.clone(),
        reaper.clone(),
        None,
        GuestFacts { last_cap: 40 },
    );
    Fixture {
        engine,
        spawner,
        fs,
        reaper,
        rootfs: tempfile::tempdir().unwrap(),
    }
}

fn spec(args: &[&str]) -> Vec<u8> {
    json!({
        "ociVersion": "1.0.2",
        "process": {"user": {"uid": 0, "gid": 0}, "args": args, "cwd": "/",
                    "env": ["PATH=/bin"]},
        "hostname": "h",
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}],
            "resources": {"pids": {"limit": 16}}
        }
    })
    .to_string()
    .into_bytes()
}

impl Fixture {
    fn request(&self, id: &str, sandbox: &str, args: &[&str]) -> CreateRequest {
        CreateRequest {
            id: id.into(),
            sandbox_id: sandbox.into(),
            spec: spec(args),
            rootfs: self.rootfs.path().display().to_string(),
            terminal: false,
            overlay: false,
        }
    }

    fn cgroup(&self, sandbox: &str, id: &str) -> PathBuf {
        Path::new(ROOT).join("vessel").join(sandbox).join(id)
    }
}

#[test]
fn create_start_wait_remove() {
    let f = fixture();
    let c = f.engine.create(f.request("c1", "", &["sh"])).unwrap();
    assert_eq!(c.state(), State::Created);
    assert!(
        f.fs.has_dir(&f.cgroup("c1", "c1")),
        "sandbox defaults to the id"
    );
    let pids_max = f.cgroup("c1", "c1").join("pids.max");
    assert!(f
        .fs
        .writes
        .lock()
        .unwrap()
        .iter()
        .any(|(p, v)| *p == pids_max && v == "16"));
    let record = &f.spawner.records()[0];
    assert!(record.cgroup, "cloned into the cgroup");
    assert_ne!(record.namespaces & libc::CLONE_NEWPID as u64, 0);

    f.engine.start("c1").unwrap();
    assert_eq!(c.state(), State::Running);
    let err = f.engine.start("c1").unwrap_err();
    assert!(matches!(err, ContainerError::WrongState { .. }), "{err}");

    f.reaper.record(c.init.pid, 3 << 8);
    assert_eq!(f.engine.wait("c1", "").unwrap().status, 3);
    assert_eq!(f.engine.wait("c1", "").unwrap().status, 3, "waitable twice");
    assert_eq!(c.state(), State::Stopped);

    f.engine.remove("c1", 1).unwrap();
    assert!(!f.fs.has_dir(&f.cgroup("c1", "c1")));
    assert!(
        !f.fs.has_dir(&Path::new(ROOT).join("vessel/c1")),
        "empty pod gone"
    );
    assert!(matches!(
        f.engine.get("c1"),
        Err(ContainerError::NotFound(_))
    ));
}

#[test]
fn ids_and_states_are_checked() {
    let f = fixture();
    f.engine.create(f.request("a", "pod", &["sh"])).unwrap();
    let err = f.engine.create(f.request("a", "pod", &["sh"])).unwrap_err();
    assert!(matches!(err, ContainerError::AlreadyExists(_)), "{err}");
    for bad in ["", "../x", "a/b"] {
        let err = f.engine.create(f.request(bad, "", &["sh"])).unwrap_err();
        assert!(matches!(err, ContainerError::InvalidId(_)), "{bad}: {err}");
    }
    assert!(matches!(
        f.engine.start("nope"),
        Err(ContainerError::NotFound(_))
    ));
    assert!(matches!(
        f.engine.wait("nope", ""),
        Err(ContainerError::NotFound(_))
    ));
    assert!(matches!(
        f.engine.wait("a", "no-such-exec"),
        Err(ContainerError::ProcessNotFound { .. })
    ));
    let err = f
        .engine
        .exec(
            "a",
            "e1",
            br#"{"args":["sh"],"cwd":"/","user":{"uid":0,"gid":0}}"#,
            false,
        )
        .unwrap_err();
    assert!(
        matches!(err, ContainerError::WrongState { .. }),
        "exec before start: {err}"
    );
    let err = f.engine.pause("a").unwrap_err();
    assert!(
        err.to_string().contains("is created: cannot pause"),
        "{err}"
    );
    let mut req = f.request("b", "", &["sh"]);
    req.spec = b"{".to_vec();
    assert!(matches!(f.engine.create(req), Err(ContainerError::Spec(_))));
}

#[test]
fn a_failed_create_leaves_nothing_and_the_id_is_free_again() {
    let f = fixture();
    *f.spawner.fail.lock().unwrap() = Some(("PivotRoot".into(), libc::EINVAL));
    let err = f.engine.create(f.request("x", "", &["sh"])).unwrap_err();
    assert_eq!(
        crate::chain(&err),
        "container setup failed while pivoting into the container root: Invalid argument (os error 22)"
    );
    assert!(!f.fs.has_dir(&f.cgroup("x", "x")));
    assert!(!f.fs.has_dir(&Path::new(ROOT).join("vessel/x")));

    *f.spawner.fail.lock().unwrap() = None;
    let err = f
        .engine
        .create(f.request("x", "", &["missing-cmd"]))
        .unwrap_err();
    assert!(
        crate::chain(&err).contains("finding executable \"missing-cmd\" in $PATH"),
        "{err}"
    );
    assert!(!f.fs.has_dir(&f.cgroup("x", "x")));
    f.engine.create(f.request("x", "", &["sh"])).unwrap();

    let mut req = f.request("y", "", &["sh"]);
    req.rootfs = "/nonexistent/rootfs".into();
    let err = f.engine.create(req).unwrap_err();
    assert!(crate::chain(&err).contains("/nonexistent/rootfs"), "{err}");
}

#[test]
fn a_failed_exec_is_reported_at_start() {
    let f = fixture();
    *f.spawner.fail.lock().unwrap() = Some(("exec".into(), libc::EACCES));
    f.engine.create(f.request("c", "", &["sh"])).unwrap();
    let err = f.engine.start("c").unwrap_err();
    assert_eq!(
        crate::chain(&err),
        "container setup failed while executing \"/bin/sh\": Permission denied (os error 13)"
    );
}

#[test]
fn pod_members_join_the_first_containers_namespaces() {
    let f = fixture();
    let first = f.engine.create(f.request("pause", "pod", &["sh"])).unwrap();
    f.engine.create(f.request("app", "pod", &["sh"])).unwrap();
    let records = f.spawner.records();
    let flags = libc::CLONE_NEWUTS | libc::CLONE_NEWIPC;
    assert_ne!(
        records[0].namespaces & flags as u64,
        0,
        "the first makes them"
    );
    assert_eq!(records[1].namespaces & flags as u64, 0, "the second joins");
    assert!(
        records[1].steps[0].starts_with("SetNs"),
        "{:?}",
        records[1].steps
    );
    assert_eq!(
        records[1].pid_ns_of, None,
        "its own pid namespace: no path asked"
    );
    assert!(f.fs.has_dir(&f.cgroup("pod", "app")));

    // Once the holder has exited, the pod's namespaces are gone with it.
    f.reaper.record(first.init.pid, 0);
    f.engine.create(f.request("late", "pod", &["sh"])).unwrap();
    let late = &f.spawner.records()[2];
    assert_ne!(late.namespaces & flags as u64, 0);
}

#[test]
fn running_containers_pause_resume_and_update() {
    let f = fixture();
    f.engine.create(f.request("c", "", &["sh"])).unwrap();
    f.engine.start("c").unwrap();
    f.engine.pause("c").unwrap();
    assert_eq!(f.engine.get("c").unwrap().state(), State::Paused);
    let freeze = f.cgroup("c", "c").join("cgroup.freeze");
    assert_eq!(f.fs.files.lock().unwrap().get(&freeze).unwrap(), "1");
    f.engine.resume("c").unwrap();
    assert_eq!(f.fs.files.lock().unwrap().get(&freeze).unwrap(), "0");
    f.engine.update("c", br#"{"pids": {"limit": 99}}"#).unwrap();
    let pids_max = f.cgroup("c", "c").join("pids.max");
    assert_eq!(f.fs.files.lock().unwrap().get(&pids_max).unwrap(), "99");
    let err = f.engine.update("c", br#"{"pids": 5}"#).unwrap_err();
    assert!(
        err.to_string().starts_with("parsing the OCI resources"),
        "{err}"
    );
}

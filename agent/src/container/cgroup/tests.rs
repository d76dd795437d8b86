//! The manager against a recording fake, and [`RealCgroupFs`] on a tempdir.

mod fake;
mod parse;
mod plan;

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use oci_spec::runtime::LinuxResources;

use self::fake::{FakeFs, Kind, Op};
use super::{CgroupError, CgroupFs, Cgroups, RealCgroupFs};

const ALL: &str = "+cpu +memory +pids +io";

fn resources(json: serde_json::Value) -> LinuxResources {
    serde_json::from_value(json).unwrap()
}

fn op_mkdir(p: &str) -> Op {
    Op::Mkdir(p.to_owned())
}

fn op_rmdir(p: &str) -> Op {
    Op::Rmdir(p.to_owned())
}

fn op_write(p: &str, v: &str) -> Op {
    Op::Write(p.to_owned(), v.to_owned())
}

fn op_read(p: &str) -> Op {
    Op::Read(p.to_owned())
}

/// A manager on a fake whose kernel lists `controllers`, initialised, with
/// the fake's log cleared.
fn setup(controllers: &str) -> (Arc<FakeFs>, Cgroups) {
    let fs = Arc::new(FakeFs::with_root("/cg"));
    fs.set_file("/cg/cgroup.controllers", controllers);
    let cgroups = Cgroups::new(fs.clone(), PathBuf::from("/cg"));
    cgroups.init().unwrap();
    fs.clear_ops();
    (fs, cgroups)
}

#[test]
fn init_enables_the_managed_controllers_the_kernel_has() {
    let fs = Arc::new(FakeFs::with_root("/cg"));
    fs.set_file(
        "/cg/cgroup.controllers",
        "cpuset cpu io memory hugetlb pids rdma misc\n",
    );
    let cgroups = Cgroups::new(fs.clone(), PathBuf::from("/cg"));
    cgroups.init().unwrap();
    assert_eq!(
        fs.ops(),
        [
            op_read("/cg/cgroup.controllers"),
            op_write("/cg/cgroup.subtree_control", ALL),
            op_mkdir("/cg/vessel"),
            op_write("/cg/vessel/cgroup.subtree_control", ALL),
        ]
    );
    // Again (vessel/ exists): fine.
    cgroups.init().unwrap();
}

#[test]
fn init_skips_missing_controllers_and_limits_needing_them_are_refused() {
    let (fs, cgroups) = setup("cpu pids\n");
    let err = cgroups
        .create(
            "s",
            "c",
            Some(&resources(serde_json::json!({"memory": {"limit": 1}}))),
        )
        .unwrap_err();
    assert!(
        matches!(&err, CgroupError::MissingController { controller, field }
            if controller == "memory" && field == "memory.limit"),
        "{err:?}"
    );
    assert_eq!(err.kind(), io::ErrorKind::Unsupported);
    assert_eq!(
        fs.ops(),
        [
            op_mkdir("/cg/vessel/s"),
            op_write("/cg/vessel/s/cgroup.subtree_control", "+cpu +pids"),
            op_mkdir("/cg/vessel/s/c"),
            op_rmdir("/cg/vessel/s/c"),
            op_rmdir("/cg/vessel/s"),
        ]
    );
    assert!(!fs.has_dir("/cg/vessel/s"));
}

#[test]
fn init_with_no_managed_controller_writes_no_subtree_control() {
    let fs = Arc::new(FakeFs::with_root("/cg"));
    fs.set_file("/cg/cgroup.controllers", "\n");
    let cgroups = Cgroups::new(fs.clone(), PathBuf::from("/cg"));
    cgroups.init().unwrap();
    cgroups.create("s", "c", None).unwrap();
    assert_eq!(fs.writes(), []);
}

#[test]
fn create_before_init_is_an_error() {
    let fs = Arc::new(FakeFs::with_root("/cg"));
    let cgroups = Cgroups::new(fs.clone(), PathBuf::from("/cg"));
    let err = cgroups.create("s", "c", None).unwrap_err();
    assert!(matches!(err, CgroupError::NotInitialized), "{err:?}");
    assert_eq!(fs.ops(), []);
}

#[test]
fn ids_are_validated_before_any_syscall() {
    let (fs, cgroups) = setup("cpu memory pids io");
    for bad in ["", ".", "..", "a/b", "/", "a\0b"] {
        for (sandbox, container) in [(bad, "c"), ("s", bad)] {
            let err = cgroups.create(sandbox, container, None).unwrap_err();
            assert!(
                matches!(&err, CgroupError::InvalidId(id) if id == bad),
                "{err:?}"
            );
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        }
    }
    assert_eq!(fs.ops(), []);
    // Dots inside a name are fine.
    cgroups.create("s.1", "..c", None).unwrap();
}

#[test]
fn the_first_container_creates_its_sandbox_the_second_reuses_it() {
    let (fs, cgroups) = setup("cpu memory pids io");
    let first = cgroups.create("s", "c1", None).unwrap();
    assert_eq!(first.path(), PathBuf::from("/cg/vessel/s/c1"));
    let second = cgroups.create("s", "c2", None).unwrap();
    assert_eq!(
        fs.ops(),
        [
            op_mkdir("/cg/vessel/s"),
            op_write("/cg/vessel/s/cgroup.subtree_control", ALL),
            op_mkdir("/cg/vessel/s/c1"),
            op_mkdir("/cg/vessel/s"),
            op_mkdir("/cg/vessel/s/c2"),
        ]
    );
    assert_eq!(
        second.memory_events_path(),
        PathBuf::from("/cg/vessel/s/c2/memory.events")
    );
}

#[test]
fn an_existing_container_cgroup_is_already_exists_and_kept() {
    let (fs, cgroups) = setup("cpu memory pids io");
    fs.add_dir("/cg/vessel/s");
    fs.add_dir("/cg/vessel/s/c");
    let err = cgroups.create("s", "c", None).unwrap_err();
    assert!(matches!(err, CgroupError::CreateDir { .. }), "{err:?}");
    assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
    assert_eq!(
        fs.ops(),
        [op_mkdir("/cg/vessel/s"), op_mkdir("/cg/vessel/s/c")]
    );
    assert!(fs.has_dir("/cg/vessel/s/c"));
}

#[test]
fn a_failed_container_mkdir_removes_the_new_sandbox() {
    let (fs, cgroups) = setup("cpu memory pids io");
    fs.fail(Kind::Mkdir, "/cg/vessel/s/c", libc::ENOSPC, 1);
    let err = cgroups.create("s", "c", None).unwrap_err();
    assert!(matches!(err, CgroupError::CreateDir { .. }), "{err:?}");
    assert_eq!(fs.ops().last(), Some(&op_rmdir("/cg/vessel/s")));
    assert!(!fs.has_dir("/cg/vessel/s"));
}

#[test]
fn a_failed_subtree_control_write_removes_the_new_sandbox() {
    let (fs, cgroups) = setup("cpu memory pids io");
    fs.fail(
        Kind::Write,
        "/cg/vessel/s/cgroup.subtree_control",
        libc::EBUSY,
        1,
    );
    let err = cgroups.create("s", "c", None).unwrap_err();
    assert!(matches!(err, CgroupError::WriteFile { .. }), "{err:?}");
    assert_eq!(
        fs.ops(),
        [
            op_mkdir("/cg/vessel/s"),
            op_write("/cg/vessel/s/cgroup.subtree_control", ALL),
            op_rmdir("/cg/vessel/s"),
        ]
    );
}

#[test]
fn a_failed_apply_removes_the_container_and_only_a_sandbox_it_created() {
    let (fs, cgroups) = setup("cpu memory pids io");
    let spec = resources(serde_json::json!({"memory": {"limit": 4096}}));
    fs.fail(Kind::Write, "/cg/vessel/s/c/memory.max", libc::EINVAL, 2);
    let err = cgroups.create("s", "c", Some(&spec)).unwrap_err();
    assert!(
        matches!(&err, CgroupError::WriteFile { value, .. } if value == "4096"),
        "{err:?}"
    );
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    let ops = fs.ops();
    assert_eq!(
        ops[ops.len() - 2..],
        [op_rmdir("/cg/vessel/s/c"), op_rmdir("/cg/vessel/s")]
    );
    assert!(!fs.has_dir("/cg/vessel/s"));

    // The sandbox existed before: only the container's directory goes.
    fs.add_dir("/cg/vessel/s");
    fs.clear_ops();
    cgroups.create("s", "c", Some(&spec)).unwrap_err();
    assert_eq!(fs.ops().last(), Some(&op_rmdir("/cg/vessel/s/c")));
    assert!(fs.has_dir("/cg/vessel/s"));
}

#[test]
fn a_missing_io_weight_file_is_unsupported() {
    let (fs, cgroups) = setup("cpu memory pids io");
    fs.remove_file("/cg/vessel/s/c/io.weight");
    let spec = resources(serde_json::json!({"blockIO": {"weight": 500}}));
    let err = cgroups.create("s", "c", Some(&spec)).unwrap_err();
    assert!(
        matches!(&err, CgroupError::UnsupportedResource { field: "blockIO.weight", path, .. }
            if path == &PathBuf::from("/cg/vessel/s/c/io.weight")),
        "{err:?}"
    );
    assert_eq!(err.kind(), io::ErrorKind::Unsupported);
    assert!(!fs.has_dir("/cg/vessel/s/c"));
}

#[test]
fn a_refused_spec_writes_nothing() {
    let (fs, cgroups) = setup("cpu memory pids io");
    let cgroup = cgroups.create("s", "c", None).unwrap();
    fs.clear_ops();
    let spec = resources(serde_json::json!({
        "cpu": {"shares": 1024},
        "memory": {"limit": -2},
    }));
    let err = cgroup.apply(&spec).unwrap_err();
    assert!(
        matches!(err, CgroupError::InvalidResource { .. }),
        "{err:?}"
    );
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert_eq!(fs.ops(), []);
}

#[test]
fn apply_writes_each_set_limit_once() {
    let (fs, cgroups) = setup("cpu memory pids io");
    let spec = resources(serde_json::json!({
        "devices": [{"allow": false, "access": "rwm"}],
        "memory": {"limit": 268435456, "reservation": 134217728, "swap": 268435456},
        "cpu": {"shares": 512, "quota": 50000, "period": 100000},
        "pids": {"limit": 64},
        "blockIO": {"weight": 100},
        "unified": {"memory.high": "200000000", "cpu.uclamp.min": "10"},
    }));
    let cgroup = cgroups.create("s", "c", Some(&spec)).unwrap();
    let c = |file: &str| format!("/cg/vessel/s/c/{file}");
    let expected: Vec<(String, String)> = [
        ("/cg/vessel/s/cgroup.subtree_control".to_owned(), ALL),
        (c("cpu.weight"), "20"),
        (c("cpu.max"), "50000 100000"),
        (c("memory.low"), "134217728"),
        (c("memory.max"), "268435456"),
        (c("pids.max"), "64"),
        (c("io.weight"), "default 910"),
        (c("cpu.uclamp.min"), "10"),
        (c("memory.high"), "200000000"),
    ]
    .into_iter()
    .map(|(p, v)| (p, v.to_owned()))
    .collect();
    assert_eq!(fs.writes(), expected);

    // UpdateContainer: unlimited values.
    fs.clear_ops();
    let update = resources(serde_json::json!({
        "memory": {"limit": -1},
        "cpu": {"quota": -1},
        "pids": {"limit": 0},
    }));
    cgroup.apply(&update).unwrap();
    assert_eq!(
        fs.ops(),
        [
            op_write(&c("cpu.max"), "max 100000"),
            op_write(&c("memory.max"), "max"),
            op_write(&c("pids.max"), "max"),
        ]
    );
}

#[test]
fn freeze_kill_and_open_dir() {
    let (fs, cgroups) = setup("cpu memory pids io");
    let cgroup = cgroups.create("s", "c", None).unwrap();
    fs.clear_ops();
    cgroup.freeze(true).unwrap();
    cgroup.freeze(false).unwrap();
    cgroup.kill().unwrap();
    cgroup.open_dir().unwrap();
    assert_eq!(
        fs.ops(),
        [
            op_write("/cg/vessel/s/c/cgroup.freeze", "1"),
            op_write("/cg/vessel/s/c/cgroup.freeze", "0"),
            op_write("/cg/vessel/s/c/cgroup.kill", "1"),
            Op::OpenDir("/cg/vessel/s/c".to_owned()),
        ]
    );
}

#[test]
fn remove_retries_while_busy_then_removes_an_empty_sandbox() {
    let (fs, cgroups) = setup("cpu memory pids io");
    let c1 = cgroups.create("s", "c1", None).unwrap();
    let c2 = cgroups.create("s", "c2", None).unwrap();
    fs.fail(Kind::Rmdir, "/cg/vessel/s/c1", libc::EBUSY, 2);
    fs.clear_ops();
    c1.remove().unwrap();
    // c2 still lives: the sandbox stays.
    assert_eq!(
        fs.ops(),
        [
            op_rmdir("/cg/vessel/s/c1"),
            op_rmdir("/cg/vessel/s/c1"),
            op_rmdir("/cg/vessel/s/c1"),
            op_rmdir("/cg/vessel/s"),
        ]
    );
    assert!(fs.has_dir("/cg/vessel/s"));
    c2.remove().unwrap();
    assert!(!fs.has_dir("/cg/vessel/s"));
    // Already gone: fine.
    c2.remove().unwrap();
}

#[test]
fn remove_gives_up_on_a_cgroup_that_stays_busy() {
    let (fs, mut cgroups) = setup("cpu memory pids io");
    Arc::get_mut(&mut cgroups.shared).unwrap().busy_timeout = Duration::from_millis(30);
    let cgroup = cgroups.create("s", "c", None).unwrap();
    fs.fail(Kind::Rmdir, "/cg/vessel/s/c", libc::EBUSY, usize::MAX);
    let start = Instant::now();
    let err = cgroup.remove().unwrap_err();
    assert!(start.elapsed() >= Duration::from_millis(30));
    assert!(
        matches!(&err, CgroupError::RemoveDir { source, .. }
            if source.raw_os_error() == Some(libc::EBUSY)),
        "{err:?}"
    );
    assert!(fs.has_dir("/cg/vessel/s/c"));
}

#[test]
fn state_and_stats_come_from_the_files() {
    let (fs, cgroups) = setup("cpu memory pids io");
    let cgroup = cgroups.create("s", "c", None).unwrap();
    let c = |file: &str| format!("/cg/vessel/s/c/{file}");
    fs.set_file(&c("cgroup.procs"), "12\n345\n");
    fs.set_file(&c("cgroup.events"), "populated 1\nfrozen 0\n");
    fs.set_file(&c("cpu.stat"), parse::CPU_STAT);
    fs.set_file(&c("memory.current"), "1048576\n");
    fs.set_file(&c("memory.max"), "max\n");
    fs.set_file(&c("memory.peak"), "2097152\n");
    fs.set_file(&c("memory.events"), parse::MEMORY_EVENTS);
    fs.set_file(&c("pids.current"), "3\n");
    fs.set_file(&c("pids.max"), "64\n");
    fs.set_file(&c("io.stat"), parse::IO_STAT);
    fs.clear_ops();
    assert_eq!(cgroup.pids().unwrap(), [12, 345]);
    assert!(cgroup.is_populated().unwrap());
    assert_eq!(cgroup.oom_kills().unwrap(), 2);
    let stats = cgroup.stats().unwrap();
    assert_eq!(stats.cpu.usage_usec, 1_234_567);
    assert_eq!(stats.cpu.user_usec, 1_000_000);
    assert_eq!(stats.cpu.system_usec, 234_567);
    assert_eq!(stats.cpu.nr_throttled, 7);
    assert_eq!(stats.cpu.throttled_usec, 89_000);
    assert_eq!(stats.memory.current, 1_048_576);
    assert_eq!(stats.memory.limit, None);
    assert_eq!(stats.memory.peak, 2_097_152);
    assert_eq!(stats.memory.oom_kills, 2);
    assert_eq!(stats.pids.current, 3);
    assert_eq!(stats.pids.limit, Some(64));
    assert_eq!(stats.io.rbytes, 1 + 4096);
    assert_eq!(stats.io.wbytes, 2 + 8192);
    assert_eq!(stats.io.rios, 3 + 1);
    assert_eq!(stats.io.wios, 4 + 2);
    // One read per file, nothing else.
    let reads = fs.ops();
    assert!(
        reads.iter().all(|op| matches!(op, Op::Read(_))),
        "{reads:?}"
    );
    // cpu.stat, memory.{current,max,peak,events}, pids.{current,max}, io.stat.
    assert_eq!(reads.len(), 3 + 8);

    fs.set_file(&c("cgroup.events"), "populated 2\n");
    assert!(matches!(
        cgroup.is_populated().unwrap_err(),
        CgroupError::ParseFile { .. }
    ));
}

#[test]
fn stats_skip_the_files_of_missing_controllers() {
    let (fs, cgroups) = setup("cpu");
    let cgroup = cgroups.create("s", "c", None).unwrap();
    fs.set_file(
        "/cg/vessel/s/c/cpu.stat",
        "usage_usec 5\nuser_usec 3\nsystem_usec 2\n",
    );
    fs.clear_ops();
    let stats = cgroup.stats().unwrap();
    assert_eq!(stats.cpu.usage_usec, 5);
    assert_eq!(stats.memory, Default::default());
    assert_eq!(fs.ops(), [op_read("/cg/vessel/s/c/cpu.stat")]);
}

#[test]
fn real_fs_plumbing_on_a_tempdir() {
    let dir = tempfile::tempdir().unwrap();
    let fs = RealCgroupFs;
    let sub = dir.path().join("sub");
    fs.mkdir(&sub).unwrap();
    assert_eq!(
        fs.mkdir(&sub).unwrap_err().kind(),
        io::ErrorKind::AlreadyExists
    );
    let file = sub.join("memory.max");
    // Writes need an existing file, as on cgroupfs.
    assert_eq!(
        fs.write(&file, "1").unwrap_err().kind(),
        io::ErrorKind::NotFound
    );
    std::fs::write(&file, "").unwrap();
    fs.write(&file, "123456789").unwrap();
    fs.write(&file, "max").unwrap();
    assert_eq!(fs.read(&file).unwrap(), "max");
    // Bigger than one read chunk.
    let big = "1234567\n".repeat(3000);
    fs.write(&file, &big).unwrap();
    assert_eq!(fs.read(&file).unwrap(), big);
    assert_eq!(
        fs.read(&sub.join("nope")).unwrap_err().kind(),
        io::ErrorKind::NotFound
    );
    drop(fs.open_dir(&sub).unwrap());
    assert!(fs.open_dir(&file).is_err());
    assert!(fs.rmdir(&sub).is_err());
    std::fs::remove_file(&file).unwrap();
    fs.rmdir(&sub).unwrap();
    assert!(!sub.exists());
}

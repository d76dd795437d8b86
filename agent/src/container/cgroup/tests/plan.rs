//! Resource translation, without syscalls.

use super::super::resources::{blkio_weight_to_io_weight, plan, shares_to_weight, Plan};
use super::super::{CgroupError, Controller, Controllers};
use super::resources;

fn all() -> Controllers {
    Controllers::from_list("cpu memory pids io")
}

/// The `(file, value)` writes of a spec, with all controllers.
fn writes(json: serde_json::Value) -> Vec<(String, String)> {
    plan(&resources(json), all())
        .unwrap()
        .writes
        .into_iter()
        .map(|w| (w.file, w.value))
        .collect()
}

fn one(file: &str, value: &str) -> Vec<(String, String)> {
    vec![(file.to_owned(), value.to_owned())]
}

#[test]
fn cpu_shares_to_weight() {
    assert_eq!(shares_to_weight(2), 1);
    assert_eq!(shares_to_weight(1024), 39);
    assert_eq!(shares_to_weight(262_144), 10_000);
    // Clamped into [2, 262144] first.
    assert_eq!(shares_to_weight(1), 1);
    assert_eq!(shares_to_weight(u64::MAX), 10_000);
}

#[test]
fn blkio_weight_to_io() {
    assert_eq!(blkio_weight_to_io_weight(10), Some(1));
    assert_eq!(blkio_weight_to_io_weight(500), Some(4950));
    assert_eq!(blkio_weight_to_io_weight(1000), Some(10_000));
    assert_eq!(blkio_weight_to_io_weight(9), None);
    assert_eq!(blkio_weight_to_io_weight(1001), None);
    let err = plan(
        &resources(serde_json::json!({"blockIO": {"weight": 5}})),
        all(),
    )
    .unwrap_err();
    assert!(
        matches!(err, CgroupError::InvalidResource { .. }),
        "{err:?}"
    );
}

#[test]
fn cpu_max() {
    let cpu = |cpu: serde_json::Value| writes(serde_json::json!({ "cpu": cpu }));
    assert_eq!(
        cpu(serde_json::json!({"quota": 20000, "period": 50000})),
        one("cpu.max", "20000 50000")
    );
    assert_eq!(
        cpu(serde_json::json!({"quota": 20000})),
        one("cpu.max", "20000 100000")
    );
    assert_eq!(
        cpu(serde_json::json!({"quota": -1})),
        one("cpu.max", "max 100000")
    );
    assert_eq!(
        cpu(serde_json::json!({"period": 50000})),
        one("cpu.max", "max 50000")
    );
    assert_eq!(cpu(serde_json::json!({"quota": 0, "period": 0})), []);
    assert_eq!(cpu(serde_json::json!({"shares": 0})), []);
    assert_eq!(
        cpu(serde_json::json!({"quota": 20000, "burst": 1000})),
        [
            ("cpu.max".to_owned(), "20000 100000".to_owned()),
            ("cpu.max.burst".to_owned(), "1000".to_owned()),
        ]
    );
}

#[test]
fn an_idle_group_gets_no_weight() {
    let p = plan(
        &resources(serde_json::json!({"cpu": {"idle": 1, "shares": 1024}})),
        all(),
    )
    .unwrap();
    assert_eq!(p.writes.len(), 1);
    assert_eq!(
        (p.writes[0].file.as_str(), p.writes[0].value.as_str()),
        ("cpu.idle", "1")
    );
    assert_eq!(p.ignored, ["cpu.shares"]);
    assert_eq!(
        writes(serde_json::json!({"cpu": {"idle": 0, "shares": 1024}})),
        [
            ("cpu.idle".to_owned(), "0".to_owned()),
            ("cpu.weight".to_owned(), "39".to_owned()),
        ]
    );
}

#[test]
fn memory_and_pids_values() {
    let memory = |m: serde_json::Value| writes(serde_json::json!({ "memory": m }));
    assert_eq!(
        memory(serde_json::json!({"limit": -1})),
        one("memory.max", "max")
    );
    assert_eq!(memory(serde_json::json!({"limit": 0})), []);
    assert_eq!(
        memory(serde_json::json!({"reservation": -1})),
        one("memory.low", "max")
    );
    // Swap is ignored: the guest has none.
    assert_eq!(memory(serde_json::json!({"swap": 1024})), []);
    for bad in [
        serde_json::json!({"limit": -2}),
        serde_json::json!({"reservation": -3}),
    ] {
        let err = plan(&resources(serde_json::json!({ "memory": bad })), all()).unwrap_err();
        assert!(
            matches!(err, CgroupError::InvalidResource { .. }),
            "{err:?}"
        );
    }
    let pids = |limit: i64| writes(serde_json::json!({"pids": {"limit": limit}}));
    assert_eq!(pids(100), one("pids.max", "100"));
    assert_eq!(pids(0), one("pids.max", "max"));
    assert_eq!(pids(-1), one("pids.max", "max"));
}

#[test]
fn unset_limits_need_no_controller() {
    let none = Controllers::default();
    let spec = resources(serde_json::json!({
        "cpu": {"shares": 0, "quota": 0},
        "memory": {"limit": 0},
        "blockIO": {"weight": 0},
    }));
    assert_eq!(plan(&spec, none).unwrap(), Plan::default());
    let spec = resources(serde_json::json!({"pids": {"limit": 10}}));
    let err = plan(&spec, none).unwrap_err();
    assert!(
        matches!(&err, CgroupError::MissingController { controller, .. } if controller == Controller::Pids.name()),
        "{err:?}"
    );
}

#[test]
fn unified_keys() {
    let check = |key: &str| {
        plan(
            &resources(serde_json::json!({"unified": {key: "1"}})),
            all(),
        )
    };
    assert!(check("memory.high").is_ok());
    assert!(check("io.bfq.weight").is_ok());
    for bad in [
        "",
        "../memory.max",
        "memory.max/x",
        "memory..max",
        "cgroup.procs",
        "cgroup.kill",
        "nodot",
    ] {
        let err = check(bad).unwrap_err();
        assert!(
            matches!(err, CgroupError::InvalidResource { .. }),
            "{bad}: {err:?}"
        );
    }
    for (key, controller) in [("hugetlb.2MB.max", "hugetlb"), ("cpuset.cpus", "cpuset")] {
        let err = check(key).unwrap_err();
        assert!(
            matches!(&err, CgroupError::MissingController { controller: c, field } if c == controller && field == key),
            "{key}: {err:?}"
        );
    }
    let err = plan(
        &resources(serde_json::json!({"unified": {"memory.high": "1"}})),
        Controllers::from_list("cpu"),
    )
    .unwrap_err();
    assert!(
        matches!(err, CgroupError::MissingController { .. }),
        "{err:?}"
    );
}

#[test]
fn unsupported_fields_are_listed_as_ignored() {
    let spec = resources(serde_json::json!({
        "devices": [{"allow": false, "access": "rwm"}],
        "memory": {"kernel": 1, "kernelTCP": 1, "swappiness": 60, "disableOOMKiller": true,
                   "useHierarchy": true, "checkBeforeUpdate": false},
        "cpu": {"realtimeRuntime": 1, "realtimePeriod": 1, "cpus": "0-1", "mems": ""},
        "blockIO": {"leafWeight": 10, "weightDevice": [{"major": 8, "minor": 0, "weight": 10}],
                    "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1}],
                    "throttleWriteIOPSDevice": []},
        "hugepageLimits": [{"pageSize": "2MB", "limit": 0}],
        "network": {"classID": 1},
        "rdma": {"mlx": {"hcaHandles": 1}},
    }));
    let p = plan(&spec, Controllers::default()).unwrap();
    assert_eq!(p.writes, []);
    assert_eq!(
        p.ignored,
        [
            "cpu.realtimeRuntime",
            "cpu.realtimePeriod",
            "cpu.cpus",
            "memory.kernel",
            "memory.kernelTCP",
            "memory.swappiness",
            "memory.disableOOMKiller",
            "blockIO.leafWeight",
            "blockIO.weightDevice",
            "blockIO.throttleReadBpsDevice",
            "devices",
            "hugepageLimits",
            "network",
            "rdma",
        ]
    );
}

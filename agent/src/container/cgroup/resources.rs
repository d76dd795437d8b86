//! OCI [`LinuxResources`] to cgroup v2 files (the table in the parent
//! module's doc).

use std::sync::Once;

use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxMemory, LinuxResources};

use super::{Cgroup, CgroupError, Controller, Controllers};

/// `cpu.max`'s period when the spec sets a quota but no period (the kernel's
/// default, in microseconds).
const DEFAULT_CPU_PERIOD: u64 = 100_000;

/// Converts cgroup v1 `cpu.shares` to v2 `cpu.weight` as runc does, mapping
/// [2, 262144] linearly onto [1, 10000]:
/// `weight = 1 + (shares - 2) * 9999 / 262142`.
/// Shares outside [2, 262144] are clamped first, as v1 kernels clamp them
/// (so the default 1024 becomes 39, not v2's default 100).
pub fn shares_to_weight(shares: u64) -> u64 {
    let shares = shares.clamp(2, 262_144);
    1 + (shares - 2) * 9999 / 262_142
}

/// Converts cgroup v1 `blkio.weight` to v2 `io.weight` as runc does, mapping
/// [10, 1000] linearly onto [1, 10000]: `weight = 1 + (w - 10) * 9999 / 990`.
/// `None` outside [10, 1000] (v1 kernels refuse those too).
pub fn blkio_weight_to_io_weight(weight: u16) -> Option<u64> {
    if !(10..=1000).contains(&weight) {
        return None;
    }
    Some(1 + (u64::from(weight) - 10) * 9999 / 990)
}

/// One write that applying resources makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Write {
    /// The OCI field it comes from, e.g. `memory.limit`, or `unified`.
    pub field: &'static str,
    /// The file in the cgroup directory.
    pub file: String,
    pub value: String,
}

/// What applying resources does: the writes in order, and the set fields it
/// ignores.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Plan {
    pub writes: Vec<Write>,
    pub ignored: Vec<&'static str>,
}

impl Plan {
    fn write(&mut self, field: &'static str, file: &str, value: impl ToString) {
        self.writes.push(Write {
            field,
            file: file.to_owned(),
            value: value.to_string(),
        });
    }

    fn ignore_if(&mut self, set: bool, field: &'static str) {
        if set {
            self.ignored.push(field);
        }
    }
}

fn require(controllers: Controllers, c: Controller, field: &str) -> Result<(), CgroupError> {
    if controllers.contains(c) {
        return Ok(());
    }
    Err(CgroupError::MissingController {
        controller: c.name().to_owned(),
        field: field.to_owned(),
    })
}

/// Whether an optional list has entries.
fn listed<T>(list: &Option<Vec<T>>) -> bool {
    list.as_ref().is_some_and(|l| !l.is_empty())
}

fn invalid(field: &str, reason: &'static str) -> CgroupError {
    CgroupError::InvalidResource {
        field: field.to_owned(),
        reason,
    }
}

/// Validates `resources` against the enabled `controllers` and lists the
/// writes that apply them. No syscall.
pub(super) fn plan(
    resources: &LinuxResources,
    controllers: Controllers,
) -> Result<Plan, CgroupError> {
    let mut plan = Plan::default();
    if let Some(cpu) = resources.cpu() {
        plan_cpu(&mut plan, cpu, controllers)?;
    }
    if let Some(memory) = resources.memory() {
        plan_memory(&mut plan, memory, controllers)?;
    }
    if let Some(pids) = resources.pids() {
        require(controllers, Controller::Pids, "pids.limit")?;
        match pids.limit() {
            limit if limit <= 0 => plan.write("pids.limit", "pids.max", "max"),
            limit => plan.write("pids.limit", "pids.max", limit),
        }
    }
    if let Some(block_io) = resources.block_io() {
        plan_block_io(&mut plan, block_io, controllers)?;
    }
    plan.ignore_if(listed(resources.devices()), "devices");
    plan.ignore_if(listed(resources.hugepage_limits()), "hugepageLimits");
    plan.ignore_if(resources.network().is_some(), "network");
    plan.ignore_if(
        resources.rdma().as_ref().is_some_and(|r| !r.is_empty()),
        "rdma",
    );
    if let Some(unified) = resources.unified() {
        let mut entries: Vec<_> = unified.iter().collect();
        entries.sort();
        for (key, value) in entries {
            check_unified_key(key, controllers)?;
            plan.write("unified", key, value);
        }
    }
    Ok(plan)
}

fn plan_cpu(plan: &mut Plan, cpu: &LinuxCpu, controllers: Controllers) -> Result<(), CgroupError> {
    let shares = cpu.shares().filter(|s| *s != 0);
    let quota = cpu.quota().filter(|q| *q != 0);
    let period = cpu.period().filter(|p| *p != 0);
    let wanted = [
        ("cpu.idle", cpu.idle().is_some()),
        ("cpu.shares", shares.is_some()),
        ("cpu.quota", quota.is_some()),
        ("cpu.period", period.is_some()),
        ("cpu.burst", cpu.burst().is_some()),
    ];
    for (field, set) in wanted {
        if set {
            require(controllers, Controller::Cpu, field)?;
        }
    }
    // Idle first: the kernel refuses a weight for an idle group.
    if let Some(idle) = cpu.idle() {
        plan.write("cpu.idle", "cpu.idle", idle);
    }
    if let Some(shares) = shares {
        if cpu.idle() == Some(1) {
            plan.ignored.push("cpu.shares");
        } else {
            plan.write("cpu.shares", "cpu.weight", shares_to_weight(shares));
        }
    }
    if quota.is_some() || period.is_some() {
        let period = period.unwrap_or(DEFAULT_CPU_PERIOD);
        let value = match quota {
            Some(q) if q > 0 => format!("{q} {period}"),
            _ => format!("max {period}"),
        };
        plan.write("cpu.quota", "cpu.max", value);
    }
    if let Some(burst) = cpu.burst() {
        plan.write("cpu.burst", "cpu.max.burst", burst);
    }
    plan.ignore_if(
        cpu.realtime_runtime().is_some_and(|r| r != 0),
        "cpu.realtimeRuntime",
    );
    plan.ignore_if(
        cpu.realtime_period().is_some_and(|p| p != 0),
        "cpu.realtimePeriod",
    );
    plan.ignore_if(
        cpu.cpus().as_ref().is_some_and(|c| !c.is_empty()),
        "cpu.cpus",
    );
    plan.ignore_if(
        cpu.mems().as_ref().is_some_and(|m| !m.is_empty()),
        "cpu.mems",
    );
    Ok(())
}

/// A memory size: bytes, -1 = `max`, 0 = unset (`None`).
fn memory_value(field: &str, value: i64) -> Result<Option<String>, CgroupError> {
    match value {
        0 => Ok(None),
        -1 => Ok(Some("max".to_owned())),
        v if v > 0 => Ok(Some(v.to_string())),
        _ => Err(invalid(
            field,
            "must be a positive byte count, or -1 for no limit",
        )),
    }
}

fn plan_memory(
    plan: &mut Plan,
    memory: &LinuxMemory,
    controllers: Controllers,
) -> Result<(), CgroupError> {
    let low = match memory.reservation() {
        Some(r) => memory_value("memory.reservation", r)?,
        None => None,
    };
    let max = match memory.limit() {
        Some(l) => memory_value("memory.limit", l)?,
        None => None,
    };
    if low.is_some() {
        require(controllers, Controller::Memory, "memory.reservation")?;
    }
    if max.is_some() {
        require(controllers, Controller::Memory, "memory.limit")?;
    }
    if let Some(low) = low {
        plan.write("memory.reservation", "memory.low", low);
    }
    if let Some(max) = max {
        plan.write("memory.limit", "memory.max", max);
    }
    if let Some(swap) = memory.swap() {
        tracing::debug!(swap, "ignoring memory.swap: the guest has no swap");
    }
    #[allow(deprecated)] // read only to say it is ignored
    let kernel = memory.kernel();
    plan.ignore_if(kernel.is_some(), "memory.kernel");
    plan.ignore_if(memory.kernel_tcp().is_some(), "memory.kernelTCP");
    plan.ignore_if(memory.swappiness().is_some(), "memory.swappiness");
    plan.ignore_if(
        memory.disable_oom_killer() == Some(true),
        "memory.disableOOMKiller",
    );
    plan.ignore_if(memory.use_hierarchy() == Some(false), "memory.useHierarchy");
    plan.ignore_if(
        memory.check_before_update() == Some(true),
        "memory.checkBeforeUpdate",
    );
    Ok(())
}

fn plan_block_io(
    plan: &mut Plan,
    block_io: &LinuxBlockIo,
    controllers: Controllers,
) -> Result<(), CgroupError> {
    if let Some(weight) = block_io.weight().filter(|w| *w != 0) {
        let io_weight = blkio_weight_to_io_weight(weight)
            .ok_or_else(|| invalid("blockIO.weight", "must be between 10 and 1000"))?;
        require(controllers, Controller::Io, "blockIO.weight")?;
        plan.write(
            "blockIO.weight",
            "io.weight",
            format!("default {io_weight}"),
        );
    }
    plan.ignore_if(block_io.leaf_weight().is_some(), "blockIO.leafWeight");
    let device_lists = [
        ("blockIO.weightDevice", listed(block_io.weight_device())),
        (
            "blockIO.throttleReadBpsDevice",
            listed(block_io.throttle_read_bps_device()),
        ),
        (
            "blockIO.throttleWriteBpsDevice",
            listed(block_io.throttle_write_bps_device()),
        ),
        (
            "blockIO.throttleReadIOPSDevice",
            listed(block_io.throttle_read_iops_device()),
        ),
        (
            "blockIO.throttleWriteIOPSDevice",
            listed(block_io.throttle_write_iops_device()),
        ),
    ];
    for (field, set) in device_lists {
        plan.ignore_if(set, field);
    }
    Ok(())
}

/// A `unified` key must name a file of an enabled controller:
/// `<controller>.<name>`, no path, no `cgroup.*` (the agent's own files).
fn check_unified_key(key: &str, controllers: Controllers) -> Result<(), CgroupError> {
    let field = format!("unified key {key:?}");
    if key.is_empty() || key.contains(['/', '\0']) || key.contains("..") {
        return Err(invalid(&field, "must be a file name in the cgroup"));
    }
    let Some((prefix, _)) = key.split_once('.') else {
        return Err(invalid(&field, "must be <controller>.<file>"));
    };
    if prefix == "cgroup" {
        return Err(invalid(&field, "cgroup.* files are managed by the agent"));
    }
    match Controller::ALL.into_iter().find(|c| c.name() == prefix) {
        Some(c) => require(controllers, c, key),
        None => Err(CgroupError::MissingController {
            controller: prefix.to_owned(),
            field: key.to_owned(),
        }),
    }
}

/// Logs the set fields that are ignored; `devices` once per agent, as every
/// container has some.
fn log_ignored(cgroup: &Cgroup, ignored: &[&'static str]) {
    static DEVICES: Once = Once::new();
    if ignored.contains(&"devices") {
        DEVICES.call_once(|| {
            tracing::warn!("the devices cgroup (an eBPF allowlist in cgroup v2) is not enforced");
        });
    }
    let fields: Vec<&str> = ignored
        .iter()
        .copied()
        .filter(|f| *f != "devices")
        .collect();
    if !fields.is_empty() {
        tracing::warn!(
            cgroup = %cgroup.path.display(),
            fields = ?fields,
            "ignoring resource fields cgroup v2 in the guest cannot honour"
        );
    }
}

impl Cgroup {
    /// Applies `resources` (at create, and for UpdateContainer): validates
    /// all, then writes each set limit once. A refused spec writes nothing.
    pub fn apply(&self, resources: &LinuxResources) -> Result<(), CgroupError> {
        let plan = plan(resources, self.controllers)?;
        log_ignored(self, &plan.ignored);
        for w in &plan.writes {
            let path = self.path.join(&w.file);
            if let Err(source) = self.shared.fs.write(&path, &w.value) {
                return Err(if source.kind() == std::io::ErrorKind::NotFound {
                    CgroupError::UnsupportedResource {
                        field: w.field,
                        path,
                        source,
                    }
                } else {
                    CgroupError::WriteFile {
                        path,
                        value: w.value.clone(),
                        source,
                    }
                });
            }
        }
        Ok(())
    }
}

//! A container's stats as containerd's cgroup v2 metrics.

use containerd_shim::protos::cgroups_v2::metrics::{
    CPUStat, IOEntry, IOStat, MemoryEvents, MemoryStat, Metrics, PidsStat,
};
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::{Message, MessageField};

use super::ConvertError;
use crate::domain::ContainerStats;

/// The type URL containerd (ctr, CRI) reads cgroup v2 metrics by.
const METRICS_V2: &str = "io.containerd.cgroups.v2.Metrics";

/// The guest's cgroup v2 stats as containerd's v2 metrics.
pub(super) fn metrics(stats: &ContainerStats) -> Result<Any, ConvertError> {
    let mut m = Metrics::new();
    if let Some(cpu) = stats.cpu.as_ref() {
        let mut c = CPUStat::new();
        c.usage_usec = cpu.usage_total_ns / 1000;
        c.user_usec = cpu.usage_user_ns / 1000;
        c.system_usec = cpu.usage_system_ns / 1000;
        c.nr_throttled = cpu.throttled_periods;
        c.throttled_usec = cpu.throttled_time_ns / 1000;
        m.cpu = MessageField::some(c);
    }
    if let Some(mem) = stats.memory.as_ref() {
        let mut s = MemoryStat::new();
        s.usage = mem.usage_bytes;
        s.usage_limit = mem.limit_bytes;
        s.max_usage = mem.max_usage_bytes;
        m.memory = MessageField::some(s);
        let mut events = MemoryEvents::new();
        events.oom_kill = mem.oom_kills;
        m.memory_events = MessageField::some(events);
    }
    if let Some(pids) = stats.pids.as_ref() {
        let mut p = PidsStat::new();
        p.current = pids.current;
        p.limit = pids.limit;
        m.pids = MessageField::some(p);
    }
    if let Some(io) = stats.io.as_ref() {
        let mut entry = IOEntry::new();
        entry.rbytes = io.read_bytes;
        entry.wbytes = io.write_bytes;
        entry.rios = io.read_ios;
        entry.wios = io.write_ios;
        let mut s = IOStat::new();
        s.usage.push(entry);
        m.io = MessageField::some(s);
    }
    let mut any = Any::new();
    any.type_url = METRICS_V2.to_owned();
    any.value = m.write_to_bytes().map_err(ConvertError::EncodeMetrics)?;
    Ok(any)
}

#[cfg(test)]
mod tests {
    use vessel_agent_protocol::agent::{MemoryStats, PidsStats, StatsContainerResponse};

    use super::*;
    use crate::convert::container_stats;

    #[test]
    fn metrics_carry_the_guest_counters() {
        let mut stats = StatsContainerResponse::new();
        let mut mem = MemoryStats::new();
        mem.usage_bytes = 4096;
        mem.limit_bytes = 8192;
        stats.memory = MessageField::some(mem);
        let mut pids = PidsStats::new();
        pids.current = 2;
        stats.pids = MessageField::some(pids);
        let any = metrics(&container_stats(&stats)).unwrap();
        assert_eq!(any.type_url, METRICS_V2);
        let back = Metrics::parse_from_bytes(&any.value).unwrap();
        assert_eq!(back.memory.usage, 4096);
        assert_eq!(back.memory.usage_limit, 8192);
        assert_eq!(back.pids.current, 2);
        assert!(back.cpu.is_none(), "no CPU stats came from the guest");
    }
}

//! The agent's side: domain requests into the agent's messages, and the
//! agent's answers into domain values.

use vessel_agent_protocol::agent::{
    CreateContainerRequest, ProcessInfo, StatsContainerResponse, WaitProcessResponse,
};

use crate::domain::{ContainerCreate, ContainerStats, CpuStats, IoStats, MemoryStats, PidsStats};

/// CreateContainer's request.
pub fn create_container_request(c: &ContainerCreate) -> CreateContainerRequest {
    let mut req = CreateContainerRequest::new();
    req.container_id = c.id.clone();
    req.sandbox_id = c.sandbox_id.clone();
    req.oci_spec = c.spec.clone();
    req.rootfs_path = c.rootfs.to_string_lossy().into_owned();
    req.terminal = c.terminal;
    req
}

/// The exit status WaitProcess reports, as containerd counts it.
pub fn exit_status(resp: &WaitProcessResponse) -> u32 {
    resp.exit_status as u32
}

/// The guest pids of ListProcesses' answer.
pub fn guest_pids(processes: &[ProcessInfo]) -> Vec<u32> {
    processes.iter().map(|p| p.pid).collect()
}

/// StatsContainer's answer.
pub fn container_stats(resp: &StatsContainerResponse) -> ContainerStats {
    ContainerStats {
        cpu: resp.cpu.as_ref().map(|c| CpuStats {
            usage_total_ns: c.usage_total_ns,
            usage_user_ns: c.usage_user_ns,
            usage_system_ns: c.usage_system_ns,
            throttled_periods: c.throttled_periods,
            throttled_time_ns: c.throttled_time_ns,
        }),
        memory: resp.memory.as_ref().map(|m| MemoryStats {
            usage_bytes: m.usage_bytes,
            limit_bytes: m.limit_bytes,
            max_usage_bytes: m.max_usage_bytes,
            oom_kills: m.oom_kills,
        }),
        pids: resp.pids.as_ref().map(|p| PidsStats {
            current: p.current,
            limit: p.limit,
        }),
        io: resp.io.as_ref().map(|i| IoStats {
            read_bytes: i.read_bytes,
            write_bytes: i.write_bytes,
            read_ios: i.read_ios,
            write_ios: i.write_ios,
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use containerd_shim::protos::protobuf::MessageField;
    use vessel_agent_protocol::agent::CpuStats as AgentCpuStats;

    use super::*;

    #[test]
    fn create_container_names_the_rootfs_in_the_share() {
        let req = create_container_request(&ContainerCreate {
            id: "c1".into(),
            sandbox_id: "pod1".into(),
            spec: b"{}".to_vec(),
            rootfs: PathBuf::from("c1/rootfs"),
            terminal: true,
        });
        assert_eq!(req.container_id, "c1");
        assert_eq!(req.sandbox_id, "pod1");
        assert_eq!(req.oci_spec, b"{}");
        assert_eq!(req.rootfs_path, "c1/rootfs");
        assert!(req.terminal);
    }

    #[test]
    fn stats_keep_which_groups_the_guest_reported() {
        let mut resp = StatsContainerResponse::new();
        let mut cpu = AgentCpuStats::new();
        cpu.usage_total_ns = 5_000;
        cpu.throttled_periods = 2;
        resp.cpu = MessageField::some(cpu);
        let stats = container_stats(&resp);
        let cpu = stats.cpu.expect("cpu was reported");
        assert_eq!((cpu.usage_total_ns, cpu.throttled_periods), (5_000, 2));
        assert!(stats.memory.is_none() && stats.pids.is_none() && stats.io.is_none());
    }
}

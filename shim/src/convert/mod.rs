//! Where the shim's domain types (`crate::domain`) meet the protobufs on
//! either side: the only module that knows both containerd's (Task API
//! requests and responses, events, cgroup metrics) and the guest agent's.
//! The service and the task verbs speak domain types, through this.
//!
//! - `task.rs`: Task API requests into domain calls, domain answers into
//!   Task API responses.
//! - `event.rs`: [`TaskEvent`](crate::domain::TaskEvent)s into containerd's
//!   events.
//! - `metrics.rs`: a container's stats into containerd's cgroup v2 metrics.
//! - `agent.rs`: domain requests into the agent's, the agent's answers into
//!   domain values.

mod agent;
mod event;
mod metrics;
mod task;

use std::time::{SystemTime, UNIX_EPOCH};

use containerd_shim::api::Status;
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;

use crate::domain::ProcessStatus;

pub use self::agent::{container_stats, create_container_request, exit_status, guest_pids};
pub use self::event::event;
pub use self::task::{
    connect_response, create_response, create_task, delete_response, empty, exec_process,
    pids_response, start_response, state_response, stats_response, update_resources, wait_response,
};

/// What cannot be turned into a message.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("encoding the container's cgroup metrics")]
    EncodeMetrics(#[source] containerd_shim::protos::protobuf::Error),
}

fn timestamp(t: SystemTime) -> Timestamp {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let mut ts = Timestamp::new();
    ts.seconds = since.as_secs() as i64;
    ts.nanos = since.subsec_nanos() as i32;
    ts
}

fn status(s: ProcessStatus) -> Status {
    match s {
        ProcessStatus::Created => Status::CREATED,
        ProcessStatus::Running => Status::RUNNING,
        ProcessStatus::Paused => Status::PAUSED,
        ProcessStatus::Stopped => Status::STOPPED,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_one_to_one() {
        assert_eq!(status(ProcessStatus::Created), Status::CREATED);
        assert_eq!(status(ProcessStatus::Stopped), Status::STOPPED);
    }

    #[test]
    fn timestamps_keep_the_nanoseconds() {
        let ts = timestamp(UNIX_EPOCH + std::time::Duration::from_millis(1500));
        assert_eq!((ts.seconds, ts.nanos), (1, 500_000_000));
    }
}

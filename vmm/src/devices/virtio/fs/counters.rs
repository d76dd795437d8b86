//! What the virtio-fs device has done, for logs and tests.

/// Counts of the fs worker; guest mistakes are counted, never fatal.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FsCounters {
    /// Requests fuse-backend-rs answered (an error reply included).
    pub requests: u64,
    /// Requests the policy refused with an error reply.
    pub refused: u64,
    /// Requests fuse-backend-rs could not decode or answer; they got an
    /// `EINVAL` reply (or none, for FORGET and its kin).
    pub failed_requests: u64,
    /// Chains returned with length 0: buffers outside guest memory, no
    /// FUSE header, or no room for a reply.
    pub bad_chains: u64,
    /// Failures of the event loop or of returning buffers.
    pub event_failures: u64,
}

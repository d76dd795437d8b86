//! What the vsock device has done, for logs and tests.

/// Counts of what the device has done.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct VsockCounters {
    /// Transmit chains taken from the guest.
    pub tx_chains: u64,
    /// Valid packets among them.
    pub tx_packets: u64,
    /// Guest payload bytes accepted.
    pub tx_bytes: u64,
    /// Transmit chains rejected (bad header, descriptors or memory).
    pub bad_packets: u64,
    /// Packets put in receive buffers.
    pub rx_packets: u64,
    /// Payload bytes sent to the guest.
    pub rx_bytes: u64,
    /// Receive chains returned empty: read-only, outside memory or too small.
    pub bad_rx_buffers: u64,
    /// RST packets queued for the guest.
    pub rst_sent: u64,
    /// Connections established, either way.
    pub connections: u64,
    /// Guest connects to a host socket that failed, and host `CONNECT`s the
    /// guest refused.
    pub connect_failures: u64,
    /// Host connects the guest did not answer in time, and winding-down
    /// connections ([`CLOSE_TIMEOUT`](super::muxer::CLOSE_TIMEOUT), [`HALF_CLOSED_TIMEOUT`](super::muxer::HALF_CLOSED_TIMEOUT)) reset idle.
    pub timeouts: u64,
    /// Host streams closed for a bad `CONNECT` line.
    pub bad_connect_lines: u64,
    /// Errors reading or writing host streams.
    pub host_errors: u64,
    /// Control packets dropped because too many were waiting.
    pub dropped_ctrl: u64,
    /// Failures of the event loop, the queues or the interrupt.
    pub event_failures: u64,
}

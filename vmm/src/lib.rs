//! vessel-vmm: the KVM microVM monitor that runs one pod.
//!
//! The crate is split by concern: [`config`] validates what the user asked
//! for, [`memory`] lays out guest RAM, [`boot`] loads the kernel and writes the
//! boot structures, [`cpu`] configures vCPUs, [`devices`] emulates the legacy
//! port-I/O devices and the virtio-mmio ones, and [`vm`] ties them together
//! and runs the guest; [`cpu::control`] pauses, resumes and stops its vCPUs,
//! [`api`] serves that (and snapshots and hot mounts) on the API socket,
//! [`snapshot`] writes a paused VM to files and restores it from them, and
//! [`check`] tells whether this host can run Vessel.
//!
//! Whoever starts a vessel-vmm does it through the `vessel-vmm-client`
//! crate (`vmm/client/`), which owns the launch specs, the API's wire
//! types (this crate's [`api`] reads and writes the same ones) and the
//! host [`profile`].

pub mod api;
pub mod boot;
pub mod check;
pub mod config;
pub mod cpu;
pub mod devices;
pub mod jail;
pub mod log;
pub mod memory;
pub mod privileges;
pub mod snapshot;
pub mod uds;
pub mod vm;

/// The host profile lives in the client crate, which starters share.
pub use vessel_vmm_client::profile;

/// An error and its sources on one line, as `main` prints them.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        line.push_str(": ");
        line.push_str(&s.to_string());
        source = s.source();
    }
    line
}

//! vessel-vmm: the KVM microVM monitor that runs one pod.
//!
//! The crate is split by concern: [`config`] validates what the user asked
//! for, [`memory`] lays out guest RAM, [`boot`] loads the kernel and writes the
//! boot structures, [`cpu`] configures vCPUs, [`devices`] emulates the legacy
//! port-I/O devices, and [`vm`] ties them together and runs the guest;
//! [`snapshot`] writes a paused VM to files and restores it from them, and

pub mod api;
pub mod boot;
pub mod check;
pub mod config;
pub mod control;
pub mod cpu;
pub mod devices;
pub mod memory;
pub mod profile;
pub mod snapshot;
pub mod vm;

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

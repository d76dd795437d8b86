//! vessel-vmm: the KVM microVM monitor that runs one pod.
//!
//! The crate is split by concern: [`config`] validates what the user asked
//! for, [`memory`] lays out guest RAM, [`boot`] loads the kernel and writes the
//! boot structures, [`cpu`] configures vCPUs, [`devices`] emulates the legacy
//! port-I/O devices, and [`vm`] ties them together and runs the guest.

pub mod api;
pub mod boot;
pub mod config;
pub mod control;
pub mod cpu;
pub mod devices;
pub mod memory;
pub mod profile;
pub mod vm;

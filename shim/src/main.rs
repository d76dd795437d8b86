//! `containerd-shim-vessel-v2`: the containerd runtime v2 shim
//! (`io.containerd.vessel.v2`). One shim per pod: it boots the pod's
//! microVM, serves containerd's Task API by calling the guest agent, and
//! removes everything it made when the last container goes.

mod cause;
mod config;
mod convert;
mod domain;
mod error;
mod mounts;
mod service;
mod shim;
mod spec;
mod stdio;
mod task;
mod vm;

use containerd_shim::{asynchronous::run, Config};

/// The runtime name containerd knows this shim by.
const RUNTIME_ID: &str = "io.containerd.vessel.v2";

#[tokio::main]
async fn main() {
    let config = Config {
        // The shim waits on its VMM itself: the crate's reaper would steal
        // the VMM's exit status.
        no_reaper: true,
        no_sub_reaper: true,
        ..Config::default()
    };
    run::<shim::VesselShim>(RUNTIME_ID, Some(config)).await;
}

//! `vessel-vmm`: the microVM monitor binary.
//!
//! `vessel-vmm [--config FILE] --kernel PATH --initrd PATH [--cmdline EXTRA]
//! [--vcpus N] [--memory-mib N] [--serial stdout|PATH] [--api-sock PATH]`
//!
//! Flags and the JSON config file are parsed and checked by
//! [`vessel_vmm::config::from_args`]; this file only sets the process up.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result};
use vessel_vmm::config::{self, USAGE};
use vessel_vmm::cpu::vcpu::VmExit;
use vessel_vmm::profile::HostProfile;
use vessel_vmm::vm::Vm;

fn run(args: &[String]) -> Result<VmExit> {
    let profile = HostProfile::detect()?;
    let config = config::from_args(args, profile)?;
    tracing::info!(cmdline = %config.cmdline, "starting VM");
    let vm = Vm::new(&config, profile).context("cannot build the VM")?;
    Ok(vm.run()?)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let code = match run(&args) {
        Ok(VmExit::Reset | VmExit::Shutdown | VmExit::AllHalted | VmExit::Stopped) => {
            ExitCode::SUCCESS
        }
        Ok(VmExit::Error(msg)) => {
            eprintln!("vessel-vmm: {msg}");
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("vessel-vmm: {err:#}");
            ExitCode::FAILURE
        }
    };
    let _ = std::io::stdout().flush();
    code
}

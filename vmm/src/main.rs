//! `vessel-vmm`: the microVM monitor binary.
//!
//! `vessel-vmm --kernel PATH --initrd PATH [--cmdline EXTRA] [--vcpus N]
//! [--memory-mib N] [--serial stdout|PATH]`

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use vessel_vmm::config::{check_memory, check_vcpus, SerialOutput, VmConfig};
use vessel_vmm::cpu::vcpu::VmExit;
use vessel_vmm::profile::HostProfile;
use vessel_vmm::vm::Vm;

const USAGE: &str = "usage: vessel-vmm --kernel PATH --initrd PATH [--cmdline EXTRA] \
[--vcpus N] [--memory-mib N] [--serial stdout|PATH]";

fn parse_args(args: &[String], profile: HostProfile) -> Result<VmConfig> {
    let mut kernel = None;
    let mut initrd = None;
    let mut extra = None;
    let mut vcpus = 1u64;
    let mut memory = 128u64;
    let mut serial = SerialOutput::Stdout;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let value = it
            .next()
            .ok_or_else(|| anyhow!("{flag}: missing value\n{USAGE}"))?;
        let number = || -> Result<u64> {
            value
                .parse()
                .map_err(|_| anyhow!("{flag}: {value:?} is not a number"))
        };
        match flag.as_str() {
            "--kernel" => kernel = Some(PathBuf::from(value)),
            "--initrd" => initrd = Some(PathBuf::from(value)),
            "--cmdline" => extra = Some(value.clone()),
            "--vcpus" => vcpus = number()?,
            "--memory-mib" => memory = number()?,
            "--serial" => serial = SerialOutput::parse(value),
            other => bail!("unknown option {other}\n{USAGE}"),
        }
    }
    let mut cmdline = profile.default_cmdline();
    cmdline.push_str(" quiet");
    if let Some(extra) = extra.filter(|e| !e.trim().is_empty()) {
        cmdline.push(' ');
        cmdline.push_str(extra.trim());
    }
    let config = VmConfig {
        kernel: kernel.ok_or_else(|| anyhow!("--kernel: missing\n{USAGE}"))?,
        initrd: initrd.ok_or_else(|| anyhow!("--initrd: missing\n{USAGE}"))?,
        cmdline,
        vcpus: check_vcpus(vcpus)?,
        memory_mib: check_memory(memory)?,
        serial,
    };
    config.validate()?;
    Ok(config)
}

fn run() -> Result<VmExit> {
    let profile = HostProfile::detect()?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = parse_args(&args, profile)?;
    tracing::info!(cmdline = %config.cmdline, "starting VM");
    let vm = Vm::new(&config, profile).context("cannot build the VM")?;
    Ok(vm.run()?)
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let code = match run() {
        Ok(VmExit::Reset | VmExit::Shutdown | VmExit::AllHalted) => ExitCode::SUCCESS,
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

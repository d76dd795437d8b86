//! Running a guest under a VMM with a timeout, capturing the serial console.
//! What to boot is a `vessel_vmm_client::BootSpec` (for QEMU too: its
//! kernel, initramfs, size and command line); the VMM process is the
//! client's `VmmProcess`, killed if the run is dropped early.

use std::io::{BufRead, BufReader};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use vessel_vmm_client::{BootSpec, HostProfile, JailSpec, Launch, VmmCommand, VmmProcess};

use crate::build::vessel_vmm;
use crate::report::START_MARKER;

/// Boot to a listening agent takes 30-40 s on an emulated-CPL0 host.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

/// QEMU's microvm does not announce virtio-mmio devices on the command line
/// of a PVH-booted vmlinux. With `acpi=off` (our guest has no ACPI, and with
/// ACPI QEMU moves virtio IRQs to a second IOAPIC the guest cannot find),
/// QEMU 7.2 has 8 transports of 512 bytes from 0xfeb00000 with IRQs from 5,
/// and fills them from the last: the one device we add sits in transport 7.
const QEMU_VIRTIO_RNG_ARG: &str = "virtio_mmio.device=512@0xfeb00e00:12";

/// Which VMM runs the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runner {
    /// `qemu-system-x86_64 -M microvm`: the reference the benchmarks compare against.
    QemuMicrovm,
    /// Our own `vessel-vmm`.
    VesselVmm,
    /// `vessel-vmm --jail off`: the benchmarks' measure of the jail's cost.
    VesselVmmUnjailed,
}

/// What a finished run left.
#[derive(Debug)]
pub struct GuestOutput {
    pub status: ExitStatus,
    /// The serial console (the VMM's stdout).
    pub console: String,
    /// The VMM's own stderr.
    pub stderr: String,
    /// From spawning the VMM to the test init's start marker.
    pub to_init_marker: Option<Duration>,
    pub elapsed: Duration,
}

impl Runner {
    /// The command that boots `spec` on this host.
    pub fn command(self, spec: &BootSpec, profile: HostProfile) -> Result<Command> {
        Ok(match self {
            Runner::QemuMicrovm => {
                let cmdline = format!(
                    "{} quiet {QEMU_VIRTIO_RNG_ARG} {}",
                    profile.default_cmdline(),
                    spec.cmdline
                );
                let mut cmd = Command::new("qemu-system-x86_64");
                cmd.args([
                    "-M",
                    "microvm,acpi=off",
                    "-enable-kvm",
                    "-cpu",
                    &profile.qemu_cpu(),
                ])
                .args([
                    "-m",
                    &spec.memory_mib.to_string(),
                    "-smp",
                    &spec.vcpus.to_string(),
                ])
                .args([
                    "-nodefaults",
                    "-no-user-config",
                    "-nographic",
                    "-serial",
                    "stdio",
                ])
                // i8042 carries the guest's reboot (reboot=k); -no-reboot
                // turns it into QEMU's exit with status 0.
                .args(["-device", "i8042", "-no-reboot"])
                // The same virtio devices vessel-vmm gives every guest.
                .args(["-device", "virtio-rng-device"])
                .arg("-kernel")
                .arg(&spec.kernel)
                .arg("-initrd")
                .arg(&spec.initrd)
                .args(["-append", cmdline.trim_end()]);
                cmd
            }
            // vessel-vmm adds the profile's default command line itself.
            Runner::VesselVmm => {
                VmmCommand::new(vessel_vmm()?).command(&Launch::Boot(spec.clone()))
            }
            Runner::VesselVmmUnjailed => VmmCommand::new(vessel_vmm()?)
                .with_jail(JailSpec {
                    disabled: true,
                    ..JailSpec::default()
                })
                .command(&Launch::Boot(spec.clone())),
        })
    }

    /// Starts the VMM on `spec`.
    pub fn spawn(self, spec: &BootSpec) -> Result<RunningGuest> {
        let mut cmd = self.command(spec, HostProfile::detect()?)?;
        RunningGuest::spawn(&mut cmd)
    }

    /// Boots `spec` and waits for the VMM to exit, at most `timeout`.
    pub fn run(self, spec: &BootSpec, timeout: Duration) -> Result<GuestOutput> {
        self.spawn(spec)?.wait(timeout)
    }
}

/// A VMM process with threads draining its stdout and stderr. Dropping it
/// kills the process, so a failing test leaves no VM behind.
pub struct RunningGuest {
    process: VmmProcess,
    start: Instant,
    console: Arc<Mutex<(String, Option<Duration>)>>,
    readers: Vec<JoinHandle<()>>,
    stderr: Arc<Mutex<String>>,
}

impl RunningGuest {
    /// Spawns `cmd` with piped output.
    pub fn spawn(cmd: &mut Command) -> Result<Self> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let start = Instant::now();
        let mut process = VmmProcess::spawn(cmd)?;
        let console = Arc::new(Mutex::new((String::new(), None)));
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut readers = Vec::new();
        if let Some(out) = process.take_stdout() {
            let console = Arc::clone(&console);
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(out).split(b'\n').map_while(Result::ok) {
                    let line = String::from_utf8_lossy(&line);
                    let mut guard = console.lock().unwrap_or_else(|p| p.into_inner());
                    if guard.1.is_none() && line.contains(START_MARKER) {
                        guard.1 = Some(start.elapsed());
                    }
                    guard.0.push_str(&line);
                    guard.0.push('\n');
                }
            }));
        }
        if let Some(err) = process.take_stderr() {
            let stderr = Arc::clone(&stderr);
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    let mut guard = stderr.lock().unwrap_or_else(|p| p.into_inner());
                    guard.push_str(&line);
                    guard.push('\n');
                }
            }));
        }
        Ok(Self {
            process,
            start,
            console,
            readers,
            stderr,
        })
    }

    /// The VMM's process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The VMM process, to wait for, kill or reach its agent.
    pub fn process(&mut self) -> &mut VmmProcess {
        &mut self.process
    }

    /// The console so far.
    pub fn console(&self) -> String {
        self.console
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clone()
    }

    /// The VMM's own log (its stderr) so far.
    pub fn vmm_log(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Time from spawn to the test init's start marker, once it appeared.
    pub fn to_init_marker(&self) -> Option<Duration> {
        self.console.lock().unwrap_or_else(|p| p.into_inner()).1
    }

    /// The VMM's exit status, if it has exited.
    pub fn exited(&mut self) -> Result<Option<ExitStatus>> {
        Ok(self.process.try_wait()?)
    }

    /// Waits until the console shows `text`, at most `timeout`.
    pub fn wait_for_console(&mut self, text: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while !self.console().contains(text) {
            if let Some(status) = self.exited()? {
                bail!(
                    "the VMM exited with {status} before {text:?}:\n{}",
                    self.console()
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "no {text:?} on the console within {timeout:?}:\n{}",
                    self.console()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Waits for the VMM to exit, at most `timeout` from now, then kills it.
    pub fn wait(mut self, timeout: Duration) -> Result<GuestOutput> {
        match self.process.wait_timeout(timeout)? {
            Some(status) => {
                let (console, to_init_marker, stderr) = self.collect();
                let elapsed = self.start.elapsed();
                Ok(GuestOutput {
                    status,
                    console,
                    stderr,
                    to_init_marker,
                    elapsed,
                })
            }
            None => {
                let _ = self.process.kill();
                let (console, _, stderr) = self.collect();
                let tail: Vec<&str> = console.lines().rev().take(20).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                bail!(
                    "the guest did not finish within {timeout:?}; console tail:\n{}\nstderr:\n{stderr}",
                    tail.join("\n")
                );
            }
        }
    }

    fn collect(&mut self) -> (String, Option<Duration>, String) {
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        let console = self
            .console
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let stderr = self
            .stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        (console.0, console.1, stderr)
    }
}

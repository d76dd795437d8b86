//! A private containerd for tests and the demo: its own config, root, state
//! and sockets under a temporary directory, with `io.containerd.vessel.v2`
//! on its `PATH` and a vessel config naming this tree's kernel, initramfs
//! and VMM. Dropping it stops containerd and every shim and VMM it started,
//! and removes the directory with every mount under it.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use tempfile::TempDir;
use vessel_vmm_client::HostProfile;

use crate::build::{agent_initramfs, cache_dir, guest_kernel, host_binary, vessel_vmm};
use crate::image::{demo_image_archive, DEMO_IMAGE};

/// The containerd namespace the harness uses.
pub const NAMESPACE: &str = "vessel";
/// The runtime under test.
pub const RUNTIME: &str = "io.containerd.vessel.v2";

/// A running private containerd.
pub struct Containerd {
    child: Child,
    address: PathBuf,
    dir: TempDir,
}

impl Containerd {
    /// Builds the shim and starts containerd; `ctr version` answers when
    /// this returns.
    pub fn start() -> Result<Containerd> {
        let shim = host_binary("containerd-shim-vessel-v2", "containerd-shim-vessel-v2")?;
        let vmm = vessel_vmm()?;
        let kernel = guest_kernel()?;
        let initrd = agent_initramfs()?;
        let dir = tempfile::Builder::new()
            .prefix("vessel-ctrd-")
            .tempdir_in("/tmp")?;
        let root = dir.path();
        let address = root.join("containerd.sock");
        let vessel_config = root.join("vessel.toml");
        std::fs::write(
            &vessel_config,
            format!(
                "vmm = \"{}\"\nkernel = \"{}\"\ninitrd = \"{}\"\nvcpus = {}\nmemory_mib = 512\n\
                 state_dir = \"{}\"\nenable_annotations = [\"memory_mib\"]\n\
                 template_dir = \"{}\"\n\
                 # Tests only: shim_ctr makes a VMM break its seccomp policy.\n\
                 vmm_debug_api = true\n",
                vmm.display(),
                kernel.display(),
                initrd.display(),
                HostProfile::detect()?.workload_vcpus(2),
                root.join("vessel").display(),
                cache_dir().join("templates").display(),
            ),
        )?;
        let config = root.join("containerd.toml");
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{}\"\nstate = \"{}\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = \"{}\"\n[ttrpc]\n  address = \"{}.ttrpc\"\n\
                 [debug]\n  level = \"debug\"\n",
                root.join("root").display(),
                root.join("state").display(),
                address.display(),
                address.display(),
            ),
        )?;
        let path = format!(
            "{}:{}",
            shim.parent().unwrap_or(Path::new("/")).display(),
            std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into())
        );
        let log = File::create(root.join("containerd.log"))?;
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .env("PATH", path)
            .env("VESSEL_CONFIG", &vessel_config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start containerd (Debian package containerd)")?;
        let containerd = Containerd {
            child,
            address,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if containerd.ctr(&["version"]).output()?.status.success() {
                return Ok(containerd);
            }
            ensure!(
                Instant::now() < deadline,
                "containerd did not answer within 60 s:\n{}",
                containerd.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `ctr` against this containerd, in [`NAMESPACE`], ended after 300 s.
    pub fn ctr(&self, args: &[&str]) -> Command {
        // No ctr call may hang a test: coreutils' timeout ends it.
        let mut cmd = Command::new("timeout");
        cmd.args(["300", "ctr", "--address"])
            .arg(&self.address)
            .args(["--namespace", NAMESPACE])
            .args(args);
        cmd
    }

    /// Runs `ctr args` to its end; fails with everything it said unless it
    /// exits 0.
    pub fn ctr_ok(&self, args: &[&str]) -> Result<Output> {
        let out = self.ctr(args).output()?;
        if !out.status.success() {
            bail!(
                "ctr {args:?} failed with {}: {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(out)
    }

    /// `ctr run -d` of `image` as task `id` with the vessel runtime,
    /// running `cmd`.
    pub fn run_detached(&self, image: &str, id: &str, cmd: &[&str]) -> Result<()> {
        let mut args = vec!["run", "-d", "--runtime", RUNTIME, image, id];
        args.extend_from_slice(cmd);
        self.ctr_ok(&args).map(|_| ())
    }

    /// Imports the bundled demo image; its name.
    pub fn import_demo_image(&self) -> Result<&'static str> {
        let archive = demo_image_archive()?;
        let archive = archive.to_string_lossy().into_owned();
        self.ctr_ok(&[
            "images",
            "import",
            "--base-name",
            "docker.io/vessel/demo",
            &archive,
        ])?;
        let listed = self.ctr_ok(&["images", "ls", "-q"])?;
        ensure!(
            String::from_utf8_lossy(&listed.stdout)
                .lines()
                .any(|l| l == DEMO_IMAGE),
            "the demo image did not import as {DEMO_IMAGE}: {}",
            String::from_utf8_lossy(&listed.stdout)
        );
        Ok(DEMO_IMAGE)
    }

    /// The sandboxes' state directory (the vessel config's `state_dir`).
    pub fn vessel_state(&self) -> PathBuf {
        self.dir.path().join("vessel")
    }

    /// The temporary directory everything lives in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// containerd's log, with the shims' (they log through it).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// How many container processes died of a fault of their own: exit
    /// status 128 + SIGILL, SIGBUS, SIGFPE or SIGSEGV in the shims' "process
    /// exited" lines.
    pub fn crashes(&self) -> usize {
        let faults = ["status=132", "status=135", "status=136", "status=139"];
        self.log()
            .lines()
            .filter(|l| l.contains("process exited"))
            .filter(|l| {
                l.split_whitespace()
                    .any(|w| faults.contains(&w.trim_matches('"')))
            })
            .count()
    }

    /// Pids of live processes whose command line mentions this containerd's
    /// directory: its shims and their VMMs.
    pub fn leftover_processes(&self) -> Vec<(u32, String)> {
        let needle = self.dir.path().to_string_lossy().into_owned();
        let mut found = Vec::new();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return found;
        };
        for entry in entries.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if pid == self.child.id() {
                continue;
            }
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            let client = cmdline.starts_with("ctr ") || cmdline.starts_with("timeout ");
            if cmdline.contains(&needle) && !client {
                found.push((pid, cmdline));
            }
        }
        found
    }

    /// Mount points under this containerd's directory.
    pub fn leftover_mounts(&self) -> Vec<String> {
        let needle = self.dir.path().to_string_lossy().into_owned();
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&needle))
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child; no memory is passed.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        for (pid, _) in self.leftover_processes() {
            // SAFETY: as above, on a process this containerd started.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(200));
        let mut mounts = self.leftover_mounts();
        mounts.reverse();
        for mount in mounts {
            if let Ok(target) = std::ffi::CString::new(mount) {
                // SAFETY: a NUL-terminated path that outlives the call.
                unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
            }
        }
    }
}

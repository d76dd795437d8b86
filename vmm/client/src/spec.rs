//! What to start: a boot ([`BootSpec`]) or a restore from a snapshot
//! ([`RestoreSpec`]), each with the host endpoints of the VM
//! ([`Endpoints`]). A spec is the one place that turns into vessel-vmm's
//! flags: [`BootSpec::args`], [`RestoreSpec::args`], and [`VmmCommand`]
//! for the `Command` around them. A new VMM flag is a field here and a
//! line in `args`; everyone who starts a VMM gets it.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::jail::JailSpec;

/// Where a VM meets the host: its console, its API socket and the unix
/// socket of its hybrid vsock device. Each VM, booted or restored, has its
/// own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Endpoints {
    /// `--serial`: the guest console's file; `None` is the VMM's stdout.
    pub serial: Option<PathBuf>,
    /// `--serial-max-bytes`: the most the console file may hold (the VMM
    /// starts it again past that); `None` is no cap.
    pub serial_max_bytes: Option<u64>,
    /// `--log-max-bytes`: the most the VMM's log may hold where its stderr
    /// is a file (past that the file starts again); `None` is the VMM's
    /// default, 1 MiB.
    pub log_max_bytes: Option<u64>,
    /// `--api-sock`: the API socket (pause, resume, snapshot, shutdown).
    pub api_sock: Option<PathBuf>,
    /// `--vsock-uds`: the host side of the guest's vsock; no vsock device
    /// without it.
    pub vsock_uds: Option<PathBuf>,
}

impl Endpoints {
    /// The console, the API socket and vsock as `console.log`, `api.sock`
    /// and `vsock.sock` in `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        Endpoints {
            serial: Some(dir.join("console.log")),
            serial_max_bytes: None,
            log_max_bytes: None,
            api_sock: Some(dir.join("api.sock")),
            vsock_uds: Some(dir.join("vsock.sock")),
        }
    }

    fn push_args(&self, args: &mut Args) {
        args.opt("--serial", self.serial.as_deref());
        if let Some(max) = self.serial_max_bytes {
            args.pair("--serial-max-bytes", max.to_string().as_ref());
        }
        if let Some(max) = self.log_max_bytes {
            args.pair("--log-max-bytes", max.to_string().as_ref());
        }
        args.opt("--api-sock", self.api_sock.as_deref());
        args.opt("--vsock-uds", self.vsock_uds.as_deref());
    }
}

/// A virtio-fs share: a host directory the guest mounts by its tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsSpec {
    /// `--fs-dir`.
    pub dir: PathBuf,
    /// `--fs-tag`.
    pub tag: String,
}

impl FsSpec {
    /// `dir` under `tag` (a pod's share has the guest contract's
    /// `vessel_agent_protocol::SHARE_TAG`).
    pub fn new(dir: impl Into<PathBuf>, tag: &str) -> Self {
        FsSpec {
            dir: dir.into(),
            tag: tag.to_owned(),
        }
    }
}

/// A VM to boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootSpec {
    /// `--kernel`: an uncompressed `vmlinux`.
    pub kernel: PathBuf,
    /// `--initrd`.
    pub initrd: PathBuf,
    /// `--vcpus`.
    pub vcpus: u8,
    /// `--memory-mib`.
    pub memory_mib: u32,
    /// `--cmdline`: kernel arguments after the ones vessel-vmm gives every
    /// guest (the host profile's default command line and `quiet`).
    pub cmdline: String,
    /// `--fs-dir` and `--fs-tag`.
    pub fs: Option<FsSpec>,
    pub endpoints: Endpoints,
}

impl BootSpec {
    /// `kernel` and `initrd` with 1 vCPU, 128 MiB, no extra arguments, no
    /// share and the console on the VMM's stdout.
    pub fn new(kernel: impl Into<PathBuf>, initrd: impl Into<PathBuf>) -> Self {
        BootSpec {
            kernel: kernel.into(),
            initrd: initrd.into(),
            vcpus: 1,
            memory_mib: 128,
            cmdline: String::new(),
            fs: None,
            endpoints: Endpoints::default(),
        }
    }

    /// vessel-vmm's arguments for this boot.
    pub fn args(&self) -> Vec<OsString> {
        let mut args = Args::default();
        args.pair("--kernel", self.kernel.as_os_str());
        args.pair("--initrd", self.initrd.as_os_str());
        args.pair("--vcpus", self.vcpus.to_string().as_ref());
        args.pair("--memory-mib", self.memory_mib.to_string().as_ref());
        let cmdline = self.cmdline.trim();
        if !cmdline.is_empty() {
            args.pair("--cmdline", cmdline.as_ref());
        }
        self.endpoints.push_args(&mut args);
        if let Some(fs) = &self.fs {
            args.pair("--fs-dir", fs.dir.as_os_str());
            args.pair("--fs-tag", fs.tag.as_ref());
        }
        args.0
    }

    /// What decides the guest besides its kernel, initramfs, vCPUs and
    /// memory: its command line and share, as text (a template's key
    /// covers it). Host paths and endpoints are left out: every VM has its
    /// own (and a template's always has all of them).
    pub fn recipe(&self) -> String {
        let mut recipe = format!("cmdline={}", self.cmdline.trim());
        if let Some(fs) = &self.fs {
            recipe.push_str(" fs_tag=");
            recipe.push_str(&fs.tag);
        }
        recipe
    }
}

/// A VM to restore from a snapshot (a template's, say). The guest, its
/// settings and the share's tag come from the snapshot; the endpoints and
/// the share's directory are this VM's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreSpec {
    /// `--restore-state`.
    pub state: PathBuf,
    /// `--restore-memory`, mapped copy-on-write.
    pub memory: PathBuf,
    /// `--fs-dir`: the directory of the snapshot's (never mounted) share.
    pub fs_dir: Option<PathBuf>,
    pub endpoints: Endpoints,
}

impl RestoreSpec {
    /// A restore of `state` and `memory` with no endpoints and no share.
    pub fn new(state: impl Into<PathBuf>, memory: impl Into<PathBuf>) -> Self {
        RestoreSpec {
            state: state.into(),
            memory: memory.into(),
            fs_dir: None,
            endpoints: Endpoints::default(),
        }
    }

    /// vessel-vmm's arguments for this restore.
    pub fn args(&self) -> Vec<OsString> {
        let mut args = Args::default();
        args.pair("--restore-state", self.state.as_os_str());
        args.pair("--restore-memory", self.memory.as_os_str());
        self.endpoints.push_args(&mut args);
        args.opt("--fs-dir", self.fs_dir.as_deref());
        args.0
    }
}

/// A boot or a restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Launch {
    Boot(BootSpec),
    Restore(RestoreSpec),
}

impl Launch {
    pub fn args(&self) -> Vec<OsString> {
        match self {
            Launch::Boot(spec) => spec.args(),
            Launch::Restore(spec) => spec.args(),
        }
    }

    pub fn endpoints(&self) -> &Endpoints {
        match self {
            Launch::Boot(spec) => &spec.endpoints,
            Launch::Restore(spec) => &spec.endpoints,
        }
    }
}

/// The vessel-vmm binary, and the `Command`s that start it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmmCommand {
    binary: PathBuf,
    jail: JailSpec,
}

impl VmmCommand {
    pub fn new(binary: impl Into<PathBuf>) -> Self {
        VmmCommand {
            binary: binary.into(),
            jail: JailSpec::default(),
        }
    }

    /// The same binary, jailed as `jail` says (the default is the whole
    /// jail).
    pub fn with_jail(mut self, jail: JailSpec) -> Self {
        self.jail = jail;
        self
    }

    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// The binary as a path to read (for a template's key): a bare name is
    /// looked up on `PATH`, as `Command` would.
    pub fn resolved(&self) -> PathBuf {
        let bin = &self.binary;
        if bin.components().count() != 1 || bin.is_absolute() {
            return bin.clone();
        }
        std::env::var_os("PATH")
            .iter()
            .flat_map(std::env::split_paths)
            .map(|dir| dir.join(bin))
            .find(|path| path.is_file())
            .unwrap_or_else(|| bin.clone())
    }

    /// The command that starts `launch`, with stdin closed; stdout (the
    /// console, without `--serial`) and stderr (the VMM's log) are the
    /// caller's to set.
    pub fn command(&self, launch: &Launch) -> Command {
        let mut command = Command::new(&self.binary);
        command
            .args(launch.args())
            .args(self.jail.args())
            .stdin(Stdio::null());
        command
    }
}

/// Arguments under construction.
#[derive(Default)]
struct Args(Vec<OsString>);

impl Args {
    fn pair(&mut self, flag: &str, value: &OsStr) {
        self.0.push(flag.into());
        self.0.push(value.to_owned());
    }

    fn opt(&mut self, flag: &str, value: Option<&Path>) {
        if let Some(value) = value {
            self.pair(flag, value.as_os_str());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(args: Vec<OsString>) -> String {
        let args: Vec<_> = args.iter().map(|a| a.to_str().unwrap()).collect();
        args.join(" ")
    }

    #[test]
    fn a_boot_names_its_guest_endpoints_and_share() {
        let mut spec = BootSpec::new("/k/vmlinux", "/k/agent.cpio");
        spec.vcpus = 2;
        spec.memory_mib = 256;
        spec.cmdline = " vessel.log=info ".into();
        spec.endpoints = Endpoints::in_dir(Path::new("/s"));
        spec.fs = Some(FsSpec::new("/s/shared", "vessel"));
        assert_eq!(
            text(spec.args()),
            "--kernel /k/vmlinux --initrd /k/agent.cpio --vcpus 2 --memory-mib 256 \
             --cmdline vessel.log=info --serial /s/console.log --api-sock /s/api.sock \
             --vsock-uds /s/vsock.sock --fs-dir /s/shared --fs-tag vessel"
        );
        assert_eq!(spec.recipe(), "cmdline=vessel.log=info fs_tag=vessel");
    }

    #[test]
    fn a_bare_boot_leaves_out_what_it_does_not_have() {
        let spec = BootSpec::new("/k/vmlinux", "/k/init.cpio");
        assert_eq!(
            text(spec.args()),
            "--kernel /k/vmlinux --initrd /k/init.cpio --vcpus 1 --memory-mib 128"
        );
        assert_eq!(spec.recipe(), "cmdline=");
    }

    #[test]
    fn a_restore_gets_its_own_endpoints_and_share() {
        let mut spec = RestoreSpec::new("/t/state", "/t/memory");
        spec.endpoints = Endpoints {
            serial_max_bytes: Some(1 << 20),
            ..Endpoints::in_dir(Path::new("/s"))
        };
        spec.fs_dir = Some("/s/shared".into());
        assert_eq!(
            text(Launch::Restore(spec).args()),
            "--restore-state /t/state --restore-memory /t/memory --serial /s/console.log \
             --serial-max-bytes 1048576 --api-sock /s/api.sock --vsock-uds /s/vsock.sock \
             --fs-dir /s/shared"
        );
    }

    #[test]
    fn the_command_runs_the_binary_with_the_args() {
        let vmm = VmmCommand::new("/bin/vessel-vmm");
        let spec = RestoreSpec::new("/t/state", "/t/memory");
        let command = vmm.command(&Launch::Restore(spec.clone()));
        assert_eq!(command.get_program(), "/bin/vessel-vmm");
        let args: Vec<OsString> = command.get_args().map(OsStr::to_owned).collect();
        assert_eq!(args, spec.args());
    }

    #[test]
    fn a_bare_binary_name_is_found_on_path() {
        assert_eq!(
            VmmCommand::new("/x/vessel-vmm").resolved(),
            Path::new("/x/vessel-vmm")
        );
        let sh = VmmCommand::new("sh").resolved();
        assert!(sh.is_absolute() && sh.ends_with("sh"), "{sh:?}");
        let none = VmmCommand::new("no-such-vmm-binary").resolved();
        assert_eq!(none, Path::new("no-such-vmm-binary"));
    }
}

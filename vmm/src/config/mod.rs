//! The VM configuration and its validation, done before any KVM object exists.
//!
//! A configuration comes from command-line flags, optionally on top of a JSON
//! file (`--config FILE`, see [`file`]); flags override the file's values.

#[cfg(test)]
mod client_tests;
pub mod file;
mod jail;
pub mod restore;
#[cfg(test)]
mod serial_tests;
#[cfg(test)]
mod tests;

use std::fs::File;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

pub use crate::devices::virtio::fs::CacheMode;
pub use file::FileConfig;
pub use jail::{jail, JAIL_FLAGS, MAX_OPEN_FILES, MIN_OPEN_FILES};
pub use restore::{Launch, RestoreConfig};

/// Fewest vCPUs a VM may have.
pub const MIN_VCPUS: u8 = 1;
/// Most vCPUs a VM may have (the guest kernel's `NR_CPUS`).
pub const MAX_VCPUS: u8 = 32;
/// Least guest memory, in MiB.
pub const MIN_MEMORY_MIB: u64 = 64;
/// Most guest memory, in MiB (64 GiB).
pub const MAX_MEMORY_MIB: u64 = 64 * 1024;
/// vCPUs when neither a flag nor the file says.
pub const DEFAULT_VCPUS: u8 = 1;
/// Guest memory in MiB when neither a flag nor the file says.
pub const DEFAULT_MEMORY_MIB: u64 = 128;
/// The guest's vsock CID when neither a flag nor the file says.
pub const DEFAULT_GUEST_CID: u32 = 3;
/// Lowest guest CID (0-2 are the hypervisor, local and host).
pub const MIN_GUEST_CID: u32 = 3;
/// Highest guest CID (`u32::MAX` is `VMADDR_CID_ANY`).
pub const MAX_GUEST_CID: u32 = u32::MAX - 1;

/// The smallest console cap (`--serial-max-bytes`), and log cap
/// (`--log-max-bytes`).
pub const MIN_SERIAL_MAX_BYTES: u64 = 4096;

/// The VMM log's cap when `--log-max-bytes` does not say (the log is capped
/// only where it is a regular file).
pub const DEFAULT_LOG_MAX_BYTES: u64 = 1 << 20;

/// The virtio-fs mount tag when neither a flag nor the file says.
pub const DEFAULT_FS_TAG: &str = "vessel";
/// The longest virtio-fs tag, in bytes.
pub const MAX_FS_TAG_LEN: usize = crate::devices::virtio::fs::device::TAG_LEN;

/// The command-line synopsis.
pub const USAGE: &str = "usage: vessel-vmm [--config FILE] --kernel PATH --initrd PATH \
[--cmdline EXTRA] [--vcpus N] [--memory-mib N] [--serial stdout|PATH [--serial-max-bytes N]] \
[--api-sock PATH] [--log-max-bytes N] \
[--vsock-uds PATH] [--guest-cid N] \
[--fs-dir PATH [--fs-tag TAG] [--fs-cache auto|always|never] [--fs-xattr on|off]] [JAIL]\n   \
or: vessel-vmm [--config FILE] --restore-state FILE --restore-memory FILE \
[--serial stdout|PATH [--serial-max-bytes N]] \
[--api-sock PATH] [--log-max-bytes N] [--vsock-uds PATH] \
[--fs-dir PATH [--fs-tag TAG] [--fs-cache auto|always|never] [--fs-xattr on|off]] [JAIL]\n   \
or: vessel-vmm check   (can this host run Vessel?)\n\
JAIL (debugging only, but the limits): [--jail on|off] [--seccomp kill|log] \
[--rlimit-nofile N] [--rlimit-fsize BYTES] [--debug-api on|off]";

/// Where the guest's serial console goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SerialOutput {
    /// The VMM's standard output.
    Stdout,
    /// A file, created or truncated.
    File(PathBuf),
    /// A file that never holds more than `max_bytes` (`--serial-max-bytes`):
    /// the write that would pass the cap starts it again from empty, with a
    /// line saying so, so it keeps the latest output.
    CappedFile { path: PathBuf, max_bytes: u64 },
}

impl SerialOutput {
    /// Parses `stdout` or a path.
    pub fn parse(s: &str) -> Self {
        if s == "stdout" {
            Self::Stdout
        } else {
            Self::File(PathBuf::from(s))
        }
    }
}

/// The virtio-fs device: a host directory the guest mounts by its tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsConfig {
    /// The shared directory on the host.
    pub dir: PathBuf,
    /// The tag the guest mounts (`mount -t virtiofs TAG DIR`).
    pub tag: String,
    /// How long the guest may cache names, attributes and data.
    pub cache: CacheMode,
    /// Whether extended attributes are passed through.
    pub xattr: bool,
}

/// Everything needed to build and boot one VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmConfig {
    /// Guest kernel: an uncompressed ELF `vmlinux`.
    pub kernel: PathBuf,
    /// Initramfs (cpio, maybe compressed).
    pub initrd: PathBuf,
    /// Full kernel command line.
    pub cmdline: String,
    /// Number of vCPUs.
    pub vcpus: u8,
    /// Guest memory in MiB.
    pub memory_mib: u64,
    /// Serial console destination.
    pub serial: SerialOutput,
    /// Unix socket to serve the control API (pause, resume, shutdown) on.
    pub api_sock: Option<PathBuf>,
    /// Unix socket of the hybrid vsock device; no vsock device without it.
    /// Guest connections to host port P go to `<vsock_uds>_<P>`.
    pub vsock_uds: Option<PathBuf>,
    /// The guest's vsock CID.
    pub guest_cid: u32,
    /// The shared directory; no virtio-fs device without it.
    pub fs: Option<FsConfig>,
}

/// A configuration that cannot be used. Each message is one line naming the
/// bad flag or config-file field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown option {0} (see --help)")]
    UnknownOption(String),
    #[error("{0}: missing value (see --help)")]
    MissingValue(String),
    #[error("{flag}: {value:?} is not a number")]
    NotANumber { flag: &'static str, value: String },
    #[error("{0}: missing; give the flag or the {1:?} key of the config file")]
    MissingField(&'static str, &'static str),
    #[error("config file {}: cannot read", .path.display())]
    ReadConfigFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {}: not valid JSON", .path.display())]
    ParseConfigFile {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("config file {}: the top level must be a JSON object", .path.display())]
    ConfigFileNotObject { path: PathBuf },
    #[error("config file {}: unknown field {key:?}", .path.display())]
    UnknownField { path: PathBuf, key: String },
    #[error("config file {}: {key:?} must be {expected}", .path.display())]
    FieldType {
        path: PathBuf,
        key: &'static str,
        expected: String,
    },
    #[error("--kernel: cannot open {path:?}")]
    OpenKernel {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--kernel: {0:?} is neither an ELF vmlinux nor a bzImage")]
    KernelNotElf(PathBuf),
    #[error("--initrd: cannot open {path:?}")]
    OpenInitrd {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--vcpus: {0} is out of range {MIN_VCPUS}..={MAX_VCPUS}")]
    VcpuCount(u64),
    #[error("--memory-mib: {0} is out of range {MIN_MEMORY_MIB}..={MAX_MEMORY_MIB}")]
    MemorySize(u64),
    #[error("--cmdline: the kernel command line is longer than {0} bytes")]
    CmdlineTooLong(usize),
    #[error("--api-sock: the directory of {0:?} does not exist")]
    ApiSockDir(PathBuf),
    #[error("--api-sock: {0:?} exists and is not a socket")]
    ApiSockNotSocket(PathBuf),
    #[error("--vsock-uds: the directory of {0:?} does not exist")]
    VsockUdsDir(PathBuf),
    #[error("--vsock-uds: {0:?} exists and is not a socket")]
    VsockUdsNotSocket(PathBuf),
    #[error("--guest-cid: {0} is out of range {MIN_GUEST_CID}..={MAX_GUEST_CID}")]
    GuestCid(u64),
    #[error("--fs-dir: {0:?} does not exist")]
    FsDirMissing(PathBuf),
    #[error("--fs-dir: {0:?} is not a directory")]
    FsDirNotDir(PathBuf),
    #[error("--fs-tag: {0:?} must be 1 to {MAX_FS_TAG_LEN} bytes without NUL")]
    FsTag(String),
    #[error("--fs-cache: {0:?} is not auto, always or never")]
    FsCache(String),
    #[error("--fs-xattr: {0:?} is not on or off")]
    FsXattr(String),
    #[error("{0}: needs --fs-dir (or the \"fs_dir\" key of the config file)")]
    FsWithoutDir(&'static str),
    #[error("--serial-max-bytes: {0} is below {MIN_SERIAL_MAX_BYTES}")]
    SerialMaxBytes(u64),
    #[error("--serial-max-bytes: needs --serial PATH (the console on stdout has no cap)")]
    SerialCapWithoutFile,
    #[error("--log-max-bytes: {0} is below {MIN_SERIAL_MAX_BYTES}")]
    LogMaxBytes(u64),
    #[error("{flag}: {value:?} is not {expected}")]
    JailValue {
        flag: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("--rlimit-nofile: {0} is out of range {MIN_OPEN_FILES}..={MAX_OPEN_FILES}")]
    OpenFilesLimit(u64),
    #[error("{0}: not with --restore-state (the snapshot holds the guest and its settings)")]
    NotWithRestore(&'static str),
    #[error("{flag}: cannot open {path:?}")]
    OpenRestoreFile {
        flag: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Checks a vCPU count, returning it as `u8`.
pub fn check_vcpus(n: u64) -> Result<u8, ConfigError> {
    match u8::try_from(n) {
        Ok(v) if (MIN_VCPUS..=MAX_VCPUS).contains(&v) => Ok(v),
        _ => Err(ConfigError::VcpuCount(n)),
    }
}

/// Checks a memory size in MiB.
pub fn check_memory(mib: u64) -> Result<u64, ConfigError> {
    if (MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&mib) {
        Ok(mib)
    } else {
        Err(ConfigError::MemorySize(mib))
    }
}

/// Checks a console cap.
pub fn check_serial_max_bytes(n: u64) -> Result<u64, ConfigError> {
    if n < MIN_SERIAL_MAX_BYTES {
        return Err(ConfigError::SerialMaxBytes(n));
    }
    Ok(n)
}

/// The console's output: `serial` (stdout by default) with its cap, which
/// only a file can have.
pub fn serial_output(
    serial: Option<SerialOutput>,
    max_bytes: Option<u64>,
) -> Result<SerialOutput, ConfigError> {
    match (serial.unwrap_or(SerialOutput::Stdout), max_bytes) {
        (serial, None) => Ok(serial),
        (SerialOutput::File(path), Some(max_bytes)) => {
            Ok(SerialOutput::CappedFile { path, max_bytes })
        }
        (_, Some(_)) => Err(ConfigError::SerialCapWithoutFile),
    }
}

/// Checks a guest CID.
pub fn check_guest_cid(n: u64) -> Result<u32, ConfigError> {
    match u32::try_from(n) {
        Ok(v) if (MIN_GUEST_CID..=MAX_GUEST_CID).contains(&v) => Ok(v),
        _ => Err(ConfigError::GuestCid(n)),
    }
}

/// Checks a virtio-fs tag: 1 to 36 bytes, no NUL.
pub fn check_fs_tag(tag: &str) -> Result<(), ConfigError> {
    crate::devices::virtio::fs::device::check_tag(tag)
        .map_err(|_| ConfigError::FsTag(tag.to_string()))
}

/// Parses `auto`, `always` or `never`.
pub fn parse_fs_cache(value: &str) -> Result<CacheMode, ConfigError> {
    CacheMode::parse(value).ok_or_else(|| ConfigError::FsCache(value.to_string()))
}

/// Parses `on` or `off`.
pub fn parse_fs_xattr(value: &str) -> Result<bool, ConfigError> {
    match value {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(ConfigError::FsXattr(value.to_string())),
    }
}

/// Checks the shared directory: it exists and is a directory.
pub fn check_fs_dir(dir: &Path) -> Result<(), ConfigError> {
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(ConfigError::FsDirNotDir(dir.to_path_buf())),
        Err(_) => Err(ConfigError::FsDirMissing(dir.to_path_buf())),
    }
}

/// What is wrong with a place for a socket the VMM creates.
enum SockPathProblem {
    NoDir,
    NotSocket,
}

fn check_sock_path(path: &Path) -> Result<(), SockPathProblem> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(SockPathProblem::NoDir);
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => Err(SockPathProblem::NotSocket),
        _ => Ok(()),
    }
}

/// Checks where the API socket goes: its directory exists, and nothing but a
/// (stale) socket is in its place.
pub fn check_api_sock(path: &Path) -> Result<(), ConfigError> {
    check_sock_path(path).map_err(|p| match p {
        SockPathProblem::NoDir => ConfigError::ApiSockDir(path.to_path_buf()),
        SockPathProblem::NotSocket => ConfigError::ApiSockNotSocket(path.to_path_buf()),
    })
}

/// Checks where the vsock socket goes, like [`check_api_sock`].
pub fn check_vsock_uds(path: &Path) -> Result<(), ConfigError> {
    check_sock_path(path).map_err(|p| match p {
        SockPathProblem::NoDir => ConfigError::VsockUdsDir(path.to_path_buf()),
        SockPathProblem::NotSocket => ConfigError::VsockUdsNotSocket(path.to_path_buf()),
    })
}

/// True if the file is a kernel image the loader knows.
fn is_kernel(path: &Path) -> Result<bool, std::io::Error> {
    let mut f = File::open(path)?;
    Ok(crate::boot::loader::detect_format(&mut f)?.is_some())
}

/// The full command line: the profile's default, `quiet`, then the extra
/// arguments if any.
pub fn full_cmdline(profile: crate::profile::HostProfile, extra: Option<&str>) -> String {
    let mut cmdline = profile.default_cmdline();
    cmdline.push_str(" quiet");
    if let Some(extra) = extra.map(str::trim).filter(|e| !e.is_empty()) {
        cmdline.push(' ');
        cmdline.push_str(extra);
    }
    cmdline
}

/// `--log-max-bytes N`: the cap of the VMM's log (its stderr, where that
/// is a regular file). Read by `main` before anything logs, so a flag
/// only (the config file is read later); [`from_args`] checks it again.
pub fn log_max_bytes(args: &[String]) -> Result<u64, ConfigError> {
    let Some(at) = args.iter().position(|a| a == "--log-max-bytes") else {
        return Ok(DEFAULT_LOG_MAX_BYTES);
    };
    let value = args
        .get(at + 1)
        .ok_or_else(|| ConfigError::MissingValue("--log-max-bytes".to_owned()))?;
    let n = value.parse::<u64>().map_err(|_| ConfigError::NotANumber {
        flag: "--log-max-bytes",
        value: value.clone(),
    })?;
    check_log_max_bytes(n)
}

/// Checks a log cap.
fn check_log_max_bytes(n: u64) -> Result<u64, ConfigError> {
    if n < MIN_SERIAL_MAX_BYTES {
        return Err(ConfigError::LogMaxBytes(n));
    }
    Ok(n)
}

/// Builds and validates the configuration from the command-line arguments
/// (without the program name): a boot, or a restore from a snapshot. A
/// `--config FILE` is read first; every other flag overrides the file's
/// value, wherever it stands.
pub fn from_args(
    args: &[String],
    profile: crate::profile::HostProfile,
) -> Result<Launch, ConfigError> {
    let mut flags = FileConfig::default();
    let mut config_file = None;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if JAIL_FLAGS.contains(&flag.as_str()) {
            // Taken by `main` before anything runs (jail).
            it.next()
                .ok_or_else(|| ConfigError::MissingValue(flag.clone()))?;
            continue;
        }
        let (name, value) = match flag.as_str() {
            name @ ("--config" | "--kernel" | "--initrd" | "--cmdline" | "--vcpus"
            | "--memory-mib" | "--serial" | "--serial-max-bytes" | "--api-sock"
            | "--vsock-uds" | "--guest-cid" | "--fs-dir" | "--fs-tag" | "--fs-cache"
            | "--fs-xattr" | "--restore-state" | "--restore-memory" | "--log-max-bytes") => {
                let value = it
                    .next()
                    .ok_or_else(|| ConfigError::MissingValue(flag.clone()))?;
                (name, value)
            }
            other => return Err(ConfigError::UnknownOption(other.to_string())),
        };
        let number = |flag: &'static str| {
            value.parse::<u64>().map_err(|_| ConfigError::NotANumber {
                flag,
                value: value.clone(),
            })
        };
        match name {
            "--config" => config_file = Some(PathBuf::from(value)),
            "--kernel" => flags.kernel = Some(PathBuf::from(value)),
            "--initrd" => flags.initrd = Some(PathBuf::from(value)),
            "--cmdline" => flags.cmdline = Some(value.clone()),
            "--vcpus" => flags.vcpus = Some(check_vcpus(number("--vcpus")?)?),
            "--memory-mib" => flags.memory_mib = Some(check_memory(number("--memory-mib")?)?),
            "--serial" => flags.serial = Some(SerialOutput::parse(value)),
            "--serial-max-bytes" => {
                flags.serial_max_bytes =
                    Some(check_serial_max_bytes(number("--serial-max-bytes")?)?)
            }
            "--vsock-uds" => flags.vsock_uds = Some(PathBuf::from(value)),
            "--guest-cid" => flags.guest_cid = Some(check_guest_cid(number("--guest-cid")?)?),
            "--fs-dir" => flags.fs_dir = Some(PathBuf::from(value)),
            "--fs-tag" => {
                check_fs_tag(value)?;
                flags.fs_tag = Some(value.clone());
            }
            "--fs-cache" => flags.fs_cache = Some(parse_fs_cache(value)?),
            "--fs-xattr" => flags.fs_xattr = Some(parse_fs_xattr(value)?),
            "--restore-state" => flags.restore_state = Some(PathBuf::from(value)),
            "--restore-memory" => flags.restore_memory = Some(PathBuf::from(value)),
            // Taken by `main` before the log starts (log_max_bytes).
            "--log-max-bytes" => {
                check_log_max_bytes(number("--log-max-bytes")?)?;
            }
            _ => flags.api_sock = Some(PathBuf::from(value)),
        }
    }
    let base = match config_file {
        Some(path) => FileConfig::read(&path)?,
        None => FileConfig::default(),
    };
    let merged = flags.or(base);
    if merged.restore_state.is_some() || merged.restore_memory.is_some() {
        return restore::config(merged).map(Launch::Restore);
    }
    let fs = fs_config(&merged)?;
    let config = VmConfig {
        kernel: merged
            .kernel
            .ok_or(ConfigError::MissingField("--kernel", "kernel"))?,
        initrd: merged
            .initrd
            .ok_or(ConfigError::MissingField("--initrd", "initrd"))?,
        cmdline: full_cmdline(profile, merged.cmdline.as_deref()),
        vcpus: merged.vcpus.unwrap_or(DEFAULT_VCPUS),
        memory_mib: merged.memory_mib.unwrap_or(DEFAULT_MEMORY_MIB),
        serial: serial_output(merged.serial, merged.serial_max_bytes)?,
        api_sock: merged.api_sock,
        vsock_uds: merged.vsock_uds,
        guest_cid: merged.guest_cid.unwrap_or(DEFAULT_GUEST_CID),
        fs,
    };
    config.validate()?;
    Ok(Launch::Boot(config))
}

/// The virtio-fs settings: none without a directory, and then none of the
/// other fs settings either.
fn fs_config(merged: &FileConfig) -> Result<Option<FsConfig>, ConfigError> {
    let Some(dir) = merged.fs_dir.clone() else {
        let stray = [
            ("--fs-tag", merged.fs_tag.is_some()),
            ("--fs-cache", merged.fs_cache.is_some()),
            ("--fs-xattr", merged.fs_xattr.is_some()),
        ];
        return match stray.iter().find(|(_, given)| *given) {
            Some((flag, _)) => Err(ConfigError::FsWithoutDir(flag)),
            None => Ok(None),
        };
    };
    Ok(Some(FsConfig {
        dir,
        tag: merged
            .fs_tag
            .clone()
            .unwrap_or_else(|| DEFAULT_FS_TAG.to_string()),
        cache: merged.fs_cache.unwrap_or_default(),
        xattr: merged.fs_xattr.unwrap_or(true),
    }))
}

impl VmConfig {
    /// Validates every field; the first bad one is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let elf = is_kernel(&self.kernel).map_err(|source| ConfigError::OpenKernel {
            path: self.kernel.clone(),
            source,
        })?;
        if !elf {
            return Err(ConfigError::KernelNotElf(self.kernel.clone()));
        }
        File::open(&self.initrd).map_err(|source| ConfigError::OpenInitrd {
            path: self.initrd.clone(),
            source,
        })?;
        check_vcpus(u64::from(self.vcpus))?;
        check_memory(self.memory_mib)?;
        if self.cmdline.len() >= crate::boot::params::CMDLINE_MAX_SIZE {
            return Err(ConfigError::CmdlineTooLong(
                crate::boot::params::CMDLINE_MAX_SIZE - 1,
            ));
        }
        if let Some(sock) = &self.api_sock {
            check_api_sock(sock)?;
        }
        if let Some(sock) = &self.vsock_uds {
            check_vsock_uds(sock)?;
        }
        check_guest_cid(u64::from(self.guest_cid))?;
        if let Some(fs) = &self.fs {
            check_fs_dir(&fs.dir)?;
            check_fs_tag(&fs.tag)?;
        }
        Ok(())
    }
}

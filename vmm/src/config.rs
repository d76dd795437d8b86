//! The VM configuration and its validation, done before any KVM object exists.

use std::fs::File;
use std::path::{Path, PathBuf};

/// Fewest vCPUs a VM may have.
pub const MIN_VCPUS: u8 = 1;
/// Most vCPUs a VM may have (the guest kernel's `NR_CPUS`).
pub const MAX_VCPUS: u8 = 32;
/// Least guest memory, in MiB.
pub const MIN_MEMORY_MIB: u64 = 64;
/// Most guest memory, in MiB (64 GiB).
pub const MAX_MEMORY_MIB: u64 = 64 * 1024;

/// Where the guest's serial console goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SerialOutput {
    /// The VMM's standard output.
    Stdout,
    /// A file, created or truncated.
    File(PathBuf),
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
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
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

/// True if the file is a kernel image the loader knows.
fn is_kernel(path: &Path) -> Result<bool, std::io::Error> {
    let mut f = File::open(path)?;
    Ok(crate::boot::loader::detect_format(&mut f)?.is_some())
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
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn config(dir: &Path) -> VmConfig {
        let kernel = dir.join("vmlinux");
        let initrd = dir.join("initrd");
        File::create(&kernel)
            .unwrap()
            .write_all(b"\x7fELF\x02\x01")
            .unwrap();
        File::create(&initrd).unwrap().write_all(b"070701").unwrap();
        VmConfig {
            kernel,
            initrd,
            cmdline: "console=ttyS0".into(),
            vcpus: 1,
            memory_mib: 128,
            serial: SerialOutput::Stdout,
        }
    }

    #[test]
    fn accepts_a_good_config_and_names_bad_fields() {
        let dir = tempfile::tempdir().unwrap();
        let good = config(dir.path());
        good.validate().unwrap();

        let mut c = good.clone();
        c.kernel = dir.path().join("missing");
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("--kernel"));

        let mut c = good.clone();
        c.kernel = c.initrd.clone();
        assert!(matches!(c.validate(), Err(ConfigError::KernelNotElf(_))));

        let mut c = good.clone();
        c.initrd = dir.path().join("missing");
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("--initrd"));

        assert!(check_vcpus(0).is_err());
        assert!(check_vcpus(33).is_err());
        assert!(check_vcpus(300).is_err());
        assert_eq!(check_vcpus(32).unwrap(), 32);
        assert!(check_memory(63).is_err());
        assert!(check_memory(64 * 1024 + 1).is_err());
        assert_eq!(check_memory(64).unwrap(), 64);
    }
}

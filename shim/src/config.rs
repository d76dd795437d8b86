//! The shim's configuration: `/etc/vessel/config.toml` (or the file named by
//! `VESSEL_CONFIG`), then per-pod annotations from the allow-list in it.
//!
//! ```toml
//! kernel = "/var/lib/vessel/vmlinux"
//! initrd = "/var/lib/vessel/agent.cpio"
//! vcpus = 1
//! memory_mib = 512
//! log_level = "info"
//! debug_console = false
//! enable_annotations = ["vcpus", "memory_mib"]
//! templates = true
//! template_dir = "/var/cache/vessel/templates"
//! jail = true            # false: debugging only
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

/// The config file read when `VESSEL_CONFIG` is not set.
pub const DEFAULT_CONFIG: &str = "/etc/vessel/config.toml";
/// The environment variable naming another config file.
pub const CONFIG_ENV: &str = "VESSEL_CONFIG";
/// Annotation keys that override config keys: `io.vessel.config.<key>`.
pub const ANNOTATION_PREFIX: &str = "io.vessel.config.";

/// CRI: the pod's memory limit in bytes (containerd 1.7+).
const SANDBOX_MEMORY: &str = "io.kubernetes.cri.sandbox-memory";
/// CRI: the pod's CFS quota and period (containerd 1.7+).
const SANDBOX_CPU_QUOTA: &str = "io.kubernetes.cri.sandbox-cpu-quota";
const SANDBOX_CPU_PERIOD: &str = "io.kubernetes.cri.sandbox-cpu-period";

/// Keys an annotation may set, if the config's allow-list names them.
const ANNOTATABLE: &[&str] = &[
    "kernel",
    "initrd",
    "vcpus",
    "memory_mib",
    "log_level",
    "debug_console",
];

/// How the shim builds each pod's VM.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VesselConfig {
    /// The `vessel-vmm` binary; empty: next to the shim, then on `PATH`.
    pub vmm: PathBuf,
    /// The guest kernel (vmlinux).
    pub kernel: PathBuf,
    /// The initramfs whose `/init` is vessel-agent.
    pub initrd: PathBuf,
    /// vCPUs of each VM.
    pub vcpus: u8,
    /// Guest memory of each VM, MiB.
    pub memory_mib: u32,
    /// The guest agent's log level (`vessel.log=`).
    pub log_level: String,
    /// Kernel messages on the console file (otherwise `quiet`).
    pub debug_console: bool,
    /// How long a VM may take to answer its first agent call, seconds.
    pub boot_timeout_secs: u64,
    /// Where sandboxes keep sockets, console logs and their shared directory.
    pub state_dir: PathBuf,
    /// Config keys that pod annotations `io.vessel.config.<key>` may set.
    pub enable_annotations: Vec<String>,
    /// Restore pod VMs from a template (booted once per kernel, initramfs,
    /// VMM, size and command line) instead of booting each.
    pub templates: bool,
    /// Where templates are kept.
    pub template_dir: PathBuf,
    /// The most bytes a pod's console log holds (`console.log` in its
    /// state directory, on `/run`'s tmpfs): the VMM starts it again past
    /// that, keeping the latest output. At least 4096.
    pub console_max_bytes: u64,
    /// The most bytes a pod's VMM log holds (`vmm.log` beside it): the VMM
    /// rate limits what a guest can make it log, and starts the file again
    /// past this. At least 4096.
    pub vmm_log_max_bytes: u64,
    /// Jail each VMM (namespaces, rlimits, dropped capabilities, per-thread
    /// seccomp; see vessel-vmm's `jail`). `false` is for debugging only.
    pub jail: bool,
    /// Let each VMM's API serve `debug_forbidden_syscall`, which ends the
    /// VMM through its seccomp policy. For testing only.
    pub vmm_debug_api: bool,
}

impl Default for VesselConfig {
    fn default() -> Self {
        VesselConfig {
            vmm: PathBuf::new(),
            kernel: PathBuf::new(),
            initrd: PathBuf::new(),
            vcpus: 1,
            memory_mib: 512,
            log_level: "info".into(),
            debug_console: false,
            boot_timeout_secs: 300,
            state_dir: PathBuf::from("/run/vessel"),
            enable_annotations: Vec::new(),
            templates: true,
            template_dir: PathBuf::from("/var/cache/vessel/templates"),
            console_max_bytes: 1 << 20,
            vmm_log_max_bytes: 1 << 20,
            jail: true,
            vmm_debug_api: false,
        }
    }
}

/// What is wrong with the config or a pod's annotations on it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading the config file {path}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing the config file {path}")]
    ParseFile {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error(
        "config: enable_annotations: {key:?} cannot be set by an annotation (allowed: {allowed})"
    )]
    NotAnnotatable { key: String, allowed: String },
    #[error("config: {0} is not set")]
    Unset(&'static str),
    #[error("{what} {path} does not exist (set it in the vessel config)")]
    MissingFile { what: &'static str, path: PathBuf },
    #[error("config: vcpus must be at least 1")]
    NoVcpus,
    #[error("config: memory_mib must be at least {MIN_MEMORY_MIB}")]
    TooLittleMemory,
    #[error("config: console_max_bytes must be at least {MIN_CONSOLE_MAX_BYTES}")]
    SmallConsoleCap,
    #[error("config: vmm_log_max_bytes must be at least {MIN_CONSOLE_MAX_BYTES}")]
    SmallLogCap,
    #[error("annotation {key}: not in the config's enable_annotations")]
    AnnotationNotEnabled { key: String },
    #[error("annotation {key}: unknown key")]
    AnnotationUnknownKey { key: String },
    #[error("annotation {key}: bad value {value:?}")]
    AnnotationValue {
        key: String,
        value: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("the shim could not load the vessel config when it started")]
    LoadAtStart(#[source] Arc<ConfigError>),
}

/// The least guest memory a config may ask for.
const MIN_MEMORY_MIB: u32 = 64;
/// The smallest console cap (vessel-vmm's `--serial-max-bytes` minimum).
const MIN_CONSOLE_MAX_BYTES: u64 = 4096;

impl VesselConfig {
    /// Reads the config file (`VESSEL_CONFIG`, else [`DEFAULT_CONFIG`]).
    pub fn load() -> Result<VesselConfig, ConfigError> {
        let path = std::env::var_os(CONFIG_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
        Self::from_file(&path)
    }

    /// Reads and checks `path`.
    pub fn from_file(path: &Path) -> Result<VesselConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
            path: path.to_owned(),
            source,
        })?;
        let config: VesselConfig =
            toml::from_str(&text).map_err(|source| ConfigError::ParseFile {
                path: path.to_owned(),
                source,
            })?;
        for key in &config.enable_annotations {
            if !ANNOTATABLE.contains(&key.as_str()) {
                return Err(ConfigError::NotAnnotatable {
                    key: key.clone(),
                    allowed: ANNOTATABLE.join(", "),
                });
            }
        }
        Ok(config)
    }

    /// This config with the allowed `io.vessel.config.*` annotations applied.
    /// An annotation the allow-list does not name is an error, not ignored.
    pub fn with_annotations(
        &self,
        annotations: &HashMap<String, String>,
    ) -> Result<VesselConfig, ConfigError> {
        let mut config = self.clone();
        for (key, value) in annotations {
            let Some(name) = key.strip_prefix(ANNOTATION_PREFIX) else {
                continue;
            };
            let bad =
                |source: Box<dyn std::error::Error + Send + Sync>| ConfigError::AnnotationValue {
                    key: key.clone(),
                    value: value.clone(),
                    source,
                };
            if !config.enable_annotations.iter().any(|k| k == name) {
                return Err(ConfigError::AnnotationNotEnabled { key: key.clone() });
            }
            match name {
                "kernel" => config.kernel = value.into(),
                "initrd" => config.initrd = value.into(),
                "vcpus" => config.vcpus = value.parse().map_err(|e| bad(Box::new(e)))?,
                "memory_mib" => config.memory_mib = value.parse().map_err(|e| bad(Box::new(e)))?,
                "log_level" => config.log_level = value.clone(),
                "debug_console" => {
                    config.debug_console = value.parse().map_err(|e| bad(Box::new(e)))?
                }
                _ => return Err(ConfigError::AnnotationUnknownKey { key: key.clone() }),
            }
        }
        config.add_pod_resources(annotations)?;
        config.check()?;
        Ok(config)
    }

    /// Grows the VM by the pod's resources, which containerd's CRI (1.7 and
    /// later) passes on the sandbox: the memory limit, and CPUs from the CFS
    /// quota over the period, rounded up. The configured size stays as the
    /// guest's own overhead.
    fn add_pod_resources(
        &mut self,
        annotations: &HashMap<String, String>,
    ) -> Result<(), ConfigError> {
        let number = |key: &str| -> Result<Option<u64>, ConfigError> {
            match annotations.get(key) {
                None => Ok(None),
                Some(v) => v
                    .parse::<i64>()
                    .map(|n| Some(n.max(0) as u64))
                    .map_err(|e| ConfigError::AnnotationValue {
                        key: key.to_owned(),
                        value: v.clone(),
                        source: Box::new(e),
                    }),
            }
        };
        if let Some(bytes) = number(SANDBOX_MEMORY)? {
            let mib = u32::try_from(bytes.div_ceil(1 << 20)).unwrap_or(u32::MAX);
            self.memory_mib = self.memory_mib.saturating_add(mib);
        }
        if let (Some(quota), Some(period)) =
            (number(SANDBOX_CPU_QUOTA)?, number(SANDBOX_CPU_PERIOD)?)
        {
            if quota > 0 && period > 0 {
                let cpus = u8::try_from(quota.div_ceil(period)).unwrap_or(u8::MAX);
                self.vcpus = self.vcpus.saturating_add(cpus);
            }
        }
        Ok(())
    }

    /// Refuses values no VM can be built from, naming missing files.
    pub fn check(&self) -> Result<(), ConfigError> {
        for (what, path) in [("kernel", &self.kernel), ("initrd", &self.initrd)] {
            if path.as_os_str().is_empty() {
                return Err(ConfigError::Unset(what));
            }
            if !path.exists() {
                return Err(ConfigError::MissingFile {
                    what,
                    path: path.clone(),
                });
            }
        }
        if self.vcpus == 0 {
            return Err(ConfigError::NoVcpus);
        }
        if self.memory_mib < MIN_MEMORY_MIB {
            return Err(ConfigError::TooLittleMemory);
        }
        if self.console_max_bytes < MIN_CONSOLE_MAX_BYTES {
            return Err(ConfigError::SmallConsoleCap);
        }
        if self.vmm_log_max_bytes < MIN_CONSOLE_MAX_BYTES {
            return Err(ConfigError::SmallLogCap);
        }
        Ok(())
    }

    /// The VMM binary: the configured one, else `vessel-vmm` next to the
    /// running shim, else on `PATH`.
    pub fn vmm_binary(&self) -> PathBuf {
        if !self.vmm.as_os_str().is_empty() {
            return self.vmm.clone();
        }
        let sibling = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|dir| dir.join("vessel-vmm")));
        match sibling {
            Some(path) if path.exists() => path,
            _ => PathBuf::from("vessel-vmm"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_with_files(dir: &Path, extra: &str) -> VesselConfig {
        std::fs::write(dir.join("vmlinux"), b"k").unwrap();
        std::fs::write(dir.join("initrd"), b"i").unwrap();
        let file = dir.join("config.toml");
        std::fs::write(
            &file,
            format!(
                "kernel = \"{}/vmlinux\"\ninitrd = \"{}/initrd\"\n{extra}",
                dir.display(),
                dir.display()
            ),
        )
        .unwrap();
        VesselConfig::from_file(&file).unwrap()
    }

    #[test]
    fn defaults_fill_what_the_file_leaves_out() {
        let dir = tempfile::tempdir().unwrap();
        let config = config_with_files(dir.path(), "");
        assert_eq!(config.vcpus, 1);
        assert_eq!(config.memory_mib, 512);
        config.check().unwrap();
    }

    #[test]
    fn unknown_keys_and_missing_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "kernal = \"/x\"\n").unwrap();
        let err = crate::cause::chain(&VesselConfig::from_file(&file).unwrap_err());
        assert!(err.contains("kernal"), "{err}");

        let config = VesselConfig {
            kernel: dir.path().join("nope"),
            initrd: dir.path().join("nope2"),
            ..VesselConfig::default()
        };
        let err = config.check().unwrap_err().to_string();
        assert!(err.contains("kernel") && err.contains("nope"), "{err}");
        let missing = VesselConfig::from_file(&dir.path().join("absent.toml")).unwrap_err();
        assert!(missing.to_string().contains("absent.toml"));
    }

    #[test]
    fn only_allowed_annotations_apply() {
        let dir = tempfile::tempdir().unwrap();
        let config = config_with_files(dir.path(), "enable_annotations = [\"vcpus\"]\n");
        let mut ann = HashMap::new();
        ann.insert("io.vessel.config.vcpus".to_string(), "2".to_string());
        ann.insert("io.kubernetes.cri.sandbox-id".to_string(), "x".to_string());
        assert_eq!(config.with_annotations(&ann).unwrap().vcpus, 2);

        ann.insert(
            "io.vessel.config.memory_mib".to_string(),
            "1024".to_string(),
        );
        let err = config.with_annotations(&ann).unwrap_err();
        assert!(
            matches!(err, ConfigError::AnnotationNotEnabled { .. }),
            "{err}"
        );

        let mut bad = HashMap::new();
        bad.insert("io.vessel.config.vcpus".to_string(), "lots".to_string());
        let err = config.with_annotations(&bad).unwrap_err();
        assert!(
            matches!(err, ConfigError::AnnotationValue { .. }) && err.to_string().contains("lots"),
            "{err}"
        );
        assert!(
            std::error::Error::source(&err).is_some(),
            "the parse error is kept"
        );
    }

    #[test]
    fn the_vm_grows_by_the_pods_resources() {
        let dir = tempfile::tempdir().unwrap();
        let config = config_with_files(dir.path(), "");
        let mut ann = HashMap::new();
        ann.insert(SANDBOX_MEMORY.to_string(), (256u64 << 20).to_string());
        ann.insert(SANDBOX_CPU_QUOTA.to_string(), "150000".to_string());
        ann.insert(SANDBOX_CPU_PERIOD.to_string(), "100000".to_string());
        let sized = config.with_annotations(&ann).unwrap();
        assert_eq!((sized.memory_mib, sized.vcpus), (512 + 256, 1 + 2));
        ann.insert(SANDBOX_CPU_QUOTA.to_string(), "-1".to_string());
        assert_eq!(config.with_annotations(&ann).unwrap().vcpus, 1);
        ann.insert(SANDBOX_MEMORY.to_string(), "lots".to_string());
        assert!(config.with_annotations(&ann).is_err());
    }

    #[test]
    fn the_allow_list_names_only_known_keys() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("c.toml"),
            "enable_annotations = [\"vmm\"]\n",
        )
        .unwrap();
        let err = VesselConfig::from_file(&dir.path().join("c.toml")).unwrap_err();
        assert!(err.to_string().contains("vmm"));
    }
}

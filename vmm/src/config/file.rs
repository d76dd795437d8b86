//! The JSON config file given with `--config FILE`.
//!
//! ```json
//! {
//!   "kernel": "/path/vmlinux",
//!   "initrd": "/path/initrd.cpio",
//!   "cmdline": "extra kernel args",
//!   "vcpus": 2,
//!   "memory_mib": 256,
//!   "serial": "stdout",
//!   "serial_max_bytes": 1048576,
//!   "api_sock": "/run/vessel/vm.sock",
//!   "vsock_uds": "/run/vessel/vsock.sock",
//!   "guest_cid": 3,
//!   "fs_dir": "/srv/pod/shared",
//!   "fs_tag": "vessel",
//!   "fs_cache": "auto",
//!   "fs_xattr": true
//! }
//! ```
//!
//! A restore from a snapshot takes `"restore_state"` and `"restore_memory"`
//! (paths) instead of the guest's settings (see [`super::restore`]).
//!
//! `fs_xattr` also takes `"on"` or `"off"`. Every key is optional here; `kernel` and `initrd` must come from the file
//! or the flags. The file is parsed into a [`serde_json::Map`] and each key
//! checked by hand, so an error names the key it is about.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::{
    CacheMode, ConfigError, SerialOutput, MAX_FS_TAG_LEN, MAX_GUEST_CID, MAX_MEMORY_MIB, MAX_VCPUS,
    MIN_GUEST_CID, MIN_MEMORY_MIB, MIN_SERIAL_MAX_BYTES, MIN_VCPUS,
};

/// The keys a config file may have.
pub const KEYS: [&str; 16] = [
    "kernel",
    "initrd",
    "cmdline",
    "vcpus",
    "memory_mib",
    "serial",
    "serial_max_bytes",
    "api_sock",
    "vsock_uds",
    "guest_cid",
    "fs_dir",
    "fs_tag",
    "fs_cache",
    "fs_xattr",
    "restore_state",
    "restore_memory",
];

/// Settings from one source (the file or the flags), each maybe absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileConfig {
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    /// Extra kernel arguments, appended to the default command line.
    pub cmdline: Option<String>,
    pub vcpus: Option<u8>,
    pub memory_mib: Option<u64>,
    pub serial: Option<SerialOutput>,
    /// The most bytes the console file may hold (see
    /// [`super::SerialOutput`]).
    pub serial_max_bytes: Option<u64>,
    pub api_sock: Option<PathBuf>,
    pub vsock_uds: Option<PathBuf>,
    pub guest_cid: Option<u32>,
    pub fs_dir: Option<PathBuf>,
    pub fs_tag: Option<String>,
    pub fs_cache: Option<CacheMode>,
    pub fs_xattr: Option<bool>,
    /// A snapshot's state file to restore instead of booting.
    pub restore_state: Option<PathBuf>,
    /// The snapshot's memory file.
    pub restore_memory: Option<PathBuf>,
}

impl FileConfig {
    /// Reads and checks the config file at `path`.
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadConfigFile {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Checks the text of a config file; `path` only names it in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let value: Value =
            serde_json::from_str(text).map_err(|source| ConfigError::ParseConfigFile {
                path: path.to_path_buf(),
                source,
            })?;
        let Value::Object(map) = value else {
            return Err(ConfigError::ConfigFileNotObject {
                path: path.to_path_buf(),
            });
        };
        if let Some(key) = map.keys().find(|k| !KEYS.contains(&k.as_str())) {
            return Err(ConfigError::UnknownField {
                path: path.to_path_buf(),
                key: key.clone(),
            });
        }
        let fields = Fields { path, map: &map };
        Ok(Self {
            kernel: fields.path("kernel")?,
            initrd: fields.path("initrd")?,
            cmdline: fields.string("cmdline", "a string")?,
            vcpus: fields
                .number("vcpus", u64::from(MIN_VCPUS), u64::from(MAX_VCPUS))?
                .map(|n| u8::try_from(n).expect("MAX_VCPUS fits in u8")),
            memory_mib: fields.number("memory_mib", MIN_MEMORY_MIB, MAX_MEMORY_MIB)?,
            serial: fields.serial()?,
            serial_max_bytes: fields.number("serial_max_bytes", MIN_SERIAL_MAX_BYTES, u64::MAX)?,
            api_sock: fields.path("api_sock")?,
            vsock_uds: fields.path("vsock_uds")?,
            guest_cid: fields
                .number(
                    "guest_cid",
                    u64::from(MIN_GUEST_CID),
                    u64::from(MAX_GUEST_CID),
                )?
                .map(|n| u32::try_from(n).expect("MAX_GUEST_CID fits in u32")),
            fs_dir: fields.path("fs_dir")?,
            fs_tag: fields.fs_tag()?,
            fs_cache: fields.fs_cache()?,
            fs_xattr: fields.fs_xattr()?,
            restore_state: fields.path("restore_state")?,
            restore_memory: fields.path("restore_memory")?,
        })
    }

    /// Each setting from `self`, or else from `base`.
    pub fn or(self, base: Self) -> Self {
        Self {
            kernel: self.kernel.or(base.kernel),
            initrd: self.initrd.or(base.initrd),
            cmdline: self.cmdline.or(base.cmdline),
            vcpus: self.vcpus.or(base.vcpus),
            memory_mib: self.memory_mib.or(base.memory_mib),
            serial: self.serial.or(base.serial),
            serial_max_bytes: self.serial_max_bytes.or(base.serial_max_bytes),
            api_sock: self.api_sock.or(base.api_sock),
            vsock_uds: self.vsock_uds.or(base.vsock_uds),
            guest_cid: self.guest_cid.or(base.guest_cid),
            fs_dir: self.fs_dir.or(base.fs_dir),
            fs_tag: self.fs_tag.or(base.fs_tag),
            fs_cache: self.fs_cache.or(base.fs_cache),
            fs_xattr: self.fs_xattr.or(base.fs_xattr),
            restore_state: self.restore_state.or(base.restore_state),
            restore_memory: self.restore_memory.or(base.restore_memory),
        }
    }
}

/// The object of one config file, with typed getters whose errors name the key.
struct Fields<'a> {
    path: &'a Path,
    map: &'a Map<String, Value>,
}

impl Fields<'_> {
    fn error(&self, key: &'static str, expected: String) -> ConfigError {
        ConfigError::FieldType {
            path: self.path.to_path_buf(),
            key,
            expected,
        }
    }

    fn string(&self, key: &'static str, expected: &str) -> Result<Option<String>, ConfigError> {
        match self.map.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(self.error(key, expected.to_string())),
        }
    }

    fn path(&self, key: &'static str) -> Result<Option<PathBuf>, ConfigError> {
        const EXPECTED: &str = "a non-empty path";
        match self.string(key, EXPECTED)? {
            Some(s) if s.is_empty() => Err(self.error(key, EXPECTED.to_string())),
            s => Ok(s.map(PathBuf::from)),
        }
    }

    fn serial(&self) -> Result<Option<SerialOutput>, ConfigError> {
        const EXPECTED: &str = "\"stdout\" or a non-empty path";
        match self.string("serial", EXPECTED)? {
            Some(s) if s.is_empty() => Err(self.error("serial", EXPECTED.to_string())),
            s => Ok(s.map(|s| SerialOutput::parse(&s))),
        }
    }

    fn fs_tag(&self) -> Result<Option<String>, ConfigError> {
        let expected = format!("a tag of 1 to {MAX_FS_TAG_LEN} bytes without NUL");
        match self.string("fs_tag", &expected)? {
            Some(tag) if super::check_fs_tag(&tag).is_err() => Err(self.error("fs_tag", expected)),
            tag => Ok(tag),
        }
    }

    fn fs_cache(&self) -> Result<Option<CacheMode>, ConfigError> {
        const EXPECTED: &str = "\"auto\", \"always\" or \"never\"";
        match self.string("fs_cache", EXPECTED)? {
            Some(s) => CacheMode::parse(&s)
                .map(Some)
                .ok_or_else(|| self.error("fs_cache", EXPECTED.to_string())),
            None => Ok(None),
        }
    }

    fn fs_xattr(&self) -> Result<Option<bool>, ConfigError> {
        match self.map.get("fs_xattr") {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::String(s)) if s == "on" => Ok(Some(true)),
            Some(Value::String(s)) if s == "off" => Ok(Some(false)),
            Some(_) => Err(self.error("fs_xattr", "true, false, \"on\" or \"off\"".to_string())),
        }
    }

    fn number(&self, key: &'static str, min: u64, max: u64) -> Result<Option<u64>, ConfigError> {
        match self.map.get(key) {
            None => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
                _ => Err(self.error(key, format!("a number from {min} to {max}"))),
            },
        }
    }
}

//! The template cache: a guest booted once, snapshotted, and restored by
//! every later VM of the same make.
//!
//! A template is keyed by a SHA-256 over what decides the guest it holds:
//! the kernel's bytes, the initramfs's bytes, the vCPU count, the memory
//! size, the VMM binary's bytes (its version, snapshot format included) and
//! the maker's recipe (the kernel command line and devices it gives the
//! guest). It lives in `<root>/<key>/` as `state`, `memory` and `ready`:
//! - **made once:** [`TemplateCache::get_or_create`] holds an exclusive
//!   `flock` on `<root>/<key>.lock` while it checks or makes the template,
//!   so concurrent users make it once;
//! - **whole or not at all:** the maker writes into a scratch directory;
//!   `ready` (the key and the SHA-256 of both files) is written last, and
//!   the directory is renamed into place. A template without `ready` is
//!   half-written and is made again;
//! - **never stale:** `ready` records each file's SHA-256 and its size,
//!   inode and change time. Every use compares the latter (any write or
//!   replacement changes the change time); [`TemplateCache::verify_digests`]
//!   also hashes both files, which costs a read of the whole memory file
//!   (seconds for 512 MiB). A template that does not match is removed and
//!   made again;
//! - **read-only, root's alone:** the files are mode 0400 in 0700 directories
//!   (guest memory is secret); VMs map the memory file
//!   `MAP_PRIVATE` from a read-only descriptor, so no VM writes it.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Errors of the template cache.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("cannot read {path} for the template key")]
    ReadInput {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot use the template directory {path}")]
    UseDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot lock {path}")]
    Lock {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot make template {key}")]
    Make {
        key: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("template {key}: the maker wrote no {file}")]
    Missing { key: String, file: &'static str },
}

/// What a template holds: the inputs of its key.
#[derive(Debug, Clone)]
pub struct TemplateSpec {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub vcpus: u8,
    pub memory_mib: u32,
    /// The VMM binary that makes and restores it.
    pub vmm: PathBuf,
    /// Everything else the maker decides about the guest: its command line
    /// and devices, as text.
    pub recipe: String,
}

/// A template's files, checked and ready to restore from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub key: String,
    pub state: PathBuf,
    pub memory: PathBuf,
}

/// What `ready` says: the key and the files' digests.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Ready {
    key: String,
    state_sha256: String,
    memory_sha256: String,
    state_stamp: Stamp,
    memory_stamp: Stamp,
}

/// What changes when a file is written or replaced.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Stamp {
    len: u64,
    ino: u64,
    ctime_ns: i128,
}

impl Stamp {
    fn of(path: &Path) -> Result<Stamp, TemplateError> {
        use std::os::unix::fs::MetadataExt;
        let meta = fs::metadata(path).map_err(|source| TemplateError::ReadInput {
            path: path.to_owned(),
            source,
        })?;
        Ok(Stamp {
            len: meta.len(),
            ino: meta.ino(),
            ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
        })
    }
}

/// Templates under one root directory.
#[derive(Debug, Clone)]
pub struct TemplateCache {
    root: PathBuf,
    verify_digests: bool,
}

impl TemplateCache {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            verify_digests: false,
        }
    }

    /// Also hashes both files against `ready` on every use, not only their
    /// size, inode and change time.
    pub fn verify_digests(mut self) -> Self {
        self.verify_digests = true;
        self
    }

    /// The template's key: hex SHA-256 over its inputs.
    pub fn key(spec: &TemplateSpec) -> Result<String, TemplateError> {
        let mut hash = Sha256::new();
        for (name, path) in [
            ("kernel", &spec.kernel),
            ("initrd", &spec.initrd),
            ("vmm", &spec.vmm),
        ] {
            hash.update(name.as_bytes());
            hash.update(file_sha256(path)?.as_bytes());
        }
        hash.update(format!("vcpus={} memory_mib={}", spec.vcpus, spec.memory_mib).as_bytes());
        hash.update(b"recipe");
        hash.update(spec.recipe.as_bytes());
        Ok(hex(&hash.finalize()))
    }

    /// The template for `spec`: a checked one from the cache, or one that
    /// `make(dir)` creates now by writing `dir/state` and `dir/memory` (a
    /// paused VM's snapshot). A half-written or stale one is made again.
    pub fn get_or_create<E>(
        &self,
        spec: &TemplateSpec,
        make: impl FnOnce(&Path) -> Result<(), E>,
    ) -> Result<Template, TemplateError>
    where
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let key = Self::key(spec)?;
        // Guest memory and state: the cache is root's alone (0700, files
        // 0400), a cache made before that included.
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.root)
            .and_then(|()| fs::set_permissions(&self.root, fs::Permissions::from_mode(0o700)))
            .map_err(|source| TemplateError::UseDir {
                path: self.root.clone(),
                source,
            })?;
        let _lock = lock(&self.root.join(format!("{key}.lock")))?;
        let dir = self.root.join(&key);
        if let Some(template) = self.checked(&key, &dir) {
            return Ok(template);
        }
        remove_dir(&dir)?;
        let scratch = self.root.join(format!("{key}.new"));
        remove_dir(&scratch)?;
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&scratch)
            .map_err(|source| TemplateError::UseDir {
                path: scratch.clone(),
                source,
            })?;
        let made = make(&scratch).map_err(|source| TemplateError::Make {
            key: key.clone(),
            source: source.into(),
        });
        if let Err(err) = made.and_then(|()| seal(&key, &scratch)) {
            let _ = remove_dir(&scratch);
            return Err(err);
        }
        fs::rename(&scratch, &dir).map_err(|source| TemplateError::UseDir {
            path: dir.clone(),
            source,
        })?;
        tracing::info!(%key, dir = %dir.display(), "made a VM template");
        Ok(template_in(&key, &dir))
    }

    /// The template in `dir` if `ready` is there and both files match it.
    fn checked(&self, key: &str, dir: &Path) -> Option<Template> {
        let text = fs::read_to_string(dir.join("ready")).ok()?;
        let ready: Ready = serde_json::from_str(&text).ok()?;
        let template = template_in(key, dir);
        let digests = || -> Option<bool> {
            Some(
                file_sha256(&template.state).ok()? == ready.state_sha256
                    && file_sha256(&template.memory).ok()? == ready.memory_sha256,
            )
        };
        let matches = ready.key == key
            && Stamp::of(&template.state).ok()? == ready.state_stamp
            && Stamp::of(&template.memory).ok()? == ready.memory_stamp
            && (!self.verify_digests || digests()?);
        if !matches {
            tracing::warn!(%key, "a VM template does not match its ready file; making it again");
        }
        matches.then_some(template)
    }
}

fn template_in(key: &str, dir: &Path) -> Template {
    Template {
        key: key.to_owned(),
        state: dir.join("state"),
        memory: dir.join("memory"),
    }
}

/// Makes the files read-only, for their owner alone, and writes `ready`
/// last.
fn seal(key: &str, dir: &Path) -> Result<(), TemplateError> {
    let template = template_in(key, dir);
    for (file, path) in [("state", &template.state), ("memory", &template.memory)] {
        if !path.is_file() {
            return Err(TemplateError::Missing {
                key: key.to_owned(),
                file,
            });
        }
        fs::set_permissions(path, fs::Permissions::from_mode(0o400)).map_err(|source| {
            TemplateError::UseDir {
                path: path.clone(),
                source,
            }
        })?;
    }
    let ready = Ready {
        key: key.to_owned(),
        state_sha256: file_sha256(&template.state)?,
        memory_sha256: file_sha256(&template.memory)?,
        state_stamp: Stamp::of(&template.state)?,
        memory_stamp: Stamp::of(&template.memory)?,
    };
    let path = dir.join("ready");
    let write = || -> io::Result<()> {
        let mut file = File::create(&path)?;
        file.write_all(serde_json::to_string(&ready)?.as_bytes())?;
        file.sync_all()?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o400))
    };
    write().map_err(|source| TemplateError::UseDir {
        path: path.clone(),
        source,
    })
}

fn remove_dir(dir: &Path) -> Result<(), TemplateError> {
    match fs::remove_dir_all(dir) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => Err(TemplateError::UseDir {
            path: dir.to_owned(),
            source: err,
        }),
        _ => Ok(()),
    }
}

/// An exclusive `flock` on `path`, released when the file is dropped.
fn lock(path: &Path) -> Result<File, TemplateError> {
    let lock_error = |source| TemplateError::Lock {
        path: path.to_owned(),
        source,
    };
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(lock_error)?;
    // SAFETY: flock on a descriptor we own; no memory is passed.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(lock_error(io::Error::last_os_error()));
    }
    Ok(file)
}

fn file_sha256(path: &Path) -> Result<String, TemplateError> {
    let read_error = |source| TemplateError::ReadInput {
        path: path.to_owned(),
        source,
    };
    let mut file = File::open(path).map_err(read_error)?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(read_error)?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
    }
    Ok(hex(&hash.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
#[path = "cache_tests.rs"]
mod tests;

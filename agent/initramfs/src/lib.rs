//! Builds a Linux initramfs: an uncompressed `newc` cpio archive holding a
//! static `/init` and optional extra files.
//!
//! Output is deterministic (sorted entries, mtime 0, owner root, sequential
//! inode numbers), so an archive is named by the hash of its contents and
//! cached: [`Initramfs::build_cached`] returns the existing file when nothing
//! changed. The archive stays uncompressed because the guest copies it faster
//! than it could decompress it where guest kernel code is emulated.

mod newc;

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

pub use newc::{read_archive, ArchiveEntry};

/// Errors of building an initramfs.
#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    #[error("read {path}")]
    ReadSource {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("guest path {0:?} must be absolute, normalised and not the root")]
    InvalidGuestPath(String),
    #[error("guest path {path:?} is already a {existing}")]
    ConflictingEntry {
        path: String,
        existing: &'static str,
    },
    #[error("{path:?} is {size} bytes; newc stores at most 4 GiB - 1 per file")]
    FileTooLarge { path: String, size: usize },
    #[error("write the archive to {path}")]
    WriteArchive {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// One entry of the archive, by guest path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Dir { mode: u32 },
    File { mode: u32, data: Vec<u8> },
    Symlink { target: String },
}

impl Node {
    fn kind(&self) -> &'static str {
        match self {
            Node::Dir { .. } => "directory",
            Node::File { .. } => "file",
            Node::Symlink { .. } => "symlink",
        }
    }
}

/// An initramfs under construction. Parent directories are added implicitly
/// with mode 0755.
#[derive(Debug, Default, Clone)]
pub struct Initramfs {
    nodes: BTreeMap<String, Node>,
}

impl Initramfs {
    /// An archive whose `/init` is the static binary at `init`.
    pub fn with_init(init: &Path) -> Result<Self, InitramfsError> {
        let mut fs = Self::default();
        fs.add_file("/init", init, 0o755)?;
        Ok(fs)
    }

    /// Adds the host file `source` at `guest_path` with permission bits `mode`.
    pub fn add_file(
        &mut self,
        guest_path: &str,
        source: &Path,
        mode: u32,
    ) -> Result<&mut Self, InitramfsError> {
        let data = fs::read(source).map_err(|source_err| InitramfsError::ReadSource {
            path: source.to_path_buf(),
            source: source_err,
        })?;
        self.add_bytes(guest_path, data, mode)
    }

    /// Adds a file with the given contents.
    pub fn add_bytes(
        &mut self,
        guest_path: &str,
        data: Vec<u8>,
        mode: u32,
    ) -> Result<&mut Self, InitramfsError> {
        if u32::try_from(data.len()).is_err() {
            return Err(InitramfsError::FileTooLarge {
                path: guest_path.to_string(),
                size: data.len(),
            });
        }
        self.insert(
            guest_path,
            Node::File {
                mode: mode & 0o7777,
                data,
            },
        )
    }

    /// Adds an (empty) directory.
    pub fn add_dir(&mut self, guest_path: &str, mode: u32) -> Result<&mut Self, InitramfsError> {
        self.insert(
            guest_path,
            Node::Dir {
                mode: mode & 0o7777,
            },
        )
    }

    /// Adds a symbolic link to `target`.
    pub fn add_symlink(
        &mut self,
        guest_path: &str,
        target: &str,
    ) -> Result<&mut Self, InitramfsError> {
        self.insert(
            guest_path,
            Node::Symlink {
                target: target.to_string(),
            },
        )
    }

    fn insert(&mut self, guest_path: &str, node: Node) -> Result<&mut Self, InitramfsError> {
        let rel = normalise(guest_path)?;
        // Every ancestor must be (or become) a directory.
        let mut end = 0;
        while let Some(pos) = rel[end..].find('/') {
            let parent = &rel[..end + pos];
            match self.nodes.get(parent) {
                None => {
                    self.nodes
                        .insert(parent.to_string(), Node::Dir { mode: 0o755 });
                }
                Some(Node::Dir { .. }) => {}
                Some(other) => {
                    return Err(InitramfsError::ConflictingEntry {
                        path: format!("/{parent}"),
                        existing: other.kind(),
                    })
                }
            }
            end += pos + 1;
        }
        match self.nodes.get(&rel) {
            Some(Node::Dir { .. }) if matches!(node, Node::Dir { .. }) => {}
            Some(existing) if existing != &node => {
                return Err(InitramfsError::ConflictingEntry {
                    path: guest_path.to_string(),
                    existing: existing.kind(),
                })
            }
            _ => {}
        }
        self.nodes.insert(rel, node);
        Ok(self)
    }

    /// Writes the archive.
    pub fn write_to<W: Write>(&self, out: W) -> io::Result<()> {
        let mut writer = newc::Writer::new(out);
        for (path, node) in &self.nodes {
            match node {
                Node::Dir { mode } => writer.entry(path, newc::S_IFDIR | mode, 2, &[])?,
                Node::File { mode, data } => writer.entry(path, newc::S_IFREG | mode, 1, data)?,
                Node::Symlink { target } => {
                    writer.entry(path, newc::S_IFLNK | 0o777, 1, target.as_bytes())?
                }
            }
        }
        writer.finish()
    }

    /// The archive as bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        self.write_to(&mut buf)
            .expect("writing to a Vec cannot fail");
        buf
    }

    /// Writes the archive into `cache_dir` as `initramfs-<hash>.cpio`, unless
    /// that file exists already, and returns its path. The file appears
    /// atomically (write to a temporary name, then rename), so concurrent
    /// builders and readers never see half an archive.
    pub fn build_cached(&self, cache_dir: &Path) -> Result<PathBuf, InitramfsError> {
        let bytes = self.to_bytes();
        let digest = Sha256::digest(&bytes);
        let name: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        let path = cache_dir.join(format!("initramfs-{name}.cpio"));
        if path.is_file() {
            return Ok(path);
        }
        let write_err = |source| InitramfsError::WriteArchive {
            path: path.clone(),
            source,
        };
        fs::create_dir_all(cache_dir).map_err(write_err)?;
        let tmp = cache_dir.join(format!(".initramfs-{name}.{}.tmp", std::process::id()));
        fs::write(&tmp, &bytes).map_err(write_err)?;
        fs::rename(&tmp, &path).map_err(write_err)?;
        Ok(path)
    }
}

/// Turns "/a/b" into "a/b", refusing relative, empty, `.` and `..` parts.
fn normalise(guest_path: &str) -> Result<String, InitramfsError> {
    let invalid = || InitramfsError::InvalidGuestPath(guest_path.to_string());
    let rel = guest_path.strip_prefix('/').ok_or_else(invalid)?;
    if rel.is_empty()
        || rel
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err(invalid());
    }
    Ok(rel.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What [`sample`] holds, in archive order.
    const SAMPLE_LISTING: [&str; 7] = [
        "bin",
        "bin/sh",
        "etc",
        "etc/vessel",
        "etc/vessel/config",
        "init",
        "proc",
    ];

    fn sample() -> Initramfs {
        let mut fs = Initramfs::default();
        fs.add_bytes("/init", b"#!init\n".to_vec(), 0o755).unwrap();
        fs.add_bytes("/etc/vessel/config", b"x=1".to_vec(), 0o644)
            .unwrap();
        fs.add_symlink("/bin/sh", "/init").unwrap();
        fs.add_dir("/proc", 0o555).unwrap();
        fs
    }

    #[test]
    fn archive_round_trips_with_parents_first() {
        let entries = read_archive(&sample().to_bytes()).unwrap();
        let names: Vec<_> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, SAMPLE_LISTING);
        let init = entries.iter().find(|e| e.name == "init").unwrap();
        assert_eq!(init.mode, newc::S_IFREG | 0o755);
        assert_eq!(init.data, b"#!init\n");
        let sh = entries.iter().find(|e| e.name == "bin/sh").unwrap();
        assert_eq!(sh.mode, newc::S_IFLNK | 0o777);
        assert_eq!(sh.data, b"/init");
        let proc_dir = entries.iter().find(|e| e.name == "proc").unwrap();
        assert_eq!(proc_dir.mode, newc::S_IFDIR | 0o555);
    }

    #[test]
    fn output_is_deterministic_and_aligned() {
        let a = sample().to_bytes();
        let b = sample().to_bytes();
        assert_eq!(a, b);
        assert_eq!(a.len() % 4, 0);
        assert!(a.starts_with(b"070701"));
    }

    #[test]
    fn invalid_guest_paths_are_refused() {
        let mut fs = Initramfs::default();
        for bad in ["init", "/", "/a/../b", "/a//b", "/a/./b", "/a/"] {
            assert!(
                matches!(
                    fs.add_bytes(bad, vec![], 0o644),
                    Err(InitramfsError::InvalidGuestPath(_))
                ),
                "{bad} accepted"
            );
        }
    }

    #[test]
    fn a_file_cannot_become_a_parent_directory() {
        let mut fs = Initramfs::default();
        fs.add_bytes("/init", vec![1], 0o755).unwrap();
        let err = fs.add_bytes("/init/x", vec![], 0o644).unwrap_err();
        assert!(
            matches!(
                err,
                InitramfsError::ConflictingEntry {
                    existing: "file",
                    ..
                }
            ),
            "{err}"
        );
        let err = fs.add_symlink("/init", "/x").unwrap_err();
        assert!(
            matches!(err, InitramfsError::ConflictingEntry { .. }),
            "{err}"
        );
    }

    #[test]
    fn missing_source_names_the_path() {
        let err = Initramfs::with_init(Path::new("/nonexistent/vessel-init")).unwrap_err();
        assert_eq!(err.to_string(), "read /nonexistent/vessel-init");
    }

    #[test]
    fn build_cached_reuses_the_same_file() {
        let dir = tempfile::tempdir().unwrap();
        let first = sample().build_cached(dir.path()).unwrap();
        let modified = fs::metadata(&first).unwrap().modified().unwrap();
        let second = sample().build_cached(dir.path()).unwrap();
        assert_eq!(first, second);
        assert_eq!(fs::metadata(&second).unwrap().modified().unwrap(), modified);
        let mut other = sample();
        other.add_bytes("/extra", vec![7], 0o644).unwrap();
        assert_ne!(other.build_cached(dir.path()).unwrap(), first);
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            2,
            "no temporary files left"
        );
    }

    /// GNU cpio (installed by .ci/run) must list what we wrote.
    #[test]
    fn gnu_cpio_reads_the_archive() {
        let dir = tempfile::tempdir().unwrap();
        let path = sample().build_cached(dir.path()).unwrap();
        let out = std::process::Command::new("cpio")
            .args(["-i", "-t", "--quiet", "-F"])
            .arg(&path)
            .output()
            .expect("run cpio (apt-get install cpio)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let listing = String::from_utf8(out.stdout).unwrap();
        assert_eq!(listing.lines().collect::<Vec<_>>(), SAMPLE_LISTING);
    }
}

//! The state file: a fixed header, then the state as JSON.
//!
//! ```text
//! offset  size  what
//!      0     8  magic "VESSELSN"
//!      8     4  format version, little endian (FORMAT_VERSION)
//!     12     8  length of the JSON that follows, little endian
//!     20    32  SHA-256 of the JSON
//!     52     …  the JSON of state::VmState
//! ```
//!
//! Files are written to a temporary name beside the target, synced, and
//! renamed into place ([`PendingFile`]): a reader sees a whole file or none.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{SnapshotError, VmState};

/// The first bytes of every state file.
pub const MAGIC: [u8; 8] = *b"VESSELSN";
/// The format this vessel-vmm writes and reads. Any change to what the
/// state holds or means bumps it.
pub const FORMAT_VERSION: u32 = 1;
/// Bytes before the JSON.
pub const HEADER_LEN: usize = 8 + 4 + 8 + 32;
/// The largest state file read (32 vCPUs need well under 2 MiB).
pub const MAX_STATE_BYTES: u64 = 64 << 20;

/// The bytes of a state file holding `state`.
pub fn encode(state: &VmState) -> Result<Vec<u8>, SnapshotError> {
    let json = serde_json::to_vec(state).map_err(SnapshotError::SerializeState)?;
    let mut bytes = Vec::with_capacity(HEADER_LEN + json.len());
    bytes.extend_from_slice(&MAGIC);
    bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    bytes.extend_from_slice(&(json.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&Sha256::digest(&json));
    bytes.extend_from_slice(&json);
    Ok(bytes)
}

/// The state in `bytes`, read from `path` (which only names it in errors).
/// Checks the magic, the version, the length and the checksum before
/// parsing; the parsed state is not yet validated.
pub fn decode(path: &Path, bytes: &[u8]) -> Result<VmState, SnapshotError> {
    let path_buf = || path.to_path_buf();
    if bytes.len() < HEADER_LEN || bytes[..8] != MAGIC {
        return Err(SnapshotError::NotASnapshot(path_buf()));
    }
    let (version, rest) = bytes[8..].split_at(4);
    let (length, rest) = rest.split_at(8);
    let (checksum, json) = rest.split_at(32);
    let version = u32::from_le_bytes(version.try_into().unwrap_or_default());
    if version != FORMAT_VERSION {
        return Err(SnapshotError::Version {
            path: path_buf(),
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let expected = u64::from_le_bytes(length.try_into().unwrap_or_default());
    if expected != json.len() as u64 {
        return Err(SnapshotError::Truncated {
            path: path_buf(),
            expected,
            found: json.len() as u64,
        });
    }
    if Sha256::digest(json).as_slice() != checksum {
        return Err(SnapshotError::Checksum(path_buf()));
    }
    serde_json::from_slice(json).map_err(|e| SnapshotError::ParseState(path_buf(), e))
}

/// Reads the state file at `path`.
pub fn read(path: &Path) -> Result<VmState, SnapshotError> {
    let read_err = |e| SnapshotError::ReadState(path.to_path_buf(), e);
    let file = std::fs::File::open(path).map_err(read_err)?;
    let len = file.metadata().map_err(read_err)?.len();
    if len > MAX_STATE_BYTES {
        return Err(SnapshotError::StateTooLarge(path.to_path_buf(), len));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    std::io::Read::read_to_end(&mut std::io::Read::take(file, MAX_STATE_BYTES), &mut bytes)
        .map_err(read_err)?;
    decode(path, &bytes)
}

/// Writes `state` beside `path`, to be committed there.
pub fn write(path: &Path, state: &VmState) -> Result<(PendingFile, u64), SnapshotError> {
    let bytes = encode(state)?;
    let pending = PendingFile::create(path, |file| file.write_all(&bytes))?;
    Ok((pending, bytes.len() as u64))
}

/// A file written and synced under a temporary name beside its target,
/// renamed into place by [`PendingFile::commit`] and removed if dropped
/// before. Readers see a whole file or none.
#[derive(Debug)]
pub struct PendingFile {
    tmp: PathBuf,
    target: PathBuf,
    committed: bool,
}

impl PendingFile {
    /// Creates the temporary file for `path` (mode 0600: guest memory is
    /// the guest's secret) and fills it with `fill`.
    pub fn create(
        path: &Path,
        fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
    ) -> Result<Self, SnapshotError> {
        if !path.is_absolute() {
            return Err(SnapshotError::RelativePath(path.to_path_buf()));
        }
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".tmp-{}", std::process::id()));
        let pending = Self {
            tmp: PathBuf::from(name),
            target: path.to_path_buf(),
            committed: false,
        };
        let result = (|| {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&pending.tmp)?;
            fill(&mut file)?;
            file.sync_all()
        })();
        result.map_err(|e| SnapshotError::WriteFile(path.to_path_buf(), e))?;
        Ok(pending)
    }

    /// Renames the file into place.
    pub fn commit(mut self) -> Result<(), SnapshotError> {
        std::fs::rename(&self.tmp, &self.target)
            .map_err(|e| SnapshotError::WriteFile(self.target.clone(), e))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for PendingFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

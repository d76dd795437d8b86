//! The memory file: guest RAM region after region, written sparse, and
//! mapped back `MAP_PRIVATE` so that every VM restored from one file reads
//! the same page-cache pages until it writes its own copies.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use serde::{Deserialize, Serialize};
use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{
    Bytes, FileOffset, GuestAddress, GuestMemory, GuestMemoryMmap, GuestMemoryRegion,
    GuestRegionMmap,
};

use super::file::PendingFile;
use super::SnapshotError;

/// Bytes copied out of guest memory at a time; a chunk of zeroes is not
/// written (the file keeps a hole there).
const CHUNK: usize = 1 << 20;

/// One RAM region and where it is in the memory file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionState {
    pub guest_addr: u64,
    pub size: u64,
    pub file_offset: u64,
}

/// Guest RAM as the memory file lays it out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryLayout {
    pub regions: Vec<RegionState>,
}

impl MemoryLayout {
    /// Bytes of guest RAM, and of the memory file; `None` on overflow.
    pub fn total(&self) -> Option<u64> {
        self.regions
            .iter()
            .try_fold(0u64, |sum, r| sum.checked_add(r.size))
    }
}

/// Writes guest memory beside `path`, to be committed there, and returns
/// its layout. The vCPUs must be paused and the devices held.
pub fn write(
    mem: &GuestMemoryMmap,
    path: &Path,
) -> Result<(MemoryLayout, PendingFile), SnapshotError> {
    let mut regions = Vec::new();
    let mut offset = 0u64;
    for region in mem.iter() {
        regions.push(RegionState {
            guest_addr: region.start_addr().0,
            size: region.len(),
            file_offset: offset,
        });
        offset += region.len();
    }
    let mut failure = None;
    let pending = PendingFile::create(path, |file| {
        let mut buf = vec![0u8; CHUNK];
        for r in &regions {
            let mut done = 0u64;
            while done < r.size {
                let len = (r.size - done).min(CHUNK as u64) as usize;
                let chunk = &mut buf[..len];
                if let Err(e) = mem.read_slice(chunk, GuestAddress(r.guest_addr + done)) {
                    failure = Some(e);
                    return Err(std::io::Error::other("guest memory unreadable"));
                }
                if chunk.iter().any(|&b| b != 0) {
                    file.write_all_at(chunk, r.file_offset + done)?;
                }
                done += len as u64;
            }
        }
        file.set_len(offset)
    })
    .map_err(|e| match failure.take() {
        Some(read) => SnapshotError::ReadGuestMemory(read),
        None => e,
    })?;
    Ok((MemoryLayout { regions }, pending))
}

/// Maps the memory file at `path` as guest RAM laid out by `layout`,
/// copy-on-write. The file is opened read-only: the guest's writes stay in
/// this process. Its size must be the layout's.
pub fn map(path: &Path, layout: &MemoryLayout) -> Result<GuestMemoryMmap, SnapshotError> {
    let open_err = |e| SnapshotError::OpenMemory(path.to_path_buf(), e);
    let file = File::open(path).map_err(open_err)?;
    let found = file.metadata().map_err(open_err)?.len();
    let expected = layout
        .total()
        .ok_or_else(|| SnapshotError::MemoryRegions(path.to_path_buf()))?;
    if found != expected {
        return Err(SnapshotError::MemorySize {
            path: path.to_path_buf(),
            expected,
            found,
        });
    }
    let mut regions = Vec::with_capacity(layout.regions.len());
    for r in &layout.regions {
        let fits = r
            .file_offset
            .checked_add(r.size)
            .is_some_and(|end| end <= found);
        let size = usize::try_from(r.size).ok().filter(|_| fits && r.size > 0);
        let Some(size) = size else {
            return Err(SnapshotError::MemoryRegions(path.to_path_buf()));
        };
        let file = file.try_clone().map_err(open_err)?;
        let mapping = MmapRegionBuilder::new(size)
            .with_file_offset(FileOffset::new(file, r.file_offset))
            .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
            .with_mmap_flags(libc::MAP_PRIVATE | libc::MAP_NORESERVE)
            .build()
            .map_err(|e| SnapshotError::MapMemory(path.to_path_buf(), e))?;
        let region = GuestRegionMmap::new(mapping, GuestAddress(r.guest_addr))
            .ok_or_else(|| SnapshotError::MemoryRegions(path.to_path_buf()))?;
        regions.push(region);
    }
    GuestMemoryMmap::from_regions(regions)
        .map_err(|_| SnapshotError::MemoryRegions(path.to_path_buf()))
}

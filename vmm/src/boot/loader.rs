//! Loads the kernel (ELF `vmlinux`) and the initrd into guest memory.

use std::fs::File;
use std::path::Path;

use std::io::{Read, Seek, SeekFrom};

use linux_loader::loader::bootparam::setup_header;
use linux_loader::loader::{bzimage::BzImage, elf::Elf, KernelLoader};
use tracing::info;
use vm_memory::{Bytes, GuestAddress, GuestMemory, GuestMemoryMmap};

use crate::memory::{HIGH_MEMORY_START, MMIO_GAP_START};

/// Page size used to align the initrd.
const PAGE_SIZE: u64 = 0x1000;

/// Errors of loading the kernel or initrd.
#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    #[error("cannot open kernel image")]
    OpenKernel(#[source] std::io::Error),
    #[error("cannot read the kernel image header")]
    ReadKernel(#[source] std::io::Error),
    #[error("cannot load ELF kernel")]
    LoadKernel(#[source] linux_loader::loader::Error),
    #[error("cannot load bzImage kernel")]
    LoadBzImage(#[source] linux_loader::loader::Error),
    #[error("kernel is neither an ELF vmlinux nor a bzImage")]
    UnknownKernelFormat,
    #[error("cannot open initrd")]
    OpenInitrd(#[source] std::io::Error),
    #[error("initrd of {size} bytes does not fit below {limit:#x}")]
    InitrdTooBig { size: u64, limit: u64 },
    #[error("cannot copy initrd into guest memory")]
    CopyInitrd(#[source] vm_memory::GuestMemoryError),
}

/// Offset of the 64-bit entry point in a loaded bzImage's protected-mode code.
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;

/// The image formats the loader knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelFormat {
    /// Uncompressed ELF `vmlinux`.
    Elf,
    /// Compressed `bzImage` with a setup header.
    BzImage,
}

/// Tells the format from the image's first bytes.
pub fn detect_format<R: Read + Seek>(image: &mut R) -> std::io::Result<Option<KernelFormat>> {
    let mut head = [0u8; 0x206];
    image.seek(SeekFrom::Start(0))?;
    let mut n = 0;
    while n < head.len() {
        match image.read(&mut head[n..])? {
            0 => break,
            k => n += k,
        }
    }
    image.seek(SeekFrom::Start(0))?;
    Ok(if n >= 4 && &head[..4] == b"\x7fELF" {
        Some(KernelFormat::Elf)
    } else if n == head.len() && &head[0x202..0x206] == b"HdrS" {
        Some(KernelFormat::BzImage)
    } else {
        None
    })
}

/// Where the kernel was loaded.
#[derive(Debug, Clone, Copy)]
pub struct LoadedKernel {
    /// 64-bit entry point.
    pub entry: GuestAddress,
    /// First byte after the kernel image.
    pub end: u64,
    /// A bzImage's setup header, to copy into the zero page.
    pub setup_header: Option<setup_header>,
}

/// Where the initrd was placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadedInitrd {
    pub addr: GuestAddress,
    pub size: u64,
}

/// Loads an ELF kernel at its physical addresses, or a bzImage at its
/// preferred address.
pub fn load_kernel(mem: &GuestMemoryMmap, path: &Path) -> Result<LoadedKernel, LoaderError> {
    let mut file = File::open(path).map_err(LoaderError::OpenKernel)?;
    let highmem = Some(GuestAddress(HIGH_MEMORY_START));
    let format = detect_format(&mut file).map_err(LoaderError::ReadKernel)?;
    let loaded = match format {
        Some(KernelFormat::Elf) => {
            let res = Elf::load(mem, None, &mut file, highmem).map_err(LoaderError::LoadKernel)?;
            LoadedKernel {
                entry: res.kernel_load,
                end: res.kernel_end,
                setup_header: None,
            }
        }
        Some(KernelFormat::BzImage) => {
            let res =
                BzImage::load(mem, None, &mut file, highmem).map_err(LoaderError::LoadBzImage)?;
            LoadedKernel {
                entry: GuestAddress(res.kernel_load.0 + BZIMAGE_64BIT_ENTRY_OFFSET),
                end: res.kernel_end,
                setup_header: res.setup_header,
            }
        }
        None => return Err(LoaderError::UnknownKernelFormat),
    };
    info!(
        ?format,
        entry = format_args!("{:#x}", loaded.entry.0),
        end = loaded.end,
        "kernel loaded"
    );
    Ok(loaded)
}

/// The page-aligned address of an initrd of `size` bytes placed as high as
/// possible below `top`, above `floor`.
pub fn initrd_address(size: u64, floor: u64, top: u64) -> Option<u64> {
    let addr = top.checked_sub(size)? & !(PAGE_SIZE - 1);
    (addr >= floor).then_some(addr)
}

/// Loads the initrd at the top of the first RAM region.
pub fn load_initrd(
    mem: &GuestMemoryMmap,
    path: &Path,
    kernel_end: u64,
) -> Result<LoadedInitrd, LoaderError> {
    let mut file = File::open(path).map_err(LoaderError::OpenInitrd)?;
    let size = file.metadata().map_err(LoaderError::OpenInitrd)?.len();
    let first_end = mem
        .iter()
        .next()
        .map(|r| vm_memory::GuestMemoryRegion::last_addr(r).0 + 1)
        .unwrap_or(0)
        .min(MMIO_GAP_START);
    let addr = initrd_address(size, kernel_end, first_end).ok_or(LoaderError::InitrdTooBig {
        size,
        limit: first_end,
    })?;
    mem.read_exact_volatile_from(GuestAddress(addr), &mut file, size as usize)
        .map_err(LoaderError::CopyInitrd)?;
    info!(addr = format_args!("{addr:#x}"), size, "initrd loaded");
    Ok(LoadedInitrd {
        addr: GuestAddress(addr),
        size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_kernel_formats() {
        use std::io::Cursor;
        let mut elf = b"\x7fELF\x02\x01\x01".to_vec();
        assert_eq!(
            detect_format(&mut Cursor::new(&mut elf)).unwrap(),
            Some(KernelFormat::Elf)
        );
        let mut bz = vec![0u8; 0x400];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        assert_eq!(
            detect_format(&mut Cursor::new(&mut bz)).unwrap(),
            Some(KernelFormat::BzImage)
        );
        let mut junk = vec![0u8; 0x400];
        assert_eq!(detect_format(&mut Cursor::new(&mut junk)).unwrap(), None);
        let mut short = b"\x7fEL".to_vec();
        assert_eq!(detect_format(&mut Cursor::new(&mut short)).unwrap(), None);
    }

    #[test]
    fn initrd_goes_high_and_page_aligned() {
        assert_eq!(
            initrd_address(0x1800, 0x100_0000, 0x800_0000),
            Some(0x7ff_e000)
        );
        assert_eq!(initrd_address(0x1000, 0, 0x800_0000), Some(0x7ff_f000));
        assert_eq!(initrd_address(0x800_0000, 0x100_0000, 0x800_0000), None);
        assert_eq!(initrd_address(u64::MAX, 0, 0x800_0000), None);
    }
}

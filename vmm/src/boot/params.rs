//! The zero page (`struct boot_params`) of the Linux x86 boot protocol.

use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::layout::{CMDLINE_START, ZERO_PAGE_START};
use crate::memory::E820Entry;

/// Largest command line, including its terminating NUL (x86 `COMMAND_LINE_SIZE`).
pub const CMDLINE_MAX_SIZE: usize = 2048;
/// "HdrS": the setup header magic.
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448;
/// The boot sector signature.
const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
/// Loader type "undefined" (0xff).
const KERNEL_LOADER_OTHER: u8 = 0xff;
/// Kernel alignment the 64-bit kernel expects.
const KERNEL_MIN_ALIGNMENT_BYTES: u32 = 0x0100_0000;

/// Errors of writing the zero page and command line.
#[derive(Debug, thiserror::Error)]
pub enum ParamsError {
    #[error("e820 map has {0} entries, more than the zero page holds")]
    TooManyE820Entries(usize),
    #[error("command line is longer than {CMDLINE_MAX_SIZE} bytes")]
    CmdlineTooLong,
    #[error("command line contains a NUL byte")]
    CmdlineNul,
    #[error("cannot write the command line")]
    WriteCmdline(#[source] vm_memory::GuestMemoryError),
    #[error("cannot write the zero page")]
    WriteZeroPage(#[source] vm_memory::GuestMemoryError),
}

/// What goes into the zero page.
#[derive(Debug, Clone)]
pub struct BootInfo<'a> {
    pub e820: &'a [E820Entry],
    pub cmdline_addr: u64,
    pub cmdline_len: usize,
    pub initrd_addr: u64,
    pub initrd_size: u64,
    /// A bzImage's own setup header, kept where we do not override it.
    pub setup_header: Option<setup_header>,
}

/// Builds the zero page.
pub fn build_boot_params(info: &BootInfo<'_>) -> Result<boot_params, ParamsError> {
    let mut params = boot_params::default();
    if info.e820.len() > params.e820_table.len() {
        return Err(ParamsError::TooManyE820Entries(info.e820.len()));
    }
    if let Some(hdr) = info.setup_header {
        params.hdr = hdr;
    }
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
    params.hdr.header = KERNEL_HDR_MAGIC;
    if params.hdr.kernel_alignment == 0 {
        params.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT_BYTES;
    }
    params.hdr.cmd_line_ptr = info.cmdline_addr as u32;
    params.ext_cmd_line_ptr = (info.cmdline_addr >> 32) as u32;
    params.hdr.cmdline_size = info.cmdline_len as u32;
    params.hdr.ramdisk_image = info.initrd_addr as u32;
    params.ext_ramdisk_image = (info.initrd_addr >> 32) as u32;
    params.hdr.ramdisk_size = info.initrd_size as u32;
    params.ext_ramdisk_size = (info.initrd_size >> 32) as u32;
    for (slot, e) in params.e820_table.iter_mut().zip(info.e820) {
        *slot = boot_e820_entry {
            addr: e.addr,
            size: e.size,
            type_: e.kind,
        };
    }
    params.e820_entries = info.e820.len() as u8;
    Ok(params)
}

/// Writes the command line at [`CMDLINE_START`], returning its length
/// without the NUL.
pub fn write_cmdline(mem: &GuestMemoryMmap, cmdline: &str) -> Result<usize, ParamsError> {
    if cmdline.len() >= CMDLINE_MAX_SIZE {
        return Err(ParamsError::CmdlineTooLong);
    }
    if cmdline.contains('\0') {
        return Err(ParamsError::CmdlineNul);
    }
    let mut bytes = cmdline.as_bytes().to_vec();
    bytes.push(0);
    mem.write_slice(&bytes, GuestAddress(CMDLINE_START))
        .map_err(ParamsError::WriteCmdline)?;
    Ok(cmdline.len())
}

/// Writes the zero page at [`ZERO_PAGE_START`].
pub fn write_boot_params(mem: &GuestMemoryMmap, params: &boot_params) -> Result<(), ParamsError> {
    mem.write_obj(*params, GuestAddress(ZERO_PAGE_START))
        .map_err(ParamsError::WriteZeroPage)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::e820_map;
    use vm_memory::GuestMemoryMmap;

    #[test]
    fn zero_page_holds_e820_cmdline_and_initrd() {
        let e820 = e820_map(256 << 20);
        let p = build_boot_params(&BootInfo {
            e820: &e820,
            cmdline_addr: CMDLINE_START,
            cmdline_len: 42,
            initrd_addr: 0xff0_0000,
            initrd_size: 0x12_3456,
            setup_header: None,
        })
        .unwrap();
        assert_eq!({ p.hdr.header }, KERNEL_HDR_MAGIC);
        assert_eq!({ p.hdr.boot_flag }, 0xaa55);
        assert_eq!({ p.hdr.type_of_loader }, 0xff);
        assert_eq!({ p.hdr.cmd_line_ptr }, 0x20000);
        assert_eq!({ p.hdr.cmdline_size }, 42);
        assert_eq!({ p.hdr.ramdisk_image }, 0xff0_0000);
        assert_eq!({ p.hdr.ramdisk_size }, 0x12_3456);
        assert_eq!({ p.ext_ramdisk_image }, 0);
        assert_eq!(p.e820_entries as usize, e820.len());
        for (got, want) in p.e820_table.iter().zip(&e820) {
            assert_eq!(
                ({ got.addr }, { got.size }, { got.type_ }),
                (want.addr, want.size, want.kind)
            );
        }
        assert_eq!({ p.e820_table[e820.len()].size }, 0);
    }

    #[test]
    fn zero_page_and_cmdline_land_at_their_offsets() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let len = write_cmdline(&mem, "console=ttyS0 quiet").unwrap();
        assert_eq!(len, 19);
        let mut buf = [0u8; 20];
        mem.read_slice(&mut buf, GuestAddress(CMDLINE_START))
            .unwrap();
        assert_eq!(&buf, b"console=ttyS0 quiet\0");
        assert!(write_cmdline(&mem, &"x".repeat(CMDLINE_MAX_SIZE)).is_err());

        let e820 = e820_map(64 << 20);
        let p = build_boot_params(&BootInfo {
            e820: &e820,
            cmdline_addr: CMDLINE_START,
            cmdline_len: len,
            initrd_addr: 0x300_0000,
            initrd_size: 4096,
            setup_header: None,
        })
        .unwrap();
        write_boot_params(&mem, &p).unwrap();
        // Offsets from Documentation/arch/x86/zero-page.rst and boot.rst.
        let e820_count: u8 = mem.read_obj(GuestAddress(ZERO_PAGE_START + 0x1e8)).unwrap();
        assert_eq!(e820_count as usize, e820.len());
        let cmd_ptr: u32 = mem.read_obj(GuestAddress(ZERO_PAGE_START + 0x228)).unwrap();
        assert_eq!(cmd_ptr, 0x20000);
        let ramdisk: u32 = mem.read_obj(GuestAddress(ZERO_PAGE_START + 0x218)).unwrap();
        assert_eq!(ramdisk, 0x300_0000);
        let ramdisk_size: u32 = mem.read_obj(GuestAddress(ZERO_PAGE_START + 0x21c)).unwrap();
        assert_eq!(ramdisk_size, 4096);
        let first_size: u64 = mem
            .read_obj(GuestAddress(ZERO_PAGE_START + 0x2d0 + 8))
            .unwrap();
        assert_eq!(first_size, e820[0].size);
    }
}

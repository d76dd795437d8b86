//! The `newc` (SVR4, no checksum) cpio format the kernel unpacks.
//!
//! Each entry is a 110-byte ASCII header (magic `070701`, then thirteen
//! 8-digit hex fields), the NUL-terminated name padded to 4 bytes, and the
//! data padded to 4 bytes. `TRAILER!!!` ends the archive.

use std::io::{self, Write};

pub const S_IFDIR: u32 = 0o040000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFLNK: u32 = 0o120000;

const MAGIC: &[u8; 6] = b"070701";
const HEADER_LEN: usize = 110;
const TRAILER: &str = "TRAILER!!!";

fn pad4(len: usize) -> usize {
    (4 - len % 4) % 4
}

/// Streams entries into a newc archive.
pub struct Writer<W: Write> {
    out: W,
    next_ino: u32,
}

impl<W: Write> Writer<W> {
    pub fn new(out: W) -> Self {
        Self { out, next_ino: 1 }
    }

    /// Writes one entry. `data` is the file contents or the symlink target.
    pub fn entry(&mut self, name: &str, mode: u32, nlink: u32, data: &[u8]) -> io::Result<()> {
        let ino = self.next_ino;
        self.next_ino += 1;
        self.raw_entry(ino, name, mode, nlink, data)
    }

    fn raw_entry(
        &mut self,
        ino: u32,
        name: &str,
        mode: u32,
        nlink: u32,
        data: &[u8],
    ) -> io::Result<()> {
        let size = u32::try_from(data.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "entry over 4 GiB"))?;
        let namesize = name.len() + 1;
        // ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize check
        let fields = [
            ino,
            mode,
            0,
            0,
            nlink,
            0,
            size,
            0,
            0,
            0,
            0,
            namesize as u32,
            0,
        ];
        let mut header = Vec::with_capacity(HEADER_LEN);
        header.extend_from_slice(MAGIC);
        for field in fields {
            header.extend_from_slice(format!("{field:08x}").as_bytes());
        }
        self.out.write_all(&header)?;
        self.out.write_all(name.as_bytes())?;
        self.out
            .write_all(&[0u8; 4][..1 + pad4(HEADER_LEN + namesize)])?;
        self.out.write_all(data)?;
        self.out.write_all(&[0u8; 3][..pad4(data.len())])
    }

    /// Writes the trailer and flushes.
    pub fn finish(mut self) -> io::Result<()> {
        self.raw_entry(0, TRAILER, 0, 1, &[])?;
        self.out.flush()
    }
}

/// One entry read back from an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveEntry {
    pub name: String,
    pub mode: u32,
    pub data: Vec<u8>,
}

/// Parses a newc archive up to its trailer (for tests and inspection).
pub fn read_archive(mut buf: &[u8]) -> io::Result<Vec<ArchiveEntry>> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    let mut entries = Vec::new();
    loop {
        if buf.len() < HEADER_LEN || &buf[..6] != MAGIC {
            return Err(bad("missing newc header"));
        }
        let field = |i: usize| -> io::Result<u32> {
            let text =
                std::str::from_utf8(&buf[6 + 8 * i..14 + 8 * i]).map_err(|_| bad("header"))?;
            u32::from_str_radix(text, 16).map_err(|_| bad("header field is not hex"))
        };
        let (mode, size, namesize) = (field(1)? as usize, field(6)? as usize, field(11)? as usize);
        let name_end = HEADER_LEN + namesize;
        let data_start = name_end + pad4(name_end);
        let data_end = data_start + size;
        if namesize == 0 || buf.len() < data_end {
            return Err(bad("truncated entry"));
        }
        let name = std::str::from_utf8(&buf[HEADER_LEN..name_end - 1])
            .map_err(|_| bad("name is not UTF-8"))?
            .to_string();
        if name == TRAILER {
            return Ok(entries);
        }
        entries.push(ArchiveEntry {
            name,
            mode: mode as u32,
            data: buf[data_start..data_end].to_vec(),
        });
        buf = &buf[(data_end + pad4(data_end)).min(buf.len())..];
    }
}

//! The virtio-vsock packet header (virtio 1.2 §5.10.6) and moving packets
//! between descriptor chains and host buffers.

use virtio_queue::DescriptorChain;
use vm_memory::{Bytes, GuestAddress, GuestMemory, GuestMemoryMmap};

/// Size of `struct virtio_vsock_hdr`.
pub const HDR_SIZE: usize = 44;
/// The largest payload one packet may carry.
pub const MAX_PAYLOAD: u32 = 64 * 1024;
/// The host's CID (`VMADDR_CID_HOST`).
pub const HOST_CID: u64 = 2;
/// `VIRTIO_VSOCK_TYPE_STREAM`, the only socket type the device supports.
pub const TYPE_STREAM: u16 = 1;

/// Packet operations.
pub mod op {
    pub const REQUEST: u16 = 1;
    pub const RESPONSE: u16 = 2;
    pub const RST: u16 = 3;
    pub const SHUTDOWN: u16 = 4;
    pub const RW: u16 = 5;
    pub const CREDIT_UPDATE: u16 = 6;
    pub const CREDIT_REQUEST: u16 = 7;
}

/// Flags of a SHUTDOWN packet.
pub mod shutdown {
    /// The sender will receive no more data.
    pub const RCV: u32 = 1;
    /// The sender will send no more data.
    pub const SEND: u32 = 2;
    pub const BOTH: u32 = RCV | SEND;
}

/// A packet header, in host byte order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Header {
    pub src_cid: u64,
    pub dst_cid: u64,
    pub src_port: u32,
    pub dst_port: u32,
    pub len: u32,
    pub type_: u16,
    pub op: u16,
    pub flags: u32,
    pub buf_alloc: u32,
    pub fwd_cnt: u32,
}

/// Why a packet or a buffer was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("the header is {0} bytes, shorter than {HDR_SIZE}")]
    ShortHeader(usize),
    #[error("payload length {0} is over {MAX_PAYLOAD}")]
    TooLong(u32),
    #[error("payload length {len} but the chain holds {available} payload bytes")]
    Truncated { len: u32, available: usize },
    #[error("socket type {0} is not STREAM")]
    BadType(u16),
    #[error("source cid {0} is not the guest's")]
    BadSrcCid(u64),
    #[error("unknown operation {0}")]
    UnknownOp(u16),
    #[error("a transmit chain has a device-writable descriptor")]
    WriteOnlyDescriptor,
    #[error("a receive chain has a device-readable descriptor")]
    ReadOnlyDescriptor,
    #[error("descriptor {addr:#x}+{len} lies outside guest memory")]
    BadMemory { addr: u64, len: u32 },
    #[error("a receive buffer of {0} bytes cannot hold a header")]
    SmallRxBuffer(u64),
}

impl Header {
    /// Decodes the first [`HDR_SIZE`] bytes of `b`.
    pub fn from_bytes(b: &[u8]) -> Result<Self, PacketError> {
        let b: &[u8; HDR_SIZE] = b
            .get(..HDR_SIZE)
            .and_then(|h| h.try_into().ok())
            .ok_or(PacketError::ShortHeader(b.len()))?;
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or_default());
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap_or_default());
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Ok(Self {
            src_cid: u64_at(0),
            dst_cid: u64_at(8),
            src_port: u32_at(16),
            dst_port: u32_at(20),
            len: u32_at(24),
            type_: u16_at(28),
            op: u16_at(30),
            flags: u32_at(32),
            buf_alloc: u32_at(36),
            fwd_cnt: u32_at(40),
        })
    }

    pub fn to_bytes(&self) -> [u8; HDR_SIZE] {
        let mut b = [0u8; HDR_SIZE];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.type_.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }
}

/// Parses and checks a packet the guest sent: `bytes` are the chain's
/// readable bytes (header, then payload). Returns the header and payload.
pub fn parse_tx(bytes: &[u8], guest_cid: u64) -> Result<(Header, &[u8]), PacketError> {
    let hdr = Header::from_bytes(bytes)?;
    if hdr.type_ != TYPE_STREAM {
        return Err(PacketError::BadType(hdr.type_));
    }
    if hdr.src_cid != guest_cid {
        return Err(PacketError::BadSrcCid(hdr.src_cid));
    }
    if !(op::REQUEST..=op::CREDIT_REQUEST).contains(&hdr.op) {
        return Err(PacketError::UnknownOp(hdr.op));
    }
    if hdr.len > MAX_PAYLOAD {
        return Err(PacketError::TooLong(hdr.len));
    }
    let available = bytes.len() - HDR_SIZE;
    let payload =
        bytes
            .get(HDR_SIZE..HDR_SIZE + hdr.len as usize)
            .ok_or(PacketError::Truncated {
                len: hdr.len,
                available,
            })?;
    Ok((hdr, payload))
}

/// The readable bytes of a transmit chain, at most a header and the largest
/// payload. Every descriptor must be device-readable and inside guest memory.
pub fn read_tx_chain(
    chain: DescriptorChain<&GuestMemoryMmap>,
    mem: &GuestMemoryMmap,
) -> Result<Vec<u8>, PacketError> {
    const CAP: usize = HDR_SIZE + MAX_PAYLOAD as usize;
    let mut bytes = Vec::new();
    for desc in chain {
        if desc.is_write_only() {
            return Err(PacketError::WriteOnlyDescriptor);
        }
        let bad = PacketError::BadMemory {
            addr: desc.addr().0,
            len: desc.len(),
        };
        if !mem.check_range(desc.addr(), desc.len() as usize) {
            return Err(bad);
        }
        let take = (desc.len() as usize).min(CAP - bytes.len());
        if take == 0 {
            continue;
        }
        let start = bytes.len();
        bytes.resize(start + take, 0);
        mem.read_slice(&mut bytes[start..], desc.addr())
            .map_err(|_| bad)?;
    }
    Ok(bytes)
}

/// The device-writable buffers of a receive chain.
pub fn rx_segments(
    chain: DescriptorChain<&GuestMemoryMmap>,
    mem: &GuestMemoryMmap,
) -> Result<Vec<(GuestAddress, u32)>, PacketError> {
    let mut segs = Vec::new();
    for desc in chain {
        if !desc.is_write_only() {
            return Err(PacketError::ReadOnlyDescriptor);
        }
        if !mem.check_range(desc.addr(), desc.len() as usize) {
            return Err(PacketError::BadMemory {
                addr: desc.addr().0,
                len: desc.len(),
            });
        }
        segs.push((desc.addr(), desc.len()));
    }
    Ok(segs)
}

/// Total bytes the segments hold.
pub fn capacity(segs: &[(GuestAddress, u32)]) -> u64 {
    segs.iter().map(|&(_, len)| u64::from(len)).sum()
}

/// Writes `parts` one after the other across `segs`; returns the bytes written.
pub fn write_rx(
    mem: &GuestMemoryMmap,
    segs: &[(GuestAddress, u32)],
    parts: &[&[u8]],
) -> Result<u32, PacketError> {
    let mut segs = segs.iter().copied();
    let mut current: Option<(GuestAddress, u32)> = None;
    let mut written = 0u32;
    for part in parts {
        let mut rest = *part;
        while !rest.is_empty() {
            let (addr, len) = match current.take().filter(|&(_, l)| l > 0) {
                Some(seg) => seg,
                None => match segs.next() {
                    Some(seg) => seg,
                    None => {
                        return Err(PacketError::SmallRxBuffer(u64::from(written)));
                    }
                },
            };
            if len == 0 {
                continue;
            }
            let n = rest.len().min(len as usize);
            mem.write_slice(&rest[..n], addr)
                .map_err(|_| PacketError::BadMemory { addr: addr.0, len })?;
            rest = &rest[n..];
            written += n as u32;
            current = Some((GuestAddress(addr.0 + n as u64), len - n as u32));
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr(op: u16, len: u32) -> Header {
        Header {
            src_cid: 3,
            dst_cid: HOST_CID,
            src_port: 1000,
            dst_port: 52,
            len,
            type_: TYPE_STREAM,
            op,
            flags: 0,
            buf_alloc: 4096,
            fwd_cnt: 7,
        }
    }

    fn packet(h: &Header, payload: &[u8]) -> Vec<u8> {
        let mut v = h.to_bytes().to_vec();
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn header_round_trips_little_endian() {
        let h = hdr(op::RW, 5);
        let b = h.to_bytes();
        assert_eq!(&b[0..8], &3u64.to_le_bytes());
        assert_eq!(&b[24..28], &5u32.to_le_bytes());
        assert_eq!(&b[30..32], &op::RW.to_le_bytes());
        assert_eq!(Header::from_bytes(&b), Ok(h));
    }

    #[test]
    fn accepts_good_packets() {
        let bytes = packet(&hdr(op::RW, 3), b"abcdef");
        let (h, payload) = parse_tx(&bytes, 3).unwrap();
        assert_eq!(h.op, op::RW);
        assert_eq!(payload, b"abc", "the payload is len bytes, not the rest");
        for o in op::REQUEST..=op::CREDIT_REQUEST {
            assert!(parse_tx(&packet(&hdr(o, 0), &[]), 3).is_ok());
        }
    }

    #[test]
    fn rejects_bad_packets() {
        let good = hdr(op::RW, 4);
        assert_eq!(
            parse_tx(&good.to_bytes()[..43], 3),
            Err(PacketError::ShortHeader(43))
        );
        assert_eq!(
            parse_tx(&packet(&good, b"abc"), 3),
            Err(PacketError::Truncated {
                len: 4,
                available: 3
            })
        );
        let too_long = hdr(op::RW, MAX_PAYLOAD + 1);
        assert_eq!(
            parse_tx(&packet(&too_long, &[]), 3),
            Err(PacketError::TooLong(MAX_PAYLOAD + 1))
        );
        let dgram = Header { type_: 2, ..good };
        assert_eq!(
            parse_tx(&packet(&dgram, b"abcd"), 3),
            Err(PacketError::BadType(2))
        );
        assert_eq!(
            parse_tx(&packet(&good, b"abcd"), 4),
            Err(PacketError::BadSrcCid(3))
        );
        for bad_op in [0, 8, 0xffff] {
            assert_eq!(
                parse_tx(&packet(&hdr(bad_op, 0), &[]), 3),
                Err(PacketError::UnknownOp(bad_op))
            );
        }
    }

    #[test]
    fn write_rx_spans_segments() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
        let segs = [
            (GuestAddress(0x100), 3),
            (GuestAddress(0x200), 0),
            (GuestAddress(0x300), 10),
        ];
        assert_eq!(write_rx(&mem, &segs, &[b"ab", b"cdefg"]), Ok(7));
        let mut out = [0u8; 4];
        mem.read_slice(&mut out, GuestAddress(0x300)).unwrap();
        assert_eq!(&out, b"defg");
        assert!(write_rx(&mem, &segs, &[&[0u8; 14]]).is_err());
    }
}

//! The Intel MultiProcessor Specification 1.4 table, which tells a guest
//! without ACPI about its CPUs, the I/O APIC and the ISA interrupt routing.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::layout::{APIC_BASE, IOAPIC_BASE, MPTABLE_START};

/// Number of I/O APIC pins, all routed from ISA IRQs of the same number.
pub const IOAPIC_PINS: u8 = 24;
/// Size of the MP floating pointer structure.
const MPF_SIZE: usize = 16;
/// Size of the configuration table header.
const MPC_HEADER_SIZE: usize = 44;
/// Local APIC version reported for every CPU.
const APIC_VERSION: u8 = 0x14;
/// I/O APIC version.
const IOAPIC_VERSION: u8 = 0x11;
/// Room the table may use (up to 640 KiB).
const MPTABLE_ROOM: usize = 0x400;

const ENTRY_PROCESSOR: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IOAPIC: u8 = 2;
const ENTRY_IOINT: u8 = 3;
const ENTRY_LINT: u8 = 4;
const INT_TYPE_INT: u8 = 0;
const INT_TYPE_NMI: u8 = 1;
const INT_TYPE_EXTINT: u8 = 3;
const CPU_ENABLED: u8 = 1;
const CPU_BOOTPROCESSOR: u8 = 2;

/// Errors of building or writing the MP table.
#[derive(Debug, thiserror::Error)]
pub enum MptableError {
    #[error("{0} vCPUs do not fit in the MP table")]
    TooManyCpus(u8),
    #[error("cannot write the MP table")]
    WriteMptable(#[source] vm_memory::GuestMemoryError),
}

/// The checksum byte that makes `bytes` sum to zero.
fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b)))
}

/// The I/O APIC's ID: the one after the last CPU.
pub fn ioapic_id(num_cpus: u8) -> u8 {
    num_cpus
}

/// Builds the floating pointer and configuration table for `num_cpus` CPUs
/// (APIC IDs `0..num_cpus`), as they are laid out from `base`.
pub fn build(num_cpus: u8, base: u64) -> Result<Vec<u8>, MptableError> {
    if num_cpus == 0 || num_cpus == u8::MAX {
        return Err(MptableError::TooManyCpus(num_cpus));
    }
    let mut body = Vec::new();
    let mut count: u16 = 0;
    for id in 0..num_cpus {
        let flags = CPU_ENABLED | if id == 0 { CPU_BOOTPROCESSOR } else { 0 };
        body.extend_from_slice(&[ENTRY_PROCESSOR, id, APIC_VERSION, flags]);
        body.extend_from_slice(&0x600u32.to_le_bytes()); // family 6 signature
        body.extend_from_slice(&0x201u32.to_le_bytes()); // FPU | APIC
        body.extend_from_slice(&[0u8; 8]);
        count += 1;
    }
    body.extend_from_slice(&[ENTRY_BUS, 0]);
    body.extend_from_slice(b"ISA   ");
    count += 1;
    let ioapic = ioapic_id(num_cpus);
    body.extend_from_slice(&[ENTRY_IOAPIC, ioapic, IOAPIC_VERSION, 1]);
    body.extend_from_slice(&IOAPIC_BASE.to_le_bytes());
    count += 1;
    for irq in 0..IOAPIC_PINS {
        body.extend_from_slice(&[ENTRY_IOINT, INT_TYPE_INT, 0, 0, 0, irq, ioapic, irq]);
        count += 1;
    }
    body.extend_from_slice(&[ENTRY_LINT, INT_TYPE_EXTINT, 0, 0, 0, 0, 0, 0]);
    body.extend_from_slice(&[ENTRY_LINT, INT_TYPE_NMI, 0, 0, 0, 0, 0xff, 1]);
    count += 2;

    let table_len = MPC_HEADER_SIZE + body.len();
    if MPF_SIZE + table_len > MPTABLE_ROOM {
        return Err(MptableError::TooManyCpus(num_cpus));
    }
    let mut mpc = Vec::with_capacity(table_len);
    mpc.extend_from_slice(b"PCMP");
    mpc.extend_from_slice(&(table_len as u16).to_le_bytes());
    mpc.extend_from_slice(&[4, 0]); // spec 1.4, checksum
    mpc.extend_from_slice(b"VESSEL  ");
    mpc.extend_from_slice(b"MICROVM     ");
    mpc.extend_from_slice(&0u32.to_le_bytes()); // OEM table pointer
    mpc.extend_from_slice(&0u16.to_le_bytes()); // OEM table size
    mpc.extend_from_slice(&count.to_le_bytes());
    mpc.extend_from_slice(&APIC_BASE.to_le_bytes());
    mpc.extend_from_slice(&0u32.to_le_bytes()); // extended length/checksum
    mpc.extend_from_slice(&body);
    mpc[7] = checksum(&mpc);

    let mut out = Vec::with_capacity(MPF_SIZE + table_len);
    out.extend_from_slice(b"_MP_");
    out.extend_from_slice(&((base + MPF_SIZE as u64) as u32).to_le_bytes());
    out.extend_from_slice(&[1, 4, 0, 0, 0, 0, 0, 0]);
    out[10] = checksum(&out[..MPF_SIZE]);
    out.extend_from_slice(&mpc);
    Ok(out)
}

/// Writes the MP table at [`MPTABLE_START`].
pub fn setup_mptable(mem: &GuestMemoryMmap, num_cpus: u8) -> Result<(), MptableError> {
    let bytes = build(num_cpus, MPTABLE_START)?;
    mem.write_slice(&bytes, GuestAddress(MPTABLE_START))
        .map_err(MptableError::WriteMptable)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |a, x| a.wrapping_add(*x))
    }

    #[test]
    fn checksums_and_pointer_are_valid() {
        for n in [1u8, 2, 7, 32] {
            let t = build(n, MPTABLE_START).unwrap();
            assert_eq!(&t[..4], b"_MP_");
            assert_eq!(sum(&t[..16]), 0);
            let ptr = u32::from_le_bytes(t[4..8].try_into().unwrap()) as u64;
            assert_eq!(ptr, MPTABLE_START + 16);
            let mpc = &t[16..];
            assert_eq!(&mpc[..4], b"PCMP");
            let len = u16::from_le_bytes([mpc[4], mpc[5]]) as usize;
            assert_eq!(len, mpc.len());
            assert_eq!(sum(mpc), 0);
            assert!(t.len() <= MPTABLE_ROOM);
        }
        assert!(build(0, MPTABLE_START).is_err());
    }

    #[test]
    fn table_lists_cpus_bus_ioapic_and_irqs() {
        let t = build(3, MPTABLE_START).unwrap();
        let mpc = &t[16..];
        let count = u16::from_le_bytes([mpc[34], mpc[35]]);
        assert_eq!(count, 3 + 1 + 1 + 24 + 2);
        let lapic = u32::from_le_bytes(mpc[36..40].try_into().unwrap());
        assert_eq!(lapic, APIC_BASE);
        let mut off = MPC_HEADER_SIZE;
        let (mut cpus, mut irqs, mut ioapics, mut buses) = (vec![], vec![], 0, 0);
        while off < mpc.len() {
            match mpc[off] {
                ENTRY_PROCESSOR => {
                    cpus.push((mpc[off + 1], mpc[off + 3]));
                    off += 20;
                }
                ENTRY_BUS => {
                    assert_eq!(&mpc[off + 2..off + 8], b"ISA   ");
                    buses += 1;
                    off += 8;
                }
                ENTRY_IOAPIC => {
                    assert_eq!(mpc[off + 1], 3);
                    ioapics += 1;
                    off += 8;
                }
                ENTRY_IOINT => {
                    assert_eq!(mpc[off + 5], mpc[off + 7]);
                    assert_eq!(mpc[off + 6], 3);
                    irqs.push(mpc[off + 5]);
                    off += 8;
                }
                ENTRY_LINT => off += 8,
                other => panic!("unexpected entry {other}"),
            }
        }
        assert_eq!(cpus, vec![(0, 3), (1, 1), (2, 1)]);
        assert_eq!(irqs, (0..24).collect::<Vec<u8>>());
        assert_eq!((ioapics, buses), (1, 1));
    }
}

//! Guest physical memory: RAM regions around the 32-bit MMIO gap, and the
//! e820 map the guest is given.

use vm_memory::{GuestAddress, GuestMemoryMmap};

/// Start of the 32-bit MMIO gap (3 GiB); RAM beyond it continues at 4 GiB.
pub const MMIO_GAP_START: u64 = 0xC000_0000;
/// End of the 32-bit MMIO gap (4 GiB).
pub const MMIO_GAP_END: u64 = 0x1_0000_0000;
/// End of conventional memory usable by the guest; the MP table sits above.
pub const EBDA_START: u64 = 0x9_FC00;
/// Start of high memory (1 MiB).
pub const HIGH_MEMORY_START: u64 = 0x10_0000;

/// e820 entry types.
pub const E820_RAM: u32 = 1;
/// Reserved e820 range.
pub const E820_RESERVED: u32 = 2;

/// Errors of creating guest memory.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("cannot map guest memory")]
    MapMemory(#[source] vm_memory::mmap::FromRangesError),
}

/// One e820 map entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct E820Entry {
    pub addr: u64,
    pub size: u64,
    pub kind: u32,
}

/// The RAM regions (start, size) for `size` bytes of guest memory: one region
/// below the MMIO gap and, for large guests, one above 4 GiB.
pub fn ram_regions(size: u64) -> Vec<(GuestAddress, usize)> {
    let low = size.min(MMIO_GAP_START);
    let mut regions = vec![(GuestAddress(0), low as usize)];
    if size > MMIO_GAP_START {
        regions.push((GuestAddress(MMIO_GAP_END), (size - MMIO_GAP_START) as usize));
    }
    regions
}

/// Maps anonymous guest memory of `size` bytes.
pub fn create_guest_memory(size: u64) -> Result<GuestMemoryMmap, MemoryError> {
    GuestMemoryMmap::from_ranges(&ram_regions(size)).map_err(MemoryError::MapMemory)
}

/// The e820 map for `size` bytes of guest memory.
pub fn e820_map(size: u64) -> Vec<E820Entry> {
    let mut map = vec![
        E820Entry {
            addr: 0,
            size: EBDA_START,
            kind: E820_RAM,
        },
        E820Entry {
            addr: EBDA_START,
            size: HIGH_MEMORY_START - EBDA_START,
            kind: E820_RESERVED,
        },
    ];
    let low_end = size.min(MMIO_GAP_START);
    map.push(E820Entry {
        addr: HIGH_MEMORY_START,
        size: low_end - HIGH_MEMORY_START,
        kind: E820_RAM,
    });
    map.push(E820Entry {
        addr: MMIO_GAP_START,
        size: MMIO_GAP_END - MMIO_GAP_START,
        kind: E820_RESERVED,
    });
    if size > MMIO_GAP_START {
        map.push(E820Entry {
            addr: MMIO_GAP_END,
            size: size - MMIO_GAP_START,
            kind: E820_RAM,
        });
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    fn ram_total(map: &[E820Entry]) -> u64 {
        map.iter()
            .filter(|e| e.kind == E820_RAM)
            .map(|e| e.size)
            .sum()
    }

    #[test]
    fn small_guest_has_one_region_and_reserves_the_gap() {
        for size in [64 * MIB, 128 * MIB, 256 * MIB, 2 * GIB, 3 * GIB] {
            assert_eq!(ram_regions(size), vec![(GuestAddress(0), size as usize)]);
            let map = e820_map(size);
            assert_eq!(map.len(), 4, "{size}");
            assert_eq!(map[2].addr, HIGH_MEMORY_START);
            assert_eq!(map[2].addr + map[2].size, size);
            assert_eq!(
                map[3],
                E820Entry {
                    addr: MMIO_GAP_START,
                    size: GIB,
                    kind: E820_RESERVED
                }
            );
            assert_eq!(ram_total(&map), size - (HIGH_MEMORY_START - EBDA_START));
        }
    }

    #[test]
    fn large_guest_continues_above_4g() {
        let size = 8 * GIB;
        let regions = ram_regions(size);
        assert_eq!(regions.len(), 2);
        assert_eq!(regions[1], (GuestAddress(4 * GIB), (5 * GIB) as usize));
        let map = e820_map(size);
        assert_eq!(map.len(), 5);
        assert_eq!(map[4].addr, 4 * GIB);
        assert_eq!(map[4].size, 5 * GIB);
        // Entries are sorted and do not overlap.
        for w in map.windows(2) {
            assert!(w[0].addr + w[0].size <= w[1].addr);
        }
    }
}

//! Fixed guest-physical addresses used while booting.

/// GDT location.
pub const GDT_START: u64 = 0x500;
/// IDT location (an empty IDT).
pub const IDT_START: u64 = 0x520;
/// Zero page (`struct boot_params`).
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Initial stack pointer of the boot vCPU.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Page map level 4 table.
pub const PML4_START: u64 = 0x9000;
/// Page directory pointer table.
pub const PDPTE_START: u64 = 0xa000;
/// Page directory (2 MiB pages for the first GiB).
pub const PDE_START: u64 = 0xb000;
/// Kernel command line.
pub const CMDLINE_START: u64 = 0x20000;
/// MP floating pointer and configuration table.
pub const MPTABLE_START: u64 = crate::memory::EBDA_START;
/// Local APIC base.
pub const APIC_BASE: u32 = 0xfee0_0000;
/// I/O APIC base.
pub const IOAPIC_BASE: u32 = 0xfec0_0000;
/// KVM's TSS (three pages, in the MMIO gap).
pub const KVM_TSS_ADDRESS: u64 = 0xfffb_d000;
/// KVM's identity-map page (one page just below the TSS).
pub const KVM_IDENTITY_MAP_ADDRESS: u64 = 0xfffb_c000;
/// First virtio-mmio window, in the 32-bit MMIO gap; each device gets 4 KiB.
pub const VIRTIO_MMIO_BASE: u64 = 0xd000_0000;
/// IOAPIC pin of the first virtio device (serial uses 4).
pub const VIRTIO_IRQ_BASE: u32 = 5;

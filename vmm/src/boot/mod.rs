//! Booting Linux: loading the kernel and initrd, and writing the structures
//! the 64-bit boot protocol expects (zero page, GDT, page tables, MP table).

pub mod layout;
pub mod loader;
pub mod mptable;
pub mod params;
pub mod tables;

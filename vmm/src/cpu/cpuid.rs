//! CPUID as the guest sees it: KVM's supported set, less the host profile's
//! masked features, with per-vCPU APIC IDs and topology.

use kvm_bindings::kvm_cpuid_entry2;

use crate::profile::{CpuidFeature, CpuidReg};

/// Leaf 1 ECX bit 31: running under a hypervisor.
const LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;
/// Leaf 1 EDX bit 28: the logical-processor count in EBX[23:16] is valid.
const LEAF1_EDX_HTT: u32 = 1 << 28;

/// Clears every masked feature bit in `entries`.
pub fn mask_features(entries: &mut [kvm_cpuid_entry2], masked: &[CpuidFeature]) {
    for f in masked {
        for e in entries
            .iter_mut()
            .filter(|e| e.function == f.leaf && e.index == f.subleaf)
        {
            let reg = match f.reg {
                CpuidReg::Eax => &mut e.eax,
                CpuidReg::Ebx => &mut e.ebx,
                CpuidReg::Ecx => &mut e.ecx,
                CpuidReg::Edx => &mut e.edx,
            };
            *reg &= !(1u32 << f.bit);
        }
    }
}

/// Bits needed to number `n` items.
fn bits_for(n: u8) -> u32 {
    if n <= 1 {
        0
    } else {
        u32::from(n - 1).ilog2() + 1
    }
}

/// Sets the APIC IDs and a one-thread-per-core topology for vCPU `id` of
/// `count`.
pub fn set_topology(entries: &mut [kvm_cpuid_entry2], id: u8, count: u8) {
    for e in entries.iter_mut() {
        match e.function {
            1 => {
                e.ebx = (e.ebx & 0x0000_ffff) | (u32::from(id) << 24) | (u32::from(count) << 16);
                e.ecx |= LEAF1_ECX_HYPERVISOR;
                e.edx |= LEAF1_EDX_HTT;
            }
            0xb | 0x1f => {
                e.edx = u32::from(id);
                match e.index {
                    0 => {
                        e.eax = 0;
                        e.ebx = 1;
                        e.ecx = 1 << 8;
                    }
                    1 => {
                        e.eax = bits_for(count);
                        e.ebx = u32::from(count);
                        e.ecx = (2 << 8) | 1;
                    }
                    n => {
                        e.eax = 0;
                        e.ebx = 0;
                        e.ecx = n & 0xff;
                    }
                }
            }
            // AMD: core count and APIC ID size, which Linux reads first.
            0x8000_0008 => {
                e.ecx = (e.ecx & !0xf0ff) | (bits_for(count) << 12) | u32::from(count - 1);
            }
            _ => {}
        }
    }
}

/// The guest CPUID for vCPU `id` of `count`: `supported` filtered.
pub fn guest_cpuid(
    supported: &[kvm_cpuid_entry2],
    masked: &[CpuidFeature],
    id: u8,
    count: u8,
) -> Vec<kvm_cpuid_entry2> {
    let mut entries = supported.to_vec();
    mask_features(&mut entries, masked);
    set_topology(&mut entries, id, count);
    entries
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::HostProfile;

    fn entry(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            eax: u32::MAX,
            ebx: u32::MAX,
            ecx: u32::MAX,
            edx: u32::MAX,
            ..Default::default()
        }
    }

    #[test]
    fn masked_bits_are_cleared_and_nothing_else() {
        let fake = vec![
            entry(0, 0),
            entry(1, 0),
            entry(7, 0),
            entry(7, 1),
            entry(0xb, 0),
        ];
        let masked = HostProfile::EmulatedCpl0.masked_cpuid();
        let mut out = fake.clone();
        mask_features(&mut out, masked);
        assert_eq!(out[1].ecx & (1 << 13), 0, "cx16");
        assert_eq!(out[1].ecx & (1 << 26), 0, "xsave");
        assert_eq!(out[1].ecx & (1 << 23), 0, "popcnt");
        assert_eq!(out[1].ecx | (1 << 13) | (1 << 26) | (1 << 23), u32::MAX);
        assert_eq!(out[2].ebx, !((1 << 20) | (1 << 9)), "smap, erms");
        assert_eq!(
            out[2].edx,
            !((1 << 4) | (1 << 29)),
            "fsrm, arch-capabilities"
        );
        // Subleaf 1 of leaf 7 and other leaves untouched.
        assert_eq!(out[3], fake[3]);
        assert_eq!(out[0], fake[0]);
        assert_eq!(out[4], fake[4]);

        let mut hw = fake.clone();
        mask_features(&mut hw, HostProfile::Hardware.masked_cpuid());
        assert_eq!(hw, fake);
    }

    #[test]
    fn apic_ids_are_per_vcpu() {
        let fake = vec![
            entry(1, 0),
            entry(0xb, 0),
            entry(0xb, 1),
            entry(0x1f, 1),
            entry(0x8000_0008, 0),
        ];
        let out = guest_cpuid(&fake, HostProfile::EmulatedCpl0.masked_cpuid(), 3, 4);
        assert_eq!(out[0].ebx >> 24, 3);
        assert_eq!((out[0].ebx >> 16) & 0xff, 4);
        assert_eq!(out[0].ecx & (1 << 13), 0);
        assert_eq!(out[1].edx, 3);
        assert_eq!((out[1].eax, out[1].ebx), (0, 1));
        assert_eq!((out[2].eax, out[2].ebx, out[2].edx), (2, 4, 3));
        assert_eq!(out[3].edx, 3);
        assert_eq!(out[4].ecx & 0xf0ff, (2 << 12) | 3);
        assert_eq!(bits_for(1), 0);
        assert_eq!(bits_for(2), 1);
        assert_eq!(bits_for(5), 3);
    }
}

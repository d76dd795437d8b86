//! The MSR boot state every vCPU starts with.

use kvm_bindings::{kvm_msr_entry, Msrs};
use kvm_ioctls::VcpuFd;
use tracing::warn;

/// MSR indices.
pub const MSR_IA32_TSC: u32 = 0x10;
pub const MSR_IA32_SYSENTER_CS: u32 = 0x174;
pub const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
pub const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
pub const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
pub const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
pub const MSR_STAR: u32 = 0xc000_0081;
pub const MSR_LSTAR: u32 = 0xc000_0082;
pub const MSR_CSTAR: u32 = 0xc000_0083;
pub const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
pub const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;

/// IA32_MISC_ENABLE: fast string operations.
const MISC_ENABLE_FAST_STRING: u64 = 1;
/// MTRRs enabled, default type write-back.
const MTRR_DEF_TYPE_WB_ENABLED: u64 = (1 << 11) | 6;

/// Errors of setting MSRs.
#[derive(Debug, thiserror::Error)]
pub enum MsrError {
    #[error("cannot build the MSR list")]
    BuildMsrs(#[source] vmm_sys_util::fam::Error),
}

/// The boot MSR values.
pub fn boot_msrs() -> Vec<kvm_msr_entry> {
    [
        (MSR_IA32_SYSENTER_CS, 0),
        (MSR_IA32_SYSENTER_ESP, 0),
        (MSR_IA32_SYSENTER_EIP, 0),
        (MSR_STAR, 0),
        (MSR_CSTAR, 0),
        (MSR_KERNEL_GS_BASE, 0),
        (MSR_SYSCALL_MASK, 0),
        (MSR_LSTAR, 0),
        (MSR_IA32_TSC, 0),
        (MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
        (MSR_MTRR_DEF_TYPE, MTRR_DEF_TYPE_WB_ENABLED),
    ]
    .into_iter()
    .map(|(index, data)| kvm_msr_entry {
        index,
        data,
        ..Default::default()
    })
    .collect()
}

/// Sets the boot MSRs. KVM stops at the first MSR it refuses; those are
/// logged and skipped, since hosts differ in what they support. Returns how
/// many were set.
pub fn set_boot_msrs(vcpu: &VcpuFd, id: u8) -> Result<usize, MsrError> {
    let mut pending = boot_msrs();
    let mut set = 0;
    while !pending.is_empty() {
        let msrs = Msrs::from_entries(&pending).map_err(MsrError::BuildMsrs)?;
        match vcpu.set_msrs(&msrs) {
            Ok(n) if n >= pending.len() => {
                set += n;
                break;
            }
            Ok(n) => {
                set += n;
                warn!(
                    vcpu = id,
                    msr = format_args!("{:#x}", pending[n].index),
                    "MSR refused"
                );
                pending.drain(..=n);
            }
            Err(error) => {
                warn!(vcpu = id, %error, "cannot set MSRs");
                break;
            }
        }
    }
    Ok(set)
}

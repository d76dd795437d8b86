//! A vCPU's state for snapshots: everything the guest can observe of one
//! CPU, saved from KVM and put back into a fresh vCPU.
//!
//! The save runs on the vCPU's own thread while the VM is paused (see
//! [`super::control::VcpuControl::save_vcpus`]), after one `KVM_RUN` with
//! `immediate_exit` set so KVM finishes an I/O instruction whose exit we
//! handled but the guest has not seen completed.
//!
//! The order of the restore follows KVM's dependencies: CPUID before
//! anything that checks features; MP state; registers before vCPU events
//! (`KVM_SET_REGS` drops a pending exception, the events bring it back);
//! special registers before the LAPIC (they hold the APIC base); the LAPIC
//! before the MSRs (the TSC deadline takes only with the LAPIC in place),
//! and among the MSRs the TSC before the TSC deadline; vCPU events last.

use kvm_bindings::{
    kvm_cpuid_entry2, kvm_debugregs, kvm_fpu, kvm_lapic_state, kvm_mp_state, kvm_msr_entry,
    kvm_regs, kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave, CpuId, Msrs, KVM_MAX_CPUID_ENTRIES,
};
use kvm_ioctls::{Cap, Kvm, VcpuFd};
use serde::{Deserialize, Serialize};
use tracing::debug;

use super::msr;

/// Words in `kvm_xsave::region`.
pub const XSAVE_WORDS: usize = 1024;
/// The most MSRs one `KVM_GET_MSRS`/`KVM_SET_MSRS` carries.
const MSR_CHUNK: usize = 256;

/// MSR ranges (first, count) a snapshot carries when KVM lists them: what
/// a Linux guest programs and reads back. Feature and capability MSRs are
/// left out (they follow CPUID), and so are x2APIC registers (the LAPIC
/// state holds them).
const SAVED_MSR_RANGES: &[(u32, u32)] = &[
    (msr::MSR_IA32_TSC, 1),
    (0x11, 2),  // MSR_KVM_WALL_CLOCK, MSR_KVM_SYSTEM_TIME (old numbers)
    (0x3b, 1),  // IA32_TSC_ADJUST
    (0x48, 1),  // IA32_SPEC_CTRL
    (0x140, 1), // MISC_FEATURES_ENABLES
    (msr::MSR_IA32_SYSENTER_CS, 3),
    (msr::MSR_IA32_MISC_ENABLE, 1),
    (0x1d9, 1),     // IA32_DEBUGCTL
    (0x200, 0x100), // MTRRs, PAT, MTRR_DEF_TYPE
    (MSR_IA32_TSC_DEADLINE, 1),
    (0xc000_0080, 5), // EFER, STAR, LSTAR, CSTAR, SYSCALL_MASK
    (0xc000_0100, 4), // FS_BASE, GS_BASE, KERNEL_GS_BASE, TSC_AUX
    (0xc001_0015, 1), // K7_HWCR
    (0x4b56_4d00, 7), // KVM paravirtual: clocks, async PF, steal time, PV EOI, poll control
];
/// MSRs saved even where KVM does not list them (it emulates them all the
/// same): the boot state sets them.
const ALWAYS_SAVED_MSRS: &[u32] = &[msr::MSR_MTRR_DEF_TYPE];
/// IA32_TSC_DEADLINE: restored after the TSC, which it is measured against.
pub const MSR_IA32_TSC_DEADLINE: u32 = 0x6e0;

/// Errors of saving or restoring a vCPU.
#[derive(Debug, thiserror::Error)]
pub enum VcpuStateError {
    #[error("cannot get the MSR index list")]
    GetMsrIndexList(#[source] kvm_ioctls::Error),
    #[error("cannot finish the vCPU's pending I/O")]
    CompleteIo(#[source] kvm_ioctls::Error),
    #[error("cannot get {0}")]
    Get(&'static str, #[source] kvm_ioctls::Error),
    #[error("cannot set {0}")]
    Set(&'static str, #[source] kvm_ioctls::Error),
    #[error("cannot build the {0} list")]
    BuildList(&'static str, #[source] vmm_sys_util::fam::Error),
    #[error("KVM refused MSR {0:#x}")]
    SetMsr(u32),
    #[error("the xsave area has {0} words, not {XSAVE_WORDS}")]
    XsaveSize(usize),
    #[error("the snapshot has xsave state but this host's KVM cannot take it (no KVM_CAP_XSAVE)")]
    NoXsave,
    #[error("the snapshot has extended control registers but this host's KVM cannot take them (no KVM_CAP_XCRS)")]
    NoXcrs,
}

/// The vCPU ioctls this host's KVM has, checked once per VM.
#[derive(Debug, Clone, Default)]
pub struct VcpuCaps {
    pub xsave: bool,
    pub xcrs: bool,
    /// The MSRs to save: [`SAVED_MSR_RANGES`] that KVM lists, TSC first
    /// and TSC deadline last.
    pub msrs: Vec<u32>,
}

impl VcpuCaps {
    /// What `kvm` supports.
    pub fn detect(kvm: &Kvm) -> Result<Self, VcpuStateError> {
        let listed = kvm
            .get_msr_index_list()
            .map_err(VcpuStateError::GetMsrIndexList)?;
        Ok(Self {
            xsave: kvm.check_extension(Cap::Xsave),
            xcrs: kvm.check_extension(Cap::Xcrs),
            msrs: msrs_to_save(listed.as_slice()),
        })
    }
}

/// The MSRs of `listed` a snapshot carries, and [`ALWAYS_SAVED_MSRS`], in
/// restore order.
pub fn msrs_to_save(listed: &[u32]) -> Vec<u32> {
    let mut msrs: Vec<u32> = listed
        .iter()
        .copied()
        .filter(|&index| {
            SAVED_MSR_RANGES
                .iter()
                .any(|&(first, count)| (first..first.saturating_add(count)).contains(&index))
        })
        .chain(ALWAYS_SAVED_MSRS.iter().copied())
        .collect();
    msrs.sort_unstable();
    msrs.dedup();
    // The TSC first, its deadline last.
    msrs.sort_by_key(|&index| match index {
        msr::MSR_IA32_TSC => 0,
        MSR_IA32_TSC_DEADLINE => 2,
        _ => 1,
    });
    msrs
}

/// One MSR's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MsrValue {
    pub index: u32,
    pub data: u64,
}

/// `kvm_fpu`, which kvm-bindings does not serialise.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FpuState {
    pub fpr: [[u8; 16]; 8],
    pub fcw: u16,
    pub fsw: u16,
    pub ftwx: u8,
    pub last_opcode: u16,
    pub last_ip: u64,
    pub last_dp: u64,
    pub xmm: [[u8; 16]; 16],
    pub mxcsr: u32,
}

impl From<&kvm_fpu> for FpuState {
    fn from(f: &kvm_fpu) -> Self {
        Self {
            fpr: f.fpr,
            fcw: f.fcw,
            fsw: f.fsw,
            ftwx: f.ftwx,
            last_opcode: f.last_opcode,
            last_ip: f.last_ip,
            last_dp: f.last_dp,
            xmm: f.xmm,
            mxcsr: f.mxcsr,
        }
    }
}

impl From<&FpuState> for kvm_fpu {
    fn from(f: &FpuState) -> Self {
        kvm_fpu {
            fpr: f.fpr,
            fcw: f.fcw,
            fsw: f.fsw,
            ftwx: f.ftwx,
            last_opcode: f.last_opcode,
            last_ip: f.last_ip,
            last_dp: f.last_dp,
            xmm: f.xmm,
            mxcsr: f.mxcsr,
            ..Default::default()
        }
    }
}

/// Everything of one vCPU a snapshot holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct VcpuState {
    pub id: u8,
    pub cpuid: Vec<kvm_cpuid_entry2>,
    pub mp_state: kvm_mp_state,
    pub regs: kvm_regs,
    pub sregs: kvm_sregs,
    pub fpu: FpuState,
    /// `kvm_xsave::region`, where KVM has `KVM_CAP_XSAVE`.
    pub xsave: Option<Vec<u32>>,
    /// Where KVM has `KVM_CAP_XCRS`.
    pub xcrs: Option<kvm_xcrs>,
    pub debug_regs: kvm_debugregs,
    pub lapic: kvm_lapic_state,
    pub msrs: Vec<MsrValue>,
    pub vcpu_events: kvm_vcpu_events,
}

/// Lets KVM finish an I/O exit the guest has not seen completed, without
/// running guest code: `KVM_RUN` with `immediate_exit` returns `EINTR`
/// right after.
pub fn complete_pending_io(fd: &mut VcpuFd) -> Result<(), VcpuStateError> {
    fd.set_kvm_immediate_exit(1);
    let result = match fd.run() {
        Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => Ok(()),
        Err(e) => Err(VcpuStateError::CompleteIo(e)),
        // Nothing ran: any exit here is KVM's answer to the empty run.
        Ok(_) => Ok(()),
    };
    fd.set_kvm_immediate_exit(0);
    result
}

/// Reads the MSRs of `indices`; those KVM will not read are left out and
/// logged (hosts differ).
fn get_msrs(fd: &VcpuFd, id: u8, indices: &[u32]) -> Result<Vec<MsrValue>, VcpuStateError> {
    let mut values = Vec::with_capacity(indices.len());
    let mut pending: Vec<u32> = indices.to_vec();
    while !pending.is_empty() {
        let take = pending.len().min(MSR_CHUNK);
        let entries: Vec<kvm_msr_entry> = pending[..take]
            .iter()
            .map(|&index| kvm_msr_entry {
                index,
                ..Default::default()
            })
            .collect();
        let mut msrs =
            Msrs::from_entries(&entries).map_err(|e| VcpuStateError::BuildList("MSR", e))?;
        let read = fd
            .get_msrs(&mut msrs)
            .map_err(|e| VcpuStateError::Get("MSRs", e))?;
        values.extend(msrs.as_slice()[..read.min(take)].iter().map(|e| MsrValue {
            index: e.index,
            data: e.data,
        }));
        if read < take {
            debug!(
                vcpu = id,
                msr = format_args!("{:#x}", pending[read]),
                "MSR not saved: KVM will not read it"
            );
            pending.drain(..=read);
        } else {
            pending.drain(..take);
        }
    }
    Ok(values)
}

/// KVM can read the TSC deadline back as 0 when the timer fired just
/// before the pause and its interrupt had not yet reached the LAPIC (other
/// VMMs met this); that interrupt is in neither the LAPIC state nor the
/// vCPU events, and a restored idle guest would wait for it forever. A
/// zero deadline is saved as the current TSC instead, so the restored vCPU
/// takes a timer interrupt at once; for a guest whose timer was really
/// off, that is one spurious tick, which Linux ignores.
fn keep_tsc_deadline(msrs: &mut [MsrValue]) {
    let Some(tsc) = msrs
        .iter()
        .find(|m| m.index == msr::MSR_IA32_TSC)
        .map(|m| m.data)
    else {
        return;
    };
    for m in msrs
        .iter_mut()
        .filter(|m| m.index == MSR_IA32_TSC_DEADLINE && m.data == 0)
    {
        debug!(tsc, "TSC deadline 0 saved as the TSC");
        m.data = tsc;
    }
}

/// Writes `values` in order; every one must take.
fn set_msrs(fd: &VcpuFd, values: &[MsrValue]) -> Result<(), VcpuStateError> {
    for chunk in values.chunks(MSR_CHUNK) {
        let entries: Vec<kvm_msr_entry> = chunk
            .iter()
            .map(|v| kvm_msr_entry {
                index: v.index,
                data: v.data,
                ..Default::default()
            })
            .collect();
        let msrs = Msrs::from_entries(&entries).map_err(|e| VcpuStateError::BuildList("MSR", e))?;
        let set = fd
            .set_msrs(&msrs)
            .map_err(|e| VcpuStateError::Set("MSRs", e))?;
        if let Some(refused) = chunk.get(set) {
            return Err(VcpuStateError::SetMsr(refused.index));
        }
    }
    Ok(())
}

/// Saves vCPU `id`. The VM must be paused and [`complete_pending_io`] done.
pub fn save(fd: &VcpuFd, id: u8, caps: &VcpuCaps) -> Result<VcpuState, VcpuStateError> {
    // KVM_GET_MP_STATE may take pending LAPIC events, changing the LAPIC:
    // it comes first. The vCPU events come last.
    let mp_state = fd
        .get_mp_state()
        .map_err(|e| VcpuStateError::Get("MP state", e))?;
    let regs = fd
        .get_regs()
        .map_err(|e| VcpuStateError::Get("registers", e))?;
    let sregs = fd
        .get_sregs()
        .map_err(|e| VcpuStateError::Get("special registers", e))?;
    let fpu = fd.get_fpu().map_err(|e| VcpuStateError::Get("FPU", e))?;
    let xsave = if caps.xsave {
        let xsave: kvm_xsave = fd
            .get_xsave()
            .map_err(|e| VcpuStateError::Get("xsave", e))?;
        Some(xsave.region.to_vec())
    } else {
        None
    };
    let xcrs = if caps.xcrs {
        Some(fd.get_xcrs().map_err(|e| VcpuStateError::Get("XCRs", e))?)
    } else {
        None
    };
    let debug_regs = fd
        .get_debug_regs()
        .map_err(|e| VcpuStateError::Get("debug registers", e))?;
    let lapic = fd
        .get_lapic()
        .map_err(|e| VcpuStateError::Get("LAPIC", e))?;
    let cpuid = fd
        .get_cpuid2(KVM_MAX_CPUID_ENTRIES)
        .map_err(|e| VcpuStateError::Get("CPUID", e))?;
    let mut msrs = get_msrs(fd, id, &caps.msrs)?;
    keep_tsc_deadline(&mut msrs);
    let vcpu_events = fd
        .get_vcpu_events()
        .map_err(|e| VcpuStateError::Get("vCPU events", e))?;
    Ok(VcpuState {
        id,
        cpuid: cpuid.as_slice().to_vec(),
        mp_state,
        regs,
        sregs,
        fpu: FpuState::from(&fpu),
        xsave,
        xcrs,
        debug_regs,
        lapic,
        msrs,
        vcpu_events,
    })
}

/// Puts `state` into the fresh vCPU `fd`.
pub fn restore(fd: &VcpuFd, state: &VcpuState, caps: &VcpuCaps) -> Result<(), VcpuStateError> {
    if state.xsave.is_some() && !caps.xsave {
        return Err(VcpuStateError::NoXsave);
    }
    if state.xcrs.is_some() && !caps.xcrs {
        return Err(VcpuStateError::NoXcrs);
    }
    let cpuid =
        CpuId::from_entries(&state.cpuid).map_err(|e| VcpuStateError::BuildList("CPUID", e))?;
    fd.set_cpuid2(&cpuid)
        .map_err(|e| VcpuStateError::Set("CPUID", e))?;
    fd.set_mp_state(state.mp_state)
        .map_err(|e| VcpuStateError::Set("MP state", e))?;
    fd.set_regs(&state.regs)
        .map_err(|e| VcpuStateError::Set("registers", e))?;
    fd.set_sregs(&state.sregs)
        .map_err(|e| VcpuStateError::Set("special registers", e))?;
    fd.set_fpu(&kvm_fpu::from(&state.fpu))
        .map_err(|e| VcpuStateError::Set("FPU", e))?;
    if let Some(region) = &state.xsave {
        let region: [u32; XSAVE_WORDS] = region
            .as_slice()
            .try_into()
            .map_err(|_| VcpuStateError::XsaveSize(region.len()))?;
        let xsave = kvm_xsave {
            region,
            extra: Default::default(),
        };
        // SAFETY: `xsave` is a whole `kvm_xsave` of the legacy size, which
        // is all KVM_SET_XSAVE reads without KVM_CAP_XSAVE2 enabled (we
        // never enable it).
        unsafe { fd.set_xsave(&xsave) }.map_err(|e| VcpuStateError::Set("xsave", e))?;
    }
    if let Some(xcrs) = &state.xcrs {
        fd.set_xcrs(xcrs)
            .map_err(|e| VcpuStateError::Set("XCRs", e))?;
    }
    fd.set_debug_regs(&state.debug_regs)
        .map_err(|e| VcpuStateError::Set("debug registers", e))?;
    fd.set_lapic(&state.lapic)
        .map_err(|e| VcpuStateError::Set("LAPIC", e))?;
    set_msrs(fd, &state.msrs)?;
    fd.set_vcpu_events(&state.vcpu_events)
        .map_err(|e| VcpuStateError::Set("vCPU events", e))?;
    // Tells a guest with kvmclock that it was stopped, so its soft-lockup
    // watchdog does not count the pause. KVM refuses this when the guest
    // has not set kvmclock up; that changes nothing.
    if let Err(error) = fd.kvmclock_ctrl() {
        debug!(vcpu = state.id, %error, "KVM_KVMCLOCK_CTRL");
    }
    Ok(())
}

#[cfg(test)]
#[path = "snapshot_tests.rs"]
mod tests;

//! One vCPU: its configuration and the thread loop running `KVM_RUN`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;

use kvm_bindings::{kvm_lapic_state, CpuId};
use kvm_ioctls::{VcpuExit, VcpuFd, VmFd};
use tracing::{debug, error, info, warn};

use super::control::VcpuControl;
use super::snapshot::{self, VcpuCaps};
use super::{cpuid, msr};
use crate::boot::tables;
use crate::devices::{Bus, DeviceAction};
use crate::profile::CpuidFeature;

const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

/// Errors of creating or configuring a vCPU.
#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    #[error("cannot create vCPU {0}")]
    CreateVcpu(u8, #[source] kvm_ioctls::Error),
    #[error("cannot build the CPUID table")]
    BuildCpuid(#[source] vmm_sys_util::fam::Error),
    #[error("cannot set CPUID")]
    SetCpuid(#[source] kvm_ioctls::Error),
    #[error("cannot set MSRs")]
    SetMsrs(#[source] msr::MsrError),
    #[error("cannot get special registers")]
    GetSregs(#[source] kvm_ioctls::Error),
    #[error("cannot set special registers")]
    SetSregs(#[source] kvm_ioctls::Error),
    #[error("cannot set registers")]
    SetRegs(#[source] kvm_ioctls::Error),
    #[error("cannot set FPU state")]
    SetFpu(#[source] kvm_ioctls::Error),
    #[error("cannot get the local APIC")]
    GetLapic(#[source] kvm_ioctls::Error),
    #[error("cannot set the local APIC")]
    SetLapic(#[source] kvm_ioctls::Error),
}

/// Why the VM stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmExit {
    /// The guest reset through the i8042 (its way of rebooting).
    Reset,
    /// Triple fault or shutdown.
    Shutdown,
    /// Every vCPU halted.
    AllHalted,
    /// Stopped through the API.
    Stopped,
    /// A vCPU failed.
    Error(String),
}

/// A configured vCPU.
pub struct Vcpu {
    fd: VcpuFd,
    id: u8,
    /// What its state saves need to know of KVM.
    caps: Arc<VcpuCaps>,
}

fn lapic_reg(l: &kvm_lapic_state, off: usize) -> u32 {
    let b = &l.regs[off..off + 4];
    u32::from_le_bytes([b[0] as u8, b[1] as u8, b[2] as u8, b[3] as u8])
}

fn set_lapic_reg(l: &mut kvm_lapic_state, off: usize, v: u32) {
    for (i, b) in v.to_le_bytes().into_iter().enumerate() {
        l.regs[off + i] = b as _;
    }
}

/// An LVT value with delivery mode `mode`.
fn lvt_mode(reg: u32, mode: u32) -> u32 {
    (reg & !0x700) | (mode << 8)
}

impl Vcpu {
    /// Creates vCPU `id` with no state set: a snapshot's goes in next.
    pub fn create(vm: &VmFd, id: u8, caps: Arc<VcpuCaps>) -> Result<Self, VcpuError> {
        let fd = vm
            .create_vcpu(u64::from(id))
            .map_err(|e| VcpuError::CreateVcpu(id, e))?;
        Ok(Self { fd, id, caps })
    }

    /// Creates vCPU `id` and sets CPUID, MSRs and the LAPIC LVTs; the boot
    /// vCPU (0) also gets the long-mode entry state.
    pub fn new(
        vm: &VmFd,
        id: u8,
        count: u8,
        supported: &CpuId,
        masked: &[CpuidFeature],
        entry: u64,
        caps: Arc<VcpuCaps>,
    ) -> Result<Self, VcpuError> {
        let Self { fd, .. } = Self::create(vm, id, Arc::clone(&caps))?;
        let entries = cpuid::guest_cpuid(supported.as_slice(), masked, id, count);
        let cpuid = CpuId::from_entries(&entries).map_err(VcpuError::BuildCpuid)?;
        fd.set_cpuid2(&cpuid).map_err(VcpuError::SetCpuid)?;
        let n = msr::set_boot_msrs(&fd, id).map_err(VcpuError::SetMsrs)?;
        debug!(vcpu = id, msrs = n, "MSRs set");
        if id == 0 {
            let mut sregs = fd.get_sregs().map_err(VcpuError::GetSregs)?;
            tables::long_mode_sregs(&mut sregs);
            fd.set_sregs(&sregs).map_err(VcpuError::SetSregs)?;
            fd.set_regs(&tables::boot_regs(entry))
                .map_err(VcpuError::SetRegs)?;
            if let Err(error) = fd.set_fpu(&tables::boot_fpu()) {
                warn!(vcpu = id, %error, "cannot set FPU state");
            }
            let mut lapic = fd.get_lapic().map_err(VcpuError::GetLapic)?;
            let lint0 = lapic_reg(&lapic, APIC_LVT0);
            let lint1 = lapic_reg(&lapic, APIC_LVT1);
            set_lapic_reg(&mut lapic, APIC_LVT0, lvt_mode(lint0, APIC_MODE_EXTINT));
            set_lapic_reg(&mut lapic, APIC_LVT1, lvt_mode(lint1, APIC_MODE_NMI));
            fd.set_lapic(&lapic).map_err(VcpuError::SetLapic)?;
        }
        Ok(Self { fd, id, caps })
    }

    /// The KVM vCPU.
    pub fn fd(&self) -> &VcpuFd {
        &self.fd
    }

    /// The KVM vCPU, for `KVM_RUN`.
    pub fn fd_mut(&mut self) -> &mut VcpuFd {
        &mut self.fd
    }

    /// Runs the vCPU until the VM must stop; the reason goes to `exit`.
    pub fn run(
        mut self,
        bus: Arc<Bus>,
        control: Arc<VcpuControl>,
        halted: Arc<AtomicUsize>,
        count: usize,
        exit: Sender<VmExit>,
    ) {
        let id = self.id;
        // Kicks reach this thread only while it is registered.
        let _registered = control.register_current_thread();
        let caps = Arc::clone(&self.caps);
        let reason = loop {
            let fd = &mut self.fd;
            let mut save = || {
                snapshot::complete_pending_io(fd)?;
                snapshot::save(fd, id, &caps)
            };
            if !control.checkpoint_with(usize::from(id), &mut save) {
                break VmExit::Stopped;
            }
            match self.fd.run() {
                Ok(VcpuExit::IoIn(port, data)) => bus.read(port, data),
                Ok(VcpuExit::IoOut(port, data)) => {
                    if bus.write(port, data) == DeviceAction::Reset {
                        info!(vcpu = id, "guest reset via i8042");
                        break VmExit::Reset;
                    }
                }
                Ok(VcpuExit::MmioRead(addr, data)) => bus.mmio_read(addr, data),
                Ok(VcpuExit::MmioWrite(addr, data)) => bus.mmio_write(addr, data),
                Ok(VcpuExit::Hlt) => {
                    let n = halted.fetch_add(1, Ordering::SeqCst) + 1;
                    info!(vcpu = id, halted = n, "vCPU halted");
                    if n >= count {
                        break VmExit::AllHalted;
                    }
                    return;
                }
                Ok(VcpuExit::Shutdown) => {
                    info!(vcpu = id, "guest shutdown");
                    break VmExit::Shutdown;
                }
                Ok(VcpuExit::FailEntry(reason, cpu)) => {
                    break VmExit::Error(format!(
                        "vCPU {id}: entry failed, reason {reason:#x} on cpu {cpu}"
                    ));
                }
                Ok(VcpuExit::InternalError) => {
                    let regs = self.fd.get_regs().map(|r| r.rip).unwrap_or(0);
                    break VmExit::Error(format!("vCPU {id}: KVM internal error at rip {regs:#x}"));
                }
                Ok(other) => {
                    warn!(vcpu = id, exit = ?other, "unexpected vCPU exit");
                }
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {}
                Err(e) => {
                    error!(vcpu = id, error = %e, "KVM_RUN failed");
                    break VmExit::Error(format!("vCPU {id}: KVM_RUN failed: {e}"));
                }
            }
        };
        let _ = exit.send(reason);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lvt_delivery_modes() {
        assert_eq!(lvt_mode(0x0001_0000, APIC_MODE_EXTINT), 0x0001_0700);
        assert_eq!(lvt_mode(0x700, APIC_MODE_NMI), 0x400);
        let mut l = kvm_lapic_state::default();
        set_lapic_reg(&mut l, APIC_LVT0, 0xdead_beef);
        assert_eq!(lapic_reg(&l, APIC_LVT0), 0xdead_beef);
    }
}

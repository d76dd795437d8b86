//! The VM-wide state KVM keeps: the in-kernel irqchip (two PICs and the
//! IOAPIC), the PIT and the KVM clock.

use kvm_bindings::{
    kvm_clock_data, kvm_irqchip, kvm_pit_state2, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE,
};
use kvm_ioctls::VmFd;
use serde::{Deserialize, Serialize};

use super::SnapshotError;

/// The irqchip, PIT and clock of a VM.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvmVmState {
    pub pic_master: kvm_irqchip,
    pub pic_slave: kvm_irqchip,
    pub ioapic: kvm_irqchip,
    pub pit: kvm_pit_state2,
    pub clock: kvm_clock_data,
}

impl std::fmt::Debug for KvmVmState {
    // kvm_irqchip is a union without Debug.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvmVmState")
            .field("pit", &self.pit)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

fn get_chip(vm: &VmFd, chip_id: u32, what: &'static str) -> Result<kvm_irqchip, SnapshotError> {
    let mut chip = kvm_irqchip {
        chip_id,
        ..Default::default()
    };
    vm.get_irqchip(&mut chip)
        .map_err(|e| SnapshotError::GetVmState(what, e))?;
    Ok(chip)
}

impl KvmVmState {
    /// Reads the state of `vm`, whose vCPUs are paused.
    pub fn save(vm: &VmFd) -> Result<Self, SnapshotError> {
        Ok(Self {
            pic_master: get_chip(vm, KVM_IRQCHIP_PIC_MASTER, "master PIC")?,
            pic_slave: get_chip(vm, KVM_IRQCHIP_PIC_SLAVE, "slave PIC")?,
            ioapic: get_chip(vm, KVM_IRQCHIP_IOAPIC, "IOAPIC")?,
            pit: vm
                .get_pit2()
                .map_err(|e| SnapshotError::GetVmState("PIT", e))?,
            clock: vm
                .get_clock()
                .map_err(|e| SnapshotError::GetVmState("clock", e))?,
        })
    }

    /// Why this state cannot be right, if it cannot.
    pub fn check(&self) -> Result<(), String> {
        let chips = [
            (&self.pic_master, KVM_IRQCHIP_PIC_MASTER, "master PIC"),
            (&self.pic_slave, KVM_IRQCHIP_PIC_SLAVE, "slave PIC"),
            (&self.ioapic, KVM_IRQCHIP_IOAPIC, "IOAPIC"),
        ];
        for (chip, id, what) in chips {
            if chip.chip_id != id {
                return Err(format!("the {what} state has chip id {}", chip.chip_id));
            }
        }
        Ok(())
    }

    /// Puts the state into `vm`, which has its irqchip and PIT created and
    /// no vCPU running. The KVM clock goes on from where it stood: the
    /// guest sees no time pass while it was a snapshot.
    pub fn restore(&self, vm: &VmFd) -> Result<(), SnapshotError> {
        for (chip, what) in [
            (&self.pic_master, "master PIC"),
            (&self.pic_slave, "slave PIC"),
            (&self.ioapic, "IOAPIC"),
        ] {
            vm.set_irqchip(chip)
                .map_err(|e| SnapshotError::SetVmState(what, e))?;
        }
        vm.set_pit2(&self.pit)
            .map_err(|e| SnapshotError::SetVmState("PIT", e))?;
        let clock = kvm_clock_data {
            clock: self.clock.clock,
            ..Default::default()
        };
        vm.set_clock(&clock)
            .map_err(|e| SnapshotError::SetVmState("clock", e))
    }
}

//! What a state file holds, and the checks a state read back must pass
//! before any of it reaches KVM.

use serde::{Deserialize, Serialize};

use super::kvm::KvmVmState;
use super::memory::MemoryLayout;
use crate::boot::layout::VIRTIO_MMIO_BASE;
use crate::config::{MAX_GUEST_CID, MAX_MEMORY_MIB, MAX_VCPUS, MIN_GUEST_CID, MIN_MEMORY_MIB};
use crate::cpu::snapshot::VcpuState;
use crate::devices::virtio::fs::device::check_tag;
use crate::devices::virtio::{device_type, mmio::MMIO_WINDOW_SIZE, DeviceKind};
use crate::devices::DevicesState;
use crate::memory::ram_regions;

/// The version of the vessel-vmm that wrote a state.
pub const VMM_VERSION: &str = env!("CARGO_PKG_VERSION");
/// The most virtio devices a snapshot may hold.
pub const MAX_VIRTIO_DEVICES: usize = 16;

/// Everything of a VM but its RAM.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmState {
    /// Informational: the format version in the header is what must match.
    pub vmm_version: String,
    pub memory: MemoryLayout,
    pub kvm: KvmVmState,
    pub vcpus: Vec<VcpuState>,
    pub devices: DevicesState,
}

impl VmState {
    /// Bytes of guest RAM.
    pub fn memory_bytes(&self) -> u64 {
        self.memory.total().unwrap_or(0)
    }

    /// Why this state cannot be one vessel-vmm wrote, if it cannot: sizes
    /// out of range, a memory layout or device window this VMM would not
    /// have made, ids out of order.
    pub fn validate(&self) -> Result<(), String> {
        let vcpus = self.vcpus.len();
        if !(1..=usize::from(MAX_VCPUS)).contains(&vcpus) {
            return Err(format!("{vcpus} vCPUs is out of range 1..={MAX_VCPUS}"));
        }
        if let Some((index, vcpu)) = self
            .vcpus
            .iter()
            .enumerate()
            .find(|(i, v)| usize::from(v.id) != *i)
        {
            return Err(format!("vCPU {index} has id {}", vcpu.id));
        }
        self.validate_memory()?;
        self.kvm.check()?;
        self.validate_devices()
    }

    fn validate_memory(&self) -> Result<(), String> {
        let total = self.memory.total().ok_or("the memory size overflows")?;
        let mib = total >> 20;
        if total & ((1 << 20) - 1) != 0 || !(MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&mib) {
            return Err(format!(
                "{total} bytes of memory is not a whole number of MiB in \
                 {MIN_MEMORY_MIB}..={MAX_MEMORY_MIB}"
            ));
        }
        let expected: Vec<(u64, u64)> = ram_regions(total)
            .into_iter()
            .map(|(addr, size)| (addr.0, size as u64))
            .collect();
        let found: Vec<(u64, u64)> = self
            .memory
            .regions
            .iter()
            .map(|r| (r.guest_addr, r.size))
            .collect();
        if found != expected {
            return Err(format!(
                "the memory regions {found:x?} are not the layout of {mib} MiB"
            ));
        }
        let mut offset = 0;
        for r in &self.memory.regions {
            if r.file_offset != offset {
                return Err("the memory regions are not laid out one after the other".into());
            }
            offset += r.size;
        }
        Ok(())
    }

    fn validate_devices(&self) -> Result<(), String> {
        let virtio = &self.devices.virtio;
        if virtio.len() > MAX_VIRTIO_DEVICES {
            return Err(format!(
                "{} virtio devices is more than {MAX_VIRTIO_DEVICES}",
                virtio.len()
            ));
        }
        for (index, slot) in virtio.iter().enumerate() {
            let base = VIRTIO_MMIO_BASE + index as u64 * MMIO_WINDOW_SIZE;
            if slot.base != base {
                return Err(format!(
                    "virtio device {index} is at {:#x}, not {base:#x}",
                    slot.base
                ));
            }
            let expected_type = match &slot.device.kind {
                DeviceKind::Rng => device_type::RNG,
                DeviceKind::Fs { tag } => {
                    check_tag(tag).map_err(|e| e.to_string())?;
                    device_type::FS
                }
                &DeviceKind::Vsock { guest_cid } => {
                    let ok = u32::try_from(guest_cid)
                        .is_ok_and(|c| (MIN_GUEST_CID..=MAX_GUEST_CID).contains(&c));
                    if !ok {
                        return Err(format!("vsock guest CID {guest_cid} is out of range"));
                    }
                    device_type::VSOCK
                }
            };
            if slot.transport.device_type != expected_type {
                return Err(format!(
                    "virtio device {index} is a {:?} on a transport of type {}",
                    slot.device.kind, slot.transport.device_type
                ));
            }
        }
        let count = |vsock: bool| {
            virtio
                .iter()
                .filter(|s| match s.device.kind {
                    DeviceKind::Vsock { .. } => vsock,
                    DeviceKind::Fs { .. } => !vsock,
                    DeviceKind::Rng => false,
                })
                .count()
        };
        for (n, what) in [(count(true), "vsock"), (count(false), "virtio-fs")] {
            if n > 1 {
                return Err(format!("{n} {what} devices (at most one)"));
            }
        }
        Ok(())
    }

    /// The vsock device's guest CID, if the VM has one.
    pub fn vsock_cid(&self) -> Option<u64> {
        self.devices
            .virtio
            .iter()
            .find_map(|s| match s.device.kind {
                DeviceKind::Vsock { guest_cid } => Some(guest_cid),
                DeviceKind::Rng | DeviceKind::Fs { .. } => None,
            })
    }

    /// The tag of the virtio-fs share, if the snapshot has one.
    pub fn fs_tag(&self) -> Option<&str> {
        self.devices
            .virtio
            .iter()
            .find_map(|s| match &s.device.kind {
                DeviceKind::Fs { tag } => Some(tag.as_str()),
                DeviceKind::Rng | DeviceKind::Vsock { .. } => None,
            })
    }
}

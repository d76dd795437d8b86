//! Building a VM from a snapshot instead of booting one.

use std::sync::Arc;

use kvm_ioctls::Kvm;
use tracing::info;

use super::{create_vm, serial_output, EventLoop, VirtioAttacher, Vm, VmError};
use crate::config::RestoreConfig;
use crate::cpu::snapshot::{self as vcpu_snapshot, VcpuCaps};
use crate::cpu::vcpu::Vcpu;
use crate::devices::legacy::serial::{SerialDevice, SERIAL_IRQ};
use crate::devices::virtio::fs::SharedDir;
use crate::devices::virtio::{mmio::lock, rng::Rng, vsock::Vsock, DeviceKind};
use crate::devices::Bus;
use crate::snapshot::Loaded;

impl Vm {
    /// Builds the VM of a snapshot that [`crate::snapshot::load`] checked
    /// and mapped: KVM's irqchip, PIT and clock, the vCPUs, and every
    /// device in its saved state (a vsock device tells the guest its
    /// connections are gone). A virtio-fs share the guest had not mounted
    /// serves `shared_dir`, the prepared directory of `config.fs`. Nothing
    /// runs until [`Vm::run`]; any error comes first.
    pub fn restore(
        config: &RestoreConfig,
        loaded: Loaded,
        shared_dir: Option<Arc<SharedDir>>,
    ) -> Result<Self, VmError> {
        let Loaded { state, memory: mem } = loaded;
        if config.vsock_uds.is_some() && state.vsock_cid().is_none() {
            return Err(VmError::RestoreHasNoVsock);
        }
        check_fs(config, state.fs_tag())?;
        let kvm = Kvm::new().map_err(VmError::OpenKvm)?;
        let vm = create_vm(&kvm, &mem)?;
        state.kvm.restore(&vm).map_err(VmError::Snapshot)?;

        // The vCPUs come before the devices: a device restore raises
        // interrupts (one pending at the snapshot, the vsock reset), and
        // KVM drops an edge-triggered interrupt whose LAPIC does not exist
        // yet. An idle guest would then never look at its event queue.
        let caps = Arc::new(VcpuCaps::detect(&kvm).map_err(VmError::DetectVcpuCaps)?);
        let mut vcpus = Vec::with_capacity(state.vcpus.len());
        for saved in &state.vcpus {
            let vcpu =
                Vcpu::create(&vm, saved.id, Arc::clone(&caps)).map_err(VmError::CreateVcpu)?;
            vcpu_snapshot::restore(vcpu.fd(), saved, &caps)
                .map_err(|e| VmError::RestoreVcpu(saved.id, e))?;
            vcpus.push(vcpu);
        }

        let mut events = EventLoop::new().map_err(VmError::CreateEventLoop)?;
        let mut virtio = VirtioAttacher::new(&vm, &mem, &mut events);
        for (index, saved) in state.devices.virtio.iter().enumerate() {
            match saved.device.kind {
                DeviceKind::Rng => virtio.attach(
                    Rng::new().map_err(|e| VmError::CreateDevice("virtio-rng", e.into()))?,
                )?,
                DeviceKind::Vsock { guest_cid } => {
                    let uds = config
                        .vsock_uds
                        .as_ref()
                        .ok_or(VmError::RestoreNeedsVsockUds)?;
                    let vsock = Vsock::new(guest_cid, uds)
                        .map_err(|e| VmError::CreateDevice("virtio-vsock", e.into()))?;
                    virtio.attach(vsock)?;
                }
                DeviceKind::Fs { ref tag } => {
                    let fs = config
                        .fs
                        .as_ref()
                        .ok_or_else(|| VmError::RestoreNeedsFsDir(tag.clone()))?;
                    virtio.attach_fs(fs, tag, shared_dir.as_deref())?;
                }
            }
            // attach() put it at `index`, the window the state was checked to have.
            if let Some(slot) = virtio.slots.get(index) {
                lock(&slot.transport)
                    .restore_state(&saved.transport, &saved.device)
                    .map_err(|e| VmError::RestoreTransport(index, e))?;
            }
        }
        let (slots, own_loops) = (virtio.slots, virtio.own_loops);

        let out = serial_output(&config.serial)?;
        let (serial, serial_evt) =
            SerialDevice::restore(&state.devices.serial, out).map_err(VmError::CreateSerial)?;
        vm.register_irqfd(&serial_evt, SERIAL_IRQ)
            .map_err(VmError::RegisterIrqfd)?;
        drop(serial_evt);
        let bus = Arc::new(Bus::with_i8042(serial, state.devices.i8042.clone(), slots));

        info!(
            vcpus = vcpus.len(),
            memory_mib = state.memory_bytes() >> 20,
            devices = state.devices.virtio.len(),
            "VM restored"
        );
        Ok(Self {
            vm: Arc::new(vm),
            memory: mem,
            bus,
            vcpus,
            events: Some(events),
            own_loops,
            api_sock: config.api_sock.clone(),
            shared_dir,
            vsock_uds: config.vsock_uds.clone(),
        })
    }
}

/// A `--fs-dir` needs the snapshot's share, and an `--fs-tag` its tag.
fn check_fs(config: &RestoreConfig, snapshot_tag: Option<&str>) -> Result<(), VmError> {
    match (&config.fs, snapshot_tag) {
        (Some(_), None) => Err(VmError::RestoreHasNoFs),
        (None, Some(tag)) => Err(VmError::RestoreNeedsFsDir(tag.to_owned())),
        (Some(fs), Some(tag)) if !fs.tag.is_empty() && fs.tag != tag => {
            Err(VmError::RestoreFsTag {
                snapshot: tag.to_owned(),
                given: fs.tag.clone(),
            })
        }
        _ => Ok(()),
    }
}

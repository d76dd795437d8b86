//! Taking a snapshot of a paused VM (the API's `snapshot` action).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use kvm_ioctls::VmFd;
use tracing::info;
use vm_memory::GuestMemoryMmap;

use super::kvm::KvmVmState;
use super::state::VMM_VERSION;
use super::{file, memory, SnapshotError, VmState};
use crate::cpu::control::VcpuControl;
use crate::devices::Bus;

/// What a snapshot wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub state_bytes: u64,
    pub memory_bytes: u64,
    pub vcpus: usize,
    pub millis: u64,
}

/// Everything a snapshot reads, shared with the API thread.
pub struct Snapshotter {
    vm: Arc<VmFd>,
    mem: GuestMemoryMmap,
    bus: Arc<Bus>,
    control: Arc<VcpuControl>,
}

impl Snapshotter {
    pub fn new(
        vm: Arc<VmFd>,
        mem: GuestMemoryMmap,
        bus: Arc<Bus>,
        control: Arc<VcpuControl>,
    ) -> Self {
        Self {
            vm,
            mem,
            bus,
            control,
        }
    }

    /// Writes the state file `state_path` and the memory file
    /// `memory_path` (absolute paths) of the paused VM, which stays paused.
    ///
    /// The vCPUs save themselves on their threads; every device is held
    /// while its state is taken and guest memory is written, so no device
    /// changes guest memory meanwhile. Both files are written under
    /// temporary names first; then an older state at `state_path` is
    /// removed, the memory file renamed into place, and the state last: a
    /// state file is only ever beside the memory it was taken with.
    pub fn snapshot(
        &self,
        state_path: &Path,
        memory_path: &Path,
    ) -> Result<SnapshotInfo, SnapshotError> {
        let start = Instant::now();
        for path in [state_path, memory_path] {
            if !path.is_absolute() {
                return Err(SnapshotError::RelativePath(path.to_path_buf()));
            }
        }
        if state_path == memory_path {
            return Err(SnapshotError::Invalid {
                path: state_path.to_path_buf(),
                reason: "the state and the memory need two files".into(),
            });
        }
        let vcpus = self
            .control
            .save_vcpus()
            .map_err(SnapshotError::SaveVcpus)?;
        let kvm = KvmVmState::save(&self.vm)?;
        let written = self
            .bus
            .save_state(|devices| -> Result<_, SnapshotError> {
                let (memory, memory_file) = memory::write(&self.mem, memory_path)?;
                let state = VmState {
                    vmm_version: VMM_VERSION.to_string(),
                    memory,
                    kvm,
                    vcpus,
                    devices,
                };
                let (state_file, state_bytes) = file::write(state_path, &state)?;
                Ok((state, memory_file, state_file, state_bytes))
            })
            .map_err(SnapshotError::SaveDevices)?;
        let (state, memory_file, state_file, state_bytes) = written?;
        match std::fs::remove_file(state_path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(SnapshotError::WriteFile(state_path.to_path_buf(), e)),
        }
        memory_file.commit()?;
        state_file.commit()?;
        let info = SnapshotInfo {
            state_bytes,
            memory_bytes: state.memory_bytes(),
            vcpus: state.vcpus.len(),
            millis: start.elapsed().as_millis() as u64,
        };
        info!(
            state = %state_path.display(),
            memory = %memory_path.display(),
            state_bytes,
            memory_bytes = info.memory_bytes,
            vcpus = info.vcpus,
            millis = info.millis,
            "snapshot written"
        );
        Ok(info)
    }
}

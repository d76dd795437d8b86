//! VM snapshots: a paused VM written to two files, and restored from them
//! in a new process.
//!
//! - The **state file** ([`file`](mod@file)) holds everything the guest
//!   can observe apart from its RAM ([`state::VmState`]): per vCPU the
//!   registers, special registers, FPU and xsave, MSRs, LAPIC, vCPU events
//!   and MP state ([`crate::cpu::snapshot`]); the in-kernel PIC, IOAPIC and
//!   PIT and the KVM clock ([`kvm`]); the serial UART, the i8042, and each
//!   virtio-mmio transport with its queues and its device. It is JSON
//!   behind a header with a magic, a format version and a SHA-256 of the
//!   JSON; a file of another format version, a corrupt one and a cut one
//!   are each refused with one line before any KVM object exists.
//! - The **memory file** ([`memory`]) is guest RAM, byte for byte, region
//!   after region, written sparse. A restore maps it `MAP_PRIVATE`: pages
//!   are read from the file (and shared through the page cache by every VM
//!   restored from it) until the guest writes them. Its size must be the
//!   one the state file records.
//!
//! [`create::Snapshotter`] takes a snapshot of a paused VM (the API's
//! `snapshot` action); [`load`] reads and checks both files for
//! [`crate::vm::Vm::restore`]. A device that cannot be saved now refuses
//! the whole snapshot, with its reason
//! ([`crate::devices::DevicesError::SnapshotUnsupported`]).
//!
//! A virtio-fs device can be snapshotted only while its guest has never
//! posted a FUSE request on either queue, i.e. has not mounted the share:
//! it is then saved as its tag and its queues, and a restore serves the
//! directory the restoring host names for that tag. Once the guest has
//! posted a request (on the available ring, served or not; rings that
//! cannot be read count too), the snapshot is refused: the FUSE session's
//! inode and handle tables live in this process and the guest refers to
//! them.
//!
//! vsock host connections do not survive a restore; the restored device
//! sends the guest a TRANSPORT_RESET.

pub mod create;
pub mod file;
#[cfg(any(test, feature = "test-utils"))]
pub mod fuzz;
pub mod kvm;
pub mod memory;
pub mod state;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use vm_memory::GuestMemoryMmap;

pub use create::{SnapshotInfo, Snapshotter};
pub use state::VmState;

/// Errors of taking, reading or restoring a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("cannot read the snapshot state {0}")]
    ReadState(PathBuf, #[source] std::io::Error),
    #[error("snapshot state {0}: {1} bytes is more than a state file can be")]
    StateTooLarge(PathBuf, u64),
    #[error("{0} is not a vessel-vmm snapshot state file")]
    NotASnapshot(PathBuf),
    #[error(
        "snapshot state {path}: format version {found}, but this vessel-vmm reads version \
         {supported} (take the snapshot again with this vessel-vmm)"
    )]
    Version {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error(
        "snapshot state {path}: {found} bytes of state where the header says {expected} \
         (a cut or half-written file)"
    )]
    Truncated {
        path: PathBuf,
        expected: u64,
        found: u64,
    },
    #[error("snapshot state {0}: the checksum does not match (the file is corrupt)")]
    Checksum(PathBuf),
    #[error("snapshot state {0}: the state does not parse")]
    ParseState(PathBuf, #[source] serde_json::Error),
    #[error("snapshot state {path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("cannot serialise the VM state")]
    SerializeState(#[source] serde_json::Error),
    #[error("cannot write {0}")]
    WriteFile(PathBuf, #[source] std::io::Error),
    #[error("{0}: the snapshot path must be absolute")]
    RelativePath(PathBuf),
    #[error("cannot read guest memory")]
    ReadGuestMemory(#[source] vm_memory::GuestMemoryError),
    #[error("cannot open the snapshot memory {0}")]
    OpenMemory(PathBuf, #[source] std::io::Error),
    #[error(
        "snapshot memory {path}: the file is {found} bytes, the snapshot's guest memory is \
         {expected} (a cut file, or the memory of another snapshot)"
    )]
    MemorySize {
        path: PathBuf,
        expected: u64,
        found: u64,
    },
    #[error("cannot map the snapshot memory {0}")]
    MapMemory(PathBuf, #[source] vm_memory::mmap::MmapRegionError),
    #[error("snapshot memory {0}: its regions overlap or overflow")]
    MemoryRegions(PathBuf),
    #[error("cannot get the {0} state from KVM")]
    GetVmState(&'static str, #[source] kvm_ioctls::Error),
    #[error("cannot set the {0} state in KVM")]
    SetVmState(&'static str, #[source] kvm_ioctls::Error),
    #[error("cannot save the vCPUs")]
    SaveVcpus(#[source] crate::cpu::control::ControlError),
    #[error("cannot save the devices")]
    SaveDevices(#[source] crate::devices::DevicesError),
}

/// A checked snapshot, ready to be restored.
pub struct Loaded {
    pub state: VmState,
    /// Guest RAM mapped `MAP_PRIVATE` from the memory file.
    pub memory: GuestMemoryMmap,
}

/// Reads and checks the state file at `state`, then checks the memory file
/// at `memory` against it and maps it. Nothing of the VM exists yet; every
/// refusal is one [`SnapshotError`].
pub fn load(state: &Path, memory: &Path) -> Result<Loaded, SnapshotError> {
    let vm_state = file::read(state)?;
    vm_state
        .validate()
        .map_err(|reason| SnapshotError::Invalid {
            path: state.to_path_buf(),
            reason,
        })?;
    if vm_state.vmm_version != state::VMM_VERSION {
        tracing::info!(
            snapshot = %vm_state.vmm_version,
            vmm = state::VMM_VERSION,
            "restoring a snapshot of another vessel-vmm version with the same format"
        );
    }
    let memory = memory::map(memory, &vm_state.memory)?;
    Ok(Loaded {
        state: vm_state,
        memory,
    })
}

//! The state file's format and every refusal of a bad one, the memory
//! file's sparse write and copy-on-write mapping, and [`load`]'s checks.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use kvm_bindings::{
    kvm_irqchip, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE,
};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::file::{self, FORMAT_VERSION, HEADER_LEN};
use super::kvm::KvmVmState;
use super::memory::{self, MemoryLayout, RegionState};
use super::state::VMM_VERSION;
use super::*;
use crate::cpu::snapshot::VcpuState;
use crate::devices::legacy::i8042::I8042;
use crate::devices::legacy::serial::SerialDevice;
use crate::devices::virtio::mmio::TransportState;
use crate::devices::virtio::{device_type, DeviceKind, DeviceState, QueueSnapshot};
use crate::devices::{DevicesState, VirtioSlotState};

const MIB: u64 = 1 << 20;

fn chip(chip_id: u32) -> kvm_irqchip {
    kvm_irqchip {
        chip_id,
        ..Default::default()
    }
}

fn slot(index: u64, kind: DeviceKind, device_type: u32, queues: usize) -> VirtioSlotState {
    let queue = QueueSnapshot {
        max_size: 256,
        size: 256,
        ..Default::default()
    };
    VirtioSlotState {
        base: crate::boot::layout::VIRTIO_MMIO_BASE + index * 0x1000,
        transport: TransportState {
            device_type,
            device_status: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            activated: false,
            interrupt_status: 0,
            queues: vec![queue; queues],
        },
        device: DeviceState {
            kind,
            acked_features: 0,
            active_queues: None,
        },
    }
}

/// A state as a 2-vCPU, 128 MiB VM with an rng and a vsock would have.
fn sample() -> VmState {
    let (serial, _evt) = SerialDevice::new(Box::new(std::io::sink())).unwrap();
    let mut kvm = KvmVmState {
        pic_master: chip(KVM_IRQCHIP_PIC_MASTER),
        pic_slave: chip(KVM_IRQCHIP_PIC_SLAVE),
        ioapic: chip(KVM_IRQCHIP_IOAPIC),
        pit: Default::default(),
        clock: Default::default(),
    };
    kvm.clock.clock = 123_456_789;
    let vcpus = (0..2)
        .map(|id| {
            let mut v = VcpuState {
                id,
                ..Default::default()
            };
            v.regs.rip = 0xffff_ffff_8100_0000 + u64::from(id);
            v
        })
        .collect();
    VmState {
        vmm_version: VMM_VERSION.into(),
        memory: MemoryLayout {
            regions: vec![RegionState {
                guest_addr: 0,
                size: 128 * MIB,
                file_offset: 0,
            }],
        },
        kvm,
        vcpus,
        devices: DevicesState {
            serial: serial.save(),
            i8042: I8042::default(),
            virtio: vec![
                slot(0, DeviceKind::Rng, device_type::RNG, 1),
                slot(1, DeviceKind::Vsock { guest_cid: 3 }, device_type::VSOCK, 3),
            ],
        },
    }
}

fn decode(bytes: &[u8]) -> Result<VmState, SnapshotError> {
    file::decode(Path::new("/snap/state"), bytes)
}

fn message(err: SnapshotError) -> String {
    crate::error_chain(&err)
}

#[test]
fn a_state_round_trips_through_its_file_format() {
    let state = sample();
    let bytes = file::encode(&state).unwrap();
    assert_eq!(&bytes[..8], b"VESSELSN");
    assert_eq!(bytes[8..12], FORMAT_VERSION.to_le_bytes());
    let back = decode(&bytes).unwrap();
    back.validate().unwrap();
    assert_eq!(back.vcpus.len(), 2);
    assert_eq!(back.vcpus[1].regs, state.vcpus[1].regs);
    assert_eq!(back.kvm.clock, state.kvm.clock);
    assert_eq!(back.devices, state.devices);
    assert_eq!(back.memory, state.memory);
    assert_eq!(back.vsock_cid(), Some(3));
}

#[test]
fn other_versions_corrupt_and_cut_files_are_refused_with_one_line() {
    let good = file::encode(&sample()).unwrap();

    assert_eq!(
        message(decode(b"not a snapshot at all, just some text of a file").unwrap_err()),
        "/snap/state is not a vessel-vmm snapshot state file"
    );
    assert!(matches!(
        decode(&good[..10]),
        Err(SnapshotError::NotASnapshot(_))
    ));

    let mut other = good.clone();
    other[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    assert_eq!(
        message(decode(&other).unwrap_err()),
        format!(
            "snapshot state /snap/state: format version {}, but this vessel-vmm reads version \
             {FORMAT_VERSION} (take the snapshot again with this vessel-vmm)",
            FORMAT_VERSION + 1
        )
    );

    let cut = &good[..good.len() - 100];
    assert_eq!(
        message(decode(cut).unwrap_err()),
        format!(
            "snapshot state /snap/state: {} bytes of state where the header says {} (a cut or \
             half-written file)",
            cut.len() - HEADER_LEN,
            good.len() - HEADER_LEN
        )
    );

    // One flipped bit anywhere in the JSON.
    for at in [HEADER_LEN, HEADER_LEN + 1000, good.len() - 1] {
        let mut corrupt = good.clone();
        corrupt[at] ^= 0x01;
        assert_eq!(
            message(decode(&corrupt).unwrap_err()),
            "snapshot state /snap/state: the checksum does not match (the file is corrupt)"
        );
    }
    // Or in the checksum itself.
    let mut corrupt = good.clone();
    corrupt[HEADER_LEN - 1] ^= 0x80;
    assert!(matches!(decode(&corrupt), Err(SnapshotError::Checksum(_))));
}

use super::fuzz::framed;

#[test]
fn well_framed_nonsense_does_not_parse() {
    let err = decode(&framed(b"{\"vmm_version\": 7}")).unwrap_err();
    assert!(message(err).starts_with("snapshot state /snap/state: the state does not parse: "),);
    let mut value = serde_json::to_value(sample()).unwrap();
    value["surprise"] = serde_json::json!(1);
    let err = decode(&framed(value.to_string().as_bytes())).unwrap_err();
    assert!(message(err).contains("unknown field `surprise`"));
}

#[test]
fn states_this_vmm_would_not_have_written_fail_validation() {
    type Spoil = fn(&mut VmState);
    let cases: [(Spoil, &str); 9] = [
        (|s| s.vcpus.clear(), "0 vCPUs is out of range 1..=32"),
        (|s| s.vcpus[1].id = 7, "vCPU 1 has id 7"),
        (
            |s| s.memory.regions[0].size = 100,
            "100 bytes of memory is not a whole number of MiB in 64..=65536",
        ),
        (
            |s| s.memory.regions[0].guest_addr = 0x1000,
            "the memory regions [(1000, 8000000)] are not the layout of 128 MiB",
        ),
        (
            |s| s.memory.regions[0].file_offset = 4096,
            "the memory regions are not laid out one after the other",
        ),
        (
            |s| s.kvm.ioapic.chip_id = 0,
            "the IOAPIC state has chip id 0",
        ),
        (
            |s| s.devices.virtio[1].base += 0x1000,
            "virtio device 1 is at 0xd0002000, not 0xd0001000",
        ),
        (
            |s| s.devices.virtio[0].transport.device_type = device_type::VSOCK,
            "virtio device 0 is a Rng on a transport of type 19",
        ),
        (
            |s| s.devices.virtio[1].device.kind = DeviceKind::Vsock { guest_cid: 2 },
            "vsock guest CID 2 is out of range",
        ),
    ];
    for (spoil, reason) in cases {
        let mut state = sample();
        spoil(&mut state);
        assert_eq!(state.validate().unwrap_err(), reason);
    }
}

/// 2 MiB of guest memory with data at both ends and zeroes between.
fn guest_memory() -> GuestMemoryMmap {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 2 * MIB as usize)]).unwrap();
    mem.write_slice(b"first page", GuestAddress(0)).unwrap();
    mem.write_slice(b"last bytes", GuestAddress(2 * MIB - 10))
        .unwrap();
    mem
}

#[test]
fn memory_is_written_sparse_and_mapped_back_copy_on_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("memory");
    let mem = guest_memory();
    let (layout, pending) = memory::write(&mem, &path).unwrap();
    assert!(!path.exists(), "visible before commit");
    pending.commit().unwrap();
    assert_eq!(
        layout.regions,
        [RegionState {
            guest_addr: 0,
            size: 2 * MIB,
            file_offset: 0
        }]
    );
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.len(), 2 * MIB);
    assert_eq!(meta.mode() & 0o777, 0o600);

    let mapped = memory::map(&path, &layout).unwrap();
    let mut buf = [0u8; 10];
    mapped.read_slice(&mut buf, GuestAddress(0)).unwrap();
    assert_eq!(&buf, b"first page");
    mapped
        .read_slice(&mut buf, GuestAddress(2 * MIB - 10))
        .unwrap();
    assert_eq!(&buf, b"last bytes");
    // The guest's writes stay in the mapping; the file is unchanged.
    mapped.write_slice(b"GUEST", GuestAddress(0)).unwrap();
    let on_disk = std::fs::read(&path).unwrap();
    assert_eq!(&on_disk[..10], b"first page");
    let again = memory::map(&path, &layout).unwrap();
    again.read_slice(&mut buf, GuestAddress(0)).unwrap();
    assert_eq!(&buf, b"first page");
}

#[test]
fn a_memory_file_of_the_wrong_size_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("memory");
    let (layout, pending) = memory::write(&guest_memory(), &path).unwrap();
    pending.commit().unwrap();
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(MIB).unwrap();
    let err = memory::map(&path, &layout).unwrap_err();
    assert_eq!(
        message(err),
        format!(
            "snapshot memory {}: the file is {MIB} bytes, the snapshot's guest memory is {} (a \
             cut file, or the memory of another snapshot)",
            path.display(),
            2 * MIB
        )
    );
    let err = memory::map(&dir.path().join("missing"), &layout).unwrap_err();
    assert!(matches!(err, SnapshotError::OpenMemory(..)));
}

#[test]
fn a_dropped_pending_file_leaves_nothing_and_relative_paths_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state");
    let (pending, bytes) = file::write(&path, &sample()).unwrap();
    assert!(bytes > HEADER_LEN as u64);
    drop(pending);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    assert_eq!(
        message(file::write(Path::new("state"), &sample()).unwrap_err()),
        "state: the snapshot path must be absolute"
    );
}

#[test]
fn load_checks_the_state_then_the_memory() {
    let dir = tempfile::tempdir().unwrap();
    let (state_path, memory_path) = (dir.path().join("state"), dir.path().join("memory"));
    let mut state = sample();
    let (pending, _) = file::write(&state_path, &state).unwrap();
    pending.commit().unwrap();
    std::fs::write(&memory_path, b"short").unwrap();
    let err = load(&state_path, &memory_path).err().unwrap();
    assert!(
        matches!(err, SnapshotError::MemorySize { found: 5, .. }),
        "{err}"
    );

    let file = std::fs::File::create(&memory_path).unwrap();
    file.set_len(128 * MIB).unwrap();
    let loaded = load(&state_path, &memory_path).unwrap();
    assert_eq!(loaded.state.vcpus.len(), 2);

    state.vcpus[0].id = 1;
    let (pending, _) = file::write(&state_path, &state).unwrap();
    pending.commit().unwrap();
    assert_eq!(
        message(load(&state_path, &memory_path).err().unwrap()),
        format!("snapshot state {}: vCPU 0 has id 1", state_path.display())
    );
}

/// The fuzz driver on its seeds: a good state (restored for real), one
/// with an active device whose rings lie outside guest memory, cut JSON.
#[test]
fn the_state_fuzzer_survives_its_seeds() {
    let good = serde_json::to_vec(&sample()).unwrap();
    super::fuzz::fuzz_state(&good);
    super::fuzz::fuzz_state(&good[..good.len() / 2]);
    let mut active = sample();
    let slot = &mut active.devices.virtio[0];
    slot.transport.device_status = 0xf;
    slot.transport.driver_features = 1 << 32;
    slot.transport.activated = true;
    let mut queue = slot.transport.queues[0];
    queue.ready = true;
    queue.used_ring = u64::MAX - 7;
    slot.device.active_queues = Some(vec![queue]);
    super::fuzz::fuzz_state(&serde_json::to_vec(&active).unwrap());
    super::fuzz::fuzz_state(b"\xff\x00{}[]");
}

//! Unit tests of the virtio-mmio register state machine, with a recording
//! fake device. No /dev/kvm needed.

use std::sync::{Arc, Mutex};

use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::*;
use crate::devices::virtio::{interrupt, ActivateError};

#[derive(Default)]
struct Record {
    acked: Option<u64>,
    activated_queues: Option<usize>,
    resets: usize,
    config_writes: Vec<(u64, Vec<u8>)>,
}

struct FakeDevice {
    record: Arc<Mutex<Record>>,
    sizes: Vec<u16>,
}

impl VirtioDevice for FakeDevice {
    fn device_type(&self) -> u32 {
        super::super::device_type::RNG
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &self.sizes
    }
    fn avail_features(&self) -> u64 {
        1 << 3
    }
    fn set_acked_features(&mut self, features: u64) {
        self.record.lock().unwrap().acked = Some(features);
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let config = [0xaa, 0xbb, 0xcc, 0xdd];
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = config.get(offset as usize + i).copied().unwrap_or(0);
        }
    }
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        self.record
            .lock()
            .unwrap()
            .config_writes
            .push((offset, data.to_vec()));
    }
    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError> {
        self.record.lock().unwrap().activated_queues = Some(activation.queues.len());
        Ok(())
    }
    fn reset(&mut self) {
        self.record.lock().unwrap().resets += 1;
    }
}

fn transport() -> (MmioTransport, Arc<Mutex<Record>>) {
    let record = Arc::new(Mutex::new(Record::default()));
    let device = FakeDevice {
        record: Arc::clone(&record),
        sizes: vec![16, 16],
    };
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
    let irq = Arc::new(IrqTrigger::new(EventFd::new(EFD_NONBLOCK).unwrap()));
    (
        MmioTransport::new(Arc::new(Mutex::new(device)), mem, irq).unwrap(),
        record,
    )
}

fn read(t: &mut MmioTransport, offset: u64) -> u32 {
    let mut data = [0u8; 4];
    t.read(offset, &mut data);
    u32::from_le_bytes(data)
}

fn write(t: &mut MmioTransport, offset: u64, value: u32) {
    t.write(offset, &value.to_le_bytes());
}

/// Drives the transport to FEATURES_OK with VERSION_1 and feature bit 3.
fn negotiate(t: &mut MmioTransport) {
    write(t, 0x070, status::ACKNOWLEDGE);
    write(t, 0x070, status::ACKNOWLEDGE | status::DRIVER);
    write(t, 0x024, 0);
    write(t, 0x020, 1 << 3);
    write(t, 0x024, 1);
    write(t, 0x020, 1); // VERSION_1
    write(
        t,
        0x070,
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
    );
}

/// Sets up queue `index` with rings inside the 1 MiB of guest memory.
fn setup_queue(t: &mut MmioTransport, index: u32) {
    let base = 0x1000 * (index + 1) * 4;
    write(t, 0x030, index);
    write(t, 0x038, 16);
    write(t, 0x080, base);
    write(t, 0x084, 0);
    write(t, 0x090, base + 0x1000);
    write(t, 0x094, 0);
    write(t, 0x0a0, base + 0x2000);
    write(t, 0x0a4, 0);
    write(t, 0x044, 1);
}

const ALL_OK: u32 = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK;

#[test]
fn identity_registers() {
    let (mut t, _) = transport();
    assert_eq!(read(&mut t, 0x000), 0x7472_6976);
    assert_eq!(read(&mut t, 0x004), 2);
    assert_eq!(read(&mut t, 0x008), 4);
    assert_eq!(read(&mut t, 0x00c), VENDOR_ID);
    write(&mut t, 0x030, 1);
    assert_eq!(read(&mut t, 0x034), 16);
    write(&mut t, 0x030, 7);
    assert_eq!(read(&mut t, 0x034), 0, "a missing queue has QueueNumMax 0");
    assert_eq!(read(&mut t, 0x0b0), u32::MAX, "no shared memory regions");
}

#[test]
fn features_are_offered_with_version_1_and_negotiated() {
    let (mut t, record) = transport();
    write(&mut t, 0x014, 0);
    assert_eq!(read(&mut t, 0x010), 1 << 3);
    write(&mut t, 0x014, 1);
    assert_eq!(read(&mut t, 0x010), 1, "VERSION_1 is bit 32");
    negotiate(&mut t);
    assert_eq!(
        read(&mut t, 0x070) & status::FEATURES_OK,
        status::FEATURES_OK
    );
    assert_eq!(
        record.lock().unwrap().acked,
        Some(VIRTIO_F_VERSION_1 | 1 << 3)
    );
}

#[test]
fn features_not_offered_leave_features_ok_clear() {
    let (mut t, record) = transport();
    write(&mut t, 0x070, status::ACKNOWLEDGE);
    write(&mut t, 0x070, status::ACKNOWLEDGE | status::DRIVER);
    write(&mut t, 0x024, 0);
    write(&mut t, 0x020, 1 << 5); // not offered
    write(&mut t, 0x024, 1);
    write(&mut t, 0x020, 1);
    write(
        &mut t,
        0x070,
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
    );
    assert_eq!(read(&mut t, 0x070) & status::FEATURES_OK, 0);
    assert_eq!(record.lock().unwrap().acked, None);
    assert_eq!(t.counters().refused_writes, 1);
}

#[test]
fn queue_registers_need_features_ok_first() {
    let (mut t, _) = transport();
    write(&mut t, 0x030, 0);
    write(&mut t, 0x038, 8);
    write(&mut t, 0x044, 1);
    assert_eq!(read(&mut t, 0x044), 0);
    assert_eq!(t.counters().refused_writes, 2);
}

#[test]
fn bad_queue_size_is_refused() {
    let (mut t, _) = transport();
    negotiate(&mut t);
    write(&mut t, 0x030, 0);
    write(&mut t, 0x038, 17); // not a power of two
    write(&mut t, 0x038, 1 << 20); // larger than u16
    assert_eq!(t.counters().refused_writes, 2);
}

#[test]
fn driver_ok_activates_the_device_with_its_queues() {
    let (mut t, record) = transport();
    negotiate(&mut t);
    setup_queue(&mut t, 0);
    setup_queue(&mut t, 1);
    write(&mut t, 0x070, ALL_OK);
    assert_eq!(read(&mut t, 0x070), ALL_OK);
    assert_eq!(record.lock().unwrap().activated_queues, Some(2));
    assert_eq!(t.counters(), MmioCounters::default());

    // A notification that reached the transport is forwarded.
    write(&mut t, QUEUE_NOTIFY_OFFSET, 1);
    assert_eq!(t.queue_evts()[1].read().unwrap(), 1);
    // Queue registers are frozen after DRIVER_OK.
    write(&mut t, 0x030, 0);
    write(&mut t, 0x038, 4);
    assert_eq!(t.counters().refused_writes, 1);
}

#[test]
fn a_queue_outside_guest_memory_fails_activation_and_asks_for_reset() {
    let (mut t, record) = transport();
    negotiate(&mut t);
    setup_queue(&mut t, 0);
    write(&mut t, 0x030, 1);
    write(&mut t, 0x038, 16);
    write(&mut t, 0x080, 0xffff_0000); // beyond the 1 MiB of memory
    write(&mut t, 0x044, 1);
    write(&mut t, 0x070, ALL_OK);
    assert_eq!(record.lock().unwrap().activated_queues, None);
    assert_eq!(t.counters().failed_activations, 1);
    assert_ne!(read(&mut t, 0x070) & status::DEVICE_NEEDS_RESET, 0);
    assert_eq!(read(&mut t, 0x060), interrupt::CONFIG);
    assert_eq!(t.irq().evt().read().unwrap(), 1);
}

#[test]
fn status_zero_resets_everything() {
    let (mut t, record) = transport();
    negotiate(&mut t);
    setup_queue(&mut t, 0);
    setup_queue(&mut t, 1);
    write(&mut t, 0x070, ALL_OK);
    t.irq().trigger(interrupt::VRING).unwrap();
    write(&mut t, 0x070, 0);
    assert_eq!(record.lock().unwrap().resets, 1);
    assert_eq!(read(&mut t, 0x070), 0);
    assert_eq!(read(&mut t, 0x060), 0);
    write(&mut t, 0x030, 0);
    assert_eq!(read(&mut t, 0x044), 0, "queues are not ready after reset");
    // And the device can be brought up again.
    negotiate(&mut t);
    setup_queue(&mut t, 0);
    setup_queue(&mut t, 1);
    write(&mut t, 0x070, ALL_OK);
    assert_eq!(read(&mut t, 0x070), ALL_OK);
}

#[test]
fn out_of_order_status_is_refused() {
    let (mut t, record) = transport();
    write(&mut t, 0x070, status::DRIVER_OK);
    write(&mut t, 0x070, status::ACKNOWLEDGE | status::FEATURES_OK);
    assert_eq!(read(&mut t, 0x070), 0);
    write(&mut t, 0x070, status::ACKNOWLEDGE | status::DRIVER);
    write(&mut t, 0x070, status::ACKNOWLEDGE); // clearing a bit
    assert_eq!(read(&mut t, 0x070), status::ACKNOWLEDGE | status::DRIVER);
    assert_eq!(t.counters().refused_writes, 3);
    assert_eq!(record.lock().unwrap().activated_queues, None);
}

#[test]
fn interrupt_ack_clears_bits() {
    let (mut t, _) = transport();
    t.irq().trigger(interrupt::VRING).unwrap();
    t.irq().trigger(interrupt::CONFIG).unwrap();
    assert_eq!(read(&mut t, 0x060), 3);
    write(&mut t, 0x064, interrupt::VRING);
    assert_eq!(read(&mut t, 0x060), interrupt::CONFIG);
}

#[test]
fn config_space_goes_to_the_device_after_driver() {
    let (mut t, record) = transport();
    let mut byte = [0u8; 1];
    t.read(0x101, &mut byte);
    assert_eq!(byte, [0xbb]);
    let mut wide = [0u8; 8];
    t.read(0x102, &mut wide);
    assert_eq!(wide, [0xcc, 0xdd, 0, 0, 0, 0, 0, 0]);
    t.write(0x100, &[1, 2]);
    assert!(
        record.lock().unwrap().config_writes.is_empty(),
        "refused before DRIVER"
    );
    write(&mut t, 0x070, status::ACKNOWLEDGE);
    write(&mut t, 0x070, status::ACKNOWLEDGE | status::DRIVER);
    t.write(0x100, &[1, 2]);
    assert_eq!(record.lock().unwrap().config_writes, vec![(0, vec![1, 2])]);
}

#[test]
fn bad_accesses_are_counted_and_read_as_ones() {
    let (mut t, _) = transport();
    let mut two = [0u8; 2];
    t.read(0x000, &mut two);
    assert_eq!(two, [0xff, 0xff]);
    let mut four = [0u8; 4];
    t.read(0x002, &mut four);
    assert_eq!(four, [0xff; 4]);
    t.read(0x0f0, &mut four);
    t.write(0x070, &[1]);
    t.write(0x071, &[0; 4]);
    t.write(0x0f8, &[0; 4]);
    write(&mut t, QUEUE_NOTIFY_OFFSET, 0); // before DRIVER_OK
    assert_eq!(t.counters().bad_accesses, 6);
    assert_eq!(t.counters().refused_writes, 1);
}

/// Arbitrary register traffic (a fixed pseudo-random sequence) never panics.
#[test]
fn arbitrary_register_traffic_never_panics() {
    let (mut t, _) = transport();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..50_000 {
        let r = next();
        let offset = (r % 0x140) & !if r & 0x100 == 0 { 3 } else { 0 };
        let len = [1usize, 2, 4, 8][(r >> 16) as usize % 4];
        let mut data = (r >> 24).to_le_bytes()[..len].to_vec();
        if r & 1 == 0 {
            t.read(offset, &mut data);
        } else {
            t.write(offset, &data);
        }
    }
}

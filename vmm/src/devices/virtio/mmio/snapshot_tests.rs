//! A transport saved and restored around a real virtio-rng device, and
//! each refusal of a state no driver could have made.

use std::sync::{Arc, Mutex};

use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::super::{lock, MmioError, MmioTransport};
use super::TransportState;
use crate::devices::virtio::rng::Rng;
use crate::devices::virtio::{status, DeviceState, IrqTrigger, VirtioDevice};

const ALL_OK: u32 = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK;

fn rng_transport() -> (MmioTransport, Arc<Mutex<Rng>>) {
    let rng = Arc::new(Mutex::new(Rng::new().unwrap()));
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
    let irq = Arc::new(IrqTrigger::new(EventFd::new(EFD_NONBLOCK).unwrap()));
    let device: Arc<Mutex<dyn VirtioDevice>> = rng.clone();
    (MmioTransport::new(device, mem, irq).unwrap(), rng)
}

fn write(t: &mut MmioTransport, offset: u64, value: u32) {
    t.write(offset, &value.to_le_bytes());
}

/// What a driver does up to DRIVER_OK, with the queue's rings at 0x4000.
fn drive_to_active(t: &mut MmioTransport) {
    write(t, 0x070, status::ACKNOWLEDGE);
    write(t, 0x070, status::ACKNOWLEDGE | status::DRIVER);
    write(t, 0x024, 1);
    write(t, 0x020, 1); // VERSION_1
    write(t, 0x070, ALL_OK & !status::DRIVER_OK);
    write(t, 0x030, 0);
    write(t, 0x038, 64);
    write(t, 0x080, 0x4000);
    write(t, 0x090, 0x5000);
    write(t, 0x0a0, 0x6000);
    write(t, 0x044, 1);
    write(t, 0x070, ALL_OK);
}

/// The state of an active rng whose device has used 5 buffers.
fn active_state() -> (TransportState, DeviceState) {
    let (mut t, rng) = rng_transport();
    drive_to_active(&mut t);
    assert!(lock(&rng).is_active());
    let mut device = lock(&rng).save_state().unwrap();
    let queues = device.active_queues.as_mut().unwrap();
    queues[0].next_avail = 5;
    queues[0].next_used = 5;
    let mut transport = t.save_state();
    transport.interrupt_status = 1;
    (transport, device)
}

#[test]
fn an_active_device_restores_active_with_its_ring_positions_and_interrupt() {
    let (transport, device) = active_state();
    assert_eq!(transport.device_status, ALL_OK);
    assert!(transport.activated);
    let text = serde_json::to_string(&(&transport, &device)).unwrap();
    let (transport, device): (TransportState, DeviceState) = serde_json::from_str(&text).unwrap();

    let (mut fresh, rng) = rng_transport();
    fresh.restore_state(&transport, &device).unwrap();
    assert!(lock(&rng).is_active());
    assert_eq!(lock(&rng).save_state().unwrap(), device);
    let again = fresh.save_state();
    assert_eq!(again, transport);
    assert_eq!(fresh.irq().status(), 1);
    // One queue event per queue, in case a notification was in flight.
    assert_eq!(fresh.queue_evts()[0].read().unwrap(), 1);
    assert_eq!(fresh.irq().evt().read().unwrap(), 1);
}

#[test]
fn a_device_the_driver_never_touched_restores_idle() {
    let (t, rng) = rng_transport();
    let transport = t.save_state();
    let device = lock(&rng).save_state().unwrap();
    assert_eq!(device.active_queues, None);
    let (mut fresh, rng) = rng_transport();
    fresh.restore_state(&transport, &device).unwrap();
    assert!(!lock(&rng).is_active());
    assert_eq!(fresh.device_status(), 0);
}

#[test]
fn states_no_driver_could_have_made_are_refused() {
    let (good_transport, good_device) = active_state();
    type Spoil = fn(&mut TransportState, &mut DeviceState);
    let cases: [(&str, Spoil); 10] = [
        (
            "the snapshot has device type 19 where device type 4 was created",
            |t, _| t.device_type = 19,
        ),
        (
            "the snapshot has 2 queues for device type 4, which has 1",
            |t, _| {
                let q = t.queues[0];
                t.queues.push(q);
            },
        ),
        (
            "queue 0 of device type 4: maximum size differs from the device's",
            |t, _| t.queues[0].max_size = 128,
        ),
        ("queue 0 of device type 4: invalid queue size", |_, d| {
            d.active_queues.as_mut().unwrap()[0].size = 3
        }),
        (
            "queue 0 of device type 4: not ready, or its rings lie outside guest memory",
            |_, d| d.active_queues.as_mut().unwrap()[0].used_ring = 0xfff_0000,
        ),
        ("device type 4: unknown device status bits", |t, _| {
            t.device_status |= 0x10
        }),
        (
            "device type 4: activation does not match the device status",
            |t, _| t.device_status &= !status::DRIVER_OK,
        ),
        (
            "device type 4: the driver has features the device does not offer",
            |t, _| t.driver_features |= 1 << 7,
        ),
        (
            "device type 4: the device's queues do not match its activation",
            |_, d| d.active_queues = None,
        ),
        ("device type 4: unknown interrupt status bits", |t, _| {
            t.interrupt_status = 8
        }),
    ];
    for (message, spoil) in cases {
        let (mut transport, mut device) = (good_transport.clone(), good_device.clone());
        spoil(&mut transport, &mut device);
        let (mut fresh, rng) = rng_transport();
        let err = fresh.restore_state(&transport, &device).unwrap_err();
        assert_eq!(err.to_string(), message);
        assert!(!lock(&rng).is_active(), "{message}: activated anyway");
    }
    // A transport the guest already drove is not restored over.
    let (mut used, _) = rng_transport();
    drive_to_active(&mut used);
    assert!(matches!(
        used.restore_state(&good_transport, &good_device),
        Err(MmioError::RestoreTransport { .. })
    ));
}

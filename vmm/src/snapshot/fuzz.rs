//! Fuzzing what a restore reads from a state file, which is untrusted:
//! any bytes, framed with a valid header and checksum, go through parsing
//! and validation, and a state that passes has its serial UART and each
//! virtio transport restored around a fresh device over small guest
//! memory. Nothing may panic.

use std::path::Path;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::file::{self, FORMAT_VERSION, MAGIC};
use crate::devices::legacy::serial::SerialDevice;
use crate::devices::virtio::fs::{self, CacheMode, FsServer};
use crate::devices::virtio::mmio::MmioTransport;
use crate::devices::virtio::vsock::test_utils::temp_uds_path;
use crate::devices::virtio::{rng::Rng, vsock::Vsock, DeviceKind, IrqTrigger, VirtioDevice};

/// `json` framed as a state file of this format version.
pub fn framed(json: &[u8]) -> Vec<u8> {
    let mut bytes = MAGIC.to_vec();
    bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    bytes.extend_from_slice(&(json.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&Sha256::digest(json));
    bytes.extend_from_slice(json);
    bytes
}

/// One fuzz input: the JSON of a state.
pub fn fuzz_state(data: &[u8]) {
    let Ok(state) = file::decode(Path::new("/fuzz/state"), &framed(data)) else {
        return;
    };
    if state.validate().is_err() {
        return;
    }
    let _ = SerialDevice::restore(&state.devices.serial, Box::new(std::io::sink()));
    let Ok(mem) = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]) else {
        return;
    };
    for slot in &state.devices.virtio {
        let device: Arc<Mutex<dyn VirtioDevice>> = match &slot.device.kind {
            DeviceKind::Rng => match Rng::new() {
                Ok(rng) => Arc::new(Mutex::new(rng)),
                Err(_) => return,
            },
            DeviceKind::Fs { tag } => {
                // No worker runs: restoring the transport serves nothing.
                let Ok(server) = FsServer::new(&std::env::temp_dir(), CacheMode::Never, false)
                else {
                    return;
                };
                match fs::device::new(tag, server) {
                    Ok((device, _worker)) => Arc::new(Mutex::new(device)),
                    Err(_) => return,
                }
            }
            &DeviceKind::Vsock { guest_cid } => {
                match Vsock::new(guest_cid, &temp_uds_path("fuzz-snapshot")) {
                    Ok(vsock) => Arc::new(Mutex::new(vsock)),
                    Err(_) => return,
                }
            }
        };
        let Ok(evt) = EventFd::new(EFD_NONBLOCK) else {
            return;
        };
        let Ok(mut transport) =
            MmioTransport::new(device, mem.clone(), Arc::new(IrqTrigger::new(evt)))
        else {
            return;
        };
        let _ = transport.restore_state(&slot.transport, &slot.device);
    }
}

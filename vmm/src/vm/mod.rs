//! The VM: KVM objects, guest memory, devices and vCPU threads.

use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::{mpsc, Arc, Mutex};
use std::thread;

use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use kvm_bindings::{
    kvm_pit_config, kvm_userspace_memory_region, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{IoEventAddress, Kvm, VmFd};
use tracing::{info, warn};
use vm_memory::{GuestMemory, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::api::{ApiOptions, ApiServer};
use crate::boot::{layout, loader, mptable, params, tables};
use crate::config::{FsConfig, SerialOutput, VmConfig};
use crate::cpu::control::{install_kick_handler, VcpuControl};
use crate::cpu::snapshot::{VcpuCaps, VcpuStateError};
use crate::cpu::vcpu::{Vcpu, VcpuError, VmExit};
use crate::devices::legacy::serial::{SerialDevice, SerialError, SERIAL_IRQ};
use crate::devices::virtio::fs::{self as virtio_fs, FsServer, SharedDir};
use crate::devices::virtio::{self, rng::Rng, vsock::Vsock};
use crate::devices::{Bus, MmioSlot};
use crate::jail::{Role, ThreadFilters};
use crate::memory::{self, MemoryError};
use crate::profile::HostProfile;
use crate::snapshot::{SnapshotError, Snapshotter};

/// Errors of building or running the VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("cannot open /dev/kvm")]
    OpenKvm(#[source] kvm_ioctls::Error),
    #[error("cannot create the VM")]
    CreateVm(#[source] kvm_ioctls::Error),
    #[error("cannot create guest memory")]
    CreateMemory(#[source] MemoryError),
    #[error("guest memory slot {0} has no host mapping")]
    GetHostAddress(u32),
    #[error("cannot register guest memory slot {0}")]
    SetMemoryRegion(u32, #[source] kvm_ioctls::Error),
    #[error("cannot create the in-kernel irqchip")]
    CreateIrqChip(#[source] kvm_ioctls::Error),
    #[error("cannot create the in-kernel PIT")]
    CreatePit(#[source] kvm_ioctls::Error),
    #[error("cannot get the supported CPUID")]
    GetSupportedCpuid(#[source] kvm_ioctls::Error),
    #[error("cannot load the kernel or initrd")]
    Load(#[source] loader::LoaderError),
    #[error("cannot write boot parameters")]
    WriteParams(#[source] params::ParamsError),
    #[error("cannot write boot tables")]
    WriteTables(#[source] tables::TablesError),
    #[error("cannot write the MP table")]
    WriteMptable(#[source] mptable::MptableError),
    #[error("cannot set up the serial console")]
    CreateSerial(#[source] SerialError),
    #[error("cannot register the serial irqfd")]
    RegisterIrqfd(#[source] kvm_ioctls::Error),
    #[error("cannot create the device event loop")]
    CreateEventLoop(#[source] event_manager::Error),
    #[error("cannot create the {0} device")]
    CreateDevice(&'static str, #[source] std::io::Error),
    #[error("cannot create a virtio-mmio transport")]
    CreateTransport(#[source] virtio::mmio::MmioError),
    #[error("cannot register a queue notification for device {0}")]
    RegisterIoevent(u32, #[source] kvm_ioctls::Error),
    #[error("cannot spawn the device event loop")]
    SpawnEventLoop(#[source] std::io::Error),
    #[error("the shared directory was not prepared before the VM (see SharedDir::prepare)")]
    SharedDirNotPrepared,
    #[error("cannot set up the virtio-fs device")]
    CreateFs(#[source] virtio_fs::FsError),
    #[error("cannot set up vCPU control")]
    Control(#[source] crate::cpu::control::ControlError),
    #[error("cannot serve the API")]
    Api(#[source] crate::api::ApiError),
    #[error("cannot set up a vCPU")]
    CreateVcpu(#[source] VcpuError),
    #[error("cannot spawn a vCPU thread")]
    SpawnVcpu(#[source] std::io::Error),
    #[error("cannot learn what vCPU state KVM saves")]
    DetectVcpuCaps(#[source] VcpuStateError),
    #[error("cannot restore the snapshot")]
    Snapshot(#[source] SnapshotError),
    #[error("cannot restore virtio device {0}")]
    RestoreTransport(usize, #[source] virtio::mmio::MmioError),
    #[error("cannot restore vCPU {0}")]
    RestoreVcpu(u8, #[source] VcpuStateError),
    #[error("the snapshot has a vsock device: give it a socket with --vsock-uds")]
    RestoreNeedsVsockUds,
    #[error("--vsock-uds: the snapshot has no vsock device")]
    RestoreHasNoVsock,
    #[error("the snapshot has a virtio-fs share tagged {0:?}: give it a directory with --fs-dir")]
    RestoreNeedsFsDir(String),
    #[error("--fs-dir: the snapshot has no virtio-fs device")]
    RestoreHasNoFs,
    #[error("--fs-tag {given:?}: the snapshot's share is tagged {snapshot:?}")]
    RestoreFsTag { snapshot: String, given: String },
}

mod restore;

/// A VM ready to run.
pub struct Vm {
    vm: Arc<VmFd>,
    memory: GuestMemoryMmap,
    bus: Arc<Bus>,
    vcpus: Vec<Vcpu>,
    events: Option<EventLoop>,
    /// Devices with an event loop (and a thread) of their own.
    own_loops: Vec<OwnLoop>,
    api_sock: Option<PathBuf>,
    /// The virtio-fs share, for the API's hot mounts.
    shared_dir: Option<Arc<SharedDir>>,
    /// The vsock device's socket, removed when the VM stops.
    vsock_uds: Option<PathBuf>,
}

/// A socket file removed when this goes out of scope.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_file(&self.0) {
            warn!(path = %self.0.display(), %error, "cannot remove a socket file");
        }
    }
}

/// The thread-less half of the device event loop, until [`Vm::run`].
type EventLoop = EventManager<Arc<Mutex<dyn MutEventSubscriber + Send>>>;

/// A device event loop that runs in a thread of its own, for a device whose
/// work blocks (file I/O) and must not hold up the shared loop.
struct OwnLoop {
    /// The thread's name.
    name: &'static str,
    /// Its seccomp policy.
    role: Role,
    events: EventLoop,
    /// Runs first in the new thread.
    on_start: fn(),
}

/// Virtio devices, attached one after the other in the MMIO gap.
struct VirtioAttacher<'a> {
    vm: &'a VmFd,
    mem: &'a GuestMemoryMmap,
    events: &'a mut EventLoop,
    own_loops: Vec<OwnLoop>,
    slots: Vec<MmioSlot>,
    /// `virtio_mmio.device=` arguments announcing each device to the guest.
    cmdline: String,
}

impl<'a> VirtioAttacher<'a> {
    fn new(vm: &'a VmFd, mem: &'a GuestMemoryMmap, events: &'a mut EventLoop) -> Self {
        Self {
            vm,
            mem,
            events,
            own_loops: Vec::new(),
            slots: Vec::new(),
            cmdline: String::new(),
        }
    }

    /// Attaches a device served by the shared device event loop.
    fn attach<D>(&mut self, device: D) -> Result<(), VmError>
    where
        D: virtio::VirtioDevice + MutEventSubscriber + Send + 'static,
    {
        let device = Arc::new(Mutex::new(device));
        self.register(device.clone())?;
        self.events.add_subscriber(device);
        Ok(())
    }

    /// Attaches a virtio-fs device tagged `tag` serving `share`, the
    /// prepared directory of `fs`, on a thread of its own.
    fn attach_fs(
        &mut self,
        fs: &FsConfig,
        tag: &str,
        share: Option<&SharedDir>,
    ) -> Result<(), VmError> {
        let share = share.ok_or(VmError::SharedDirNotPrepared)?;
        let server =
            FsServer::new(&share.fs_root(), fs.cache, fs.xattr).map_err(VmError::CreateFs)?;
        let (device, worker) = virtio_fs::device::new(tag, server).map_err(VmError::CreateFs)?;
        self.attach_on_own_thread(device, worker, ("vmm-fs", Role::Fs), fs_thread_start)?;
        info!(
            dir = %share.path().display(),
            tag,
            cache = fs.cache.as_str(),
            xattr = fs.xattr,
            "virtio-fs shares a directory"
        );
        Ok(())
    }

    /// Attaches a device whose `subscriber` gets an event loop of its own,
    /// run by a thread named `name` that calls `on_start` first, then
    /// applies the seccomp policy of `role`.
    fn attach_on_own_thread<D, S>(
        &mut self,
        device: D,
        subscriber: S,
        (name, role): (&'static str, Role),
        on_start: fn(),
    ) -> Result<(), VmError>
    where
        D: virtio::VirtioDevice + 'static,
        S: MutEventSubscriber + Send + 'static,
    {
        let mut events = EventLoop::new().map_err(VmError::CreateEventLoop)?;
        self.register(Arc::new(Mutex::new(device)))?;
        events.add_subscriber(Arc::new(Mutex::new(subscriber)));
        self.own_loops.push(OwnLoop {
            name,
            role,
            events,
            on_start,
        });
        Ok(())
    }

    /// Gives `device` its MMIO window, interrupt and queue notifications.
    fn register(&mut self, device: Arc<Mutex<dyn virtio::VirtioDevice>>) -> Result<(), VmError> {
        let index = self.slots.len() as u64;
        let base = layout::VIRTIO_MMIO_BASE + index * virtio::mmio::MMIO_WINDOW_SIZE;
        let gsi = layout::VIRTIO_IRQ_BASE + index as u32;
        let device_type = virtio::mmio::lock(&device).device_type();
        let irq_evt =
            EventFd::new(EFD_NONBLOCK).map_err(|e| VmError::CreateDevice("virtio interrupt", e))?;
        self.vm
            .register_irqfd(&irq_evt, gsi)
            .map_err(VmError::RegisterIrqfd)?;
        let irq = Arc::new(virtio::IrqTrigger::new(irq_evt));
        let transport = virtio::mmio::MmioTransport::new(device, self.mem.clone(), irq)
            .map_err(VmError::CreateTransport)?;
        for (queue, evt) in transport.queue_evts().iter().enumerate() {
            let addr = IoEventAddress::Mmio(base + virtio::mmio::QUEUE_NOTIFY_OFFSET);
            self.vm
                .register_ioevent(evt, &addr, queue as u32)
                .map_err(|e| VmError::RegisterIoevent(device_type, e))?;
        }
        self.slots.push(MmioSlot {
            base,
            transport: Mutex::new(transport),
        });
        self.cmdline.push_str(&format!(
            " virtio_mmio.device={}K@{base:#x}:{gsi}",
            virtio::mmio::MMIO_WINDOW_SIZE >> 10
        ));
        info!(
            device_type,
            base = format_args!("{base:#x}"),
            gsi,
            "virtio device attached"
        );
        Ok(())
    }
}

/// The fs thread's first act: its own umask (fuse-backend-rs sets it to 0).
fn fs_thread_start() {
    if let Err(error) = virtio_fs::isolate_thread_fs_context() {
        warn!(%error, "virtio-fs: the fs thread shares the process umask");
    }
}

/// The KVM VM around `mem`, with its in-kernel irqchip and PIT.
fn create_vm(kvm: &Kvm, mem: &GuestMemoryMmap) -> Result<VmFd, VmError> {
    let vm = kvm.create_vm().map_err(VmError::CreateVm)?;
    register_memory(&vm, mem)?;
    if let Err(error) = vm.set_identity_map_address(layout::KVM_IDENTITY_MAP_ADDRESS) {
        warn!(%error, "cannot set the identity map address");
    }
    if let Err(error) = vm.set_tss_address(layout::KVM_TSS_ADDRESS as usize) {
        warn!(%error, "cannot set the TSS address");
    }
    vm.create_irq_chip().map_err(VmError::CreateIrqChip)?;
    let pit = kvm_pit_config {
        flags: KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    };
    vm.create_pit2(pit).map_err(VmError::CreatePit)?;
    Ok(vm)
}

/// The serial console's output.
fn serial_output(serial: &SerialOutput) -> Result<Box<dyn std::io::Write + Send>, VmError> {
    let (path, max_bytes) = match serial {
        SerialOutput::Stdout => (None, None),
        SerialOutput::File(p) => (Some(p.as_path()), None),
        SerialOutput::CappedFile { path, max_bytes } => (Some(path.as_path()), Some(*max_bytes)),
    };
    SerialDevice::output(path, max_bytes).map_err(VmError::CreateSerial)
}

fn register_memory(vm: &VmFd, mem: &GuestMemoryMmap) -> Result<(), VmError> {
    for (slot, region) in mem.iter().enumerate() {
        let host = region
            .get_host_address(vm_memory::MemoryRegionAddress(0))
            .map_err(|_| {
                VmError::SetMemoryRegion(slot as u32, kvm_ioctls::Error::new(libc::EFAULT))
            })?;
        let r = kvm_userspace_memory_region {
            slot: slot as u32,
            flags: 0,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: host as u64,
        };
        // SAFETY: `host` points to a mapping of `region.len()` bytes owned by
        // `mem`, which the `Vm` keeps alive for as long as the VM fd exists.
        unsafe { vm.set_user_memory_region(r) }
            .map_err(|e| VmError::SetMemoryRegion(slot as u32, e))?;
    }
    Ok(())
}

impl Vm {
    /// Builds the VM: memory, kernel, boot tables, devices and vCPUs.
    /// `shared_dir` is the share of `config.fs`, prepared (in the VMM's
    /// private mount namespace) before any thread was spawned.
    pub fn new(
        config: &VmConfig,
        profile: HostProfile,
        shared_dir: Option<Arc<SharedDir>>,
    ) -> Result<Self, VmError> {
        let kvm = Kvm::new().map_err(VmError::OpenKvm)?;
        let mem_size = config.memory_mib << 20;
        let mem = memory::create_guest_memory(mem_size).map_err(VmError::CreateMemory)?;
        let vm = create_vm(&kvm, &mem)?;

        let mut events = EventLoop::new().map_err(VmError::CreateEventLoop)?;
        let mut virtio = VirtioAttacher::new(&vm, &mem, &mut events);
        virtio.attach(Rng::new().map_err(|e| VmError::CreateDevice("virtio-rng", e.into()))?)?;
        if let Some(uds) = &config.vsock_uds {
            let vsock = Vsock::new(u64::from(config.guest_cid), uds)
                .map_err(|e| VmError::CreateDevice("virtio-vsock", e.into()))?;
            virtio.attach(vsock)?;
        }
        if let Some(fs) = &config.fs {
            virtio.attach_fs(fs, &fs.tag, shared_dir.as_deref())?;
        }
        let (virtio_slots, virtio_args, own_loops) =
            (virtio.slots, virtio.cmdline, virtio.own_loops);
        let cmdline = format!("{}{virtio_args}", config.cmdline);

        let kernel = loader::load_kernel(&mem, &config.kernel).map_err(VmError::Load)?;
        let initrd =
            loader::load_initrd(&mem, &config.initrd, kernel.end).map_err(VmError::Load)?;
        let cmdline_len = params::write_cmdline(&mem, &cmdline).map_err(VmError::WriteParams)?;
        let e820 = memory::e820_map(mem_size);
        let bp = params::build_boot_params(&params::BootInfo {
            e820: &e820,
            cmdline_addr: layout::CMDLINE_START,
            cmdline_len,
            initrd_addr: initrd.addr.0,
            initrd_size: initrd.size,
            setup_header: kernel.setup_header,
        })
        .map_err(VmError::WriteParams)?;
        params::write_boot_params(&mem, &bp).map_err(VmError::WriteParams)?;
        tables::write_tables(&mem).map_err(VmError::WriteTables)?;
        mptable::setup_mptable(&mem, config.vcpus).map_err(VmError::WriteMptable)?;

        let out = serial_output(&config.serial)?;
        let (serial, serial_evt) = SerialDevice::new(out).map_err(VmError::CreateSerial)?;
        vm.register_irqfd(&serial_evt, SERIAL_IRQ)
            .map_err(VmError::RegisterIrqfd)?;
        // The irqfd holds its own reference to the eventfd file.
        drop(serial_evt);
        let bus = Arc::new(Bus::new(serial, virtio_slots));

        let supported = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(VmError::GetSupportedCpuid)?;
        let masked = profile.masked_cpuid();
        let caps = Arc::new(VcpuCaps::detect(&kvm).map_err(VmError::DetectVcpuCaps)?);
        let vcpus = (0..config.vcpus)
            .map(|id| {
                let caps = Arc::clone(&caps);
                Vcpu::new(
                    &vm,
                    id,
                    config.vcpus,
                    &supported,
                    masked,
                    kernel.entry.0,
                    caps,
                )
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(VmError::CreateVcpu)?;
        if let Some(most) = profile.reliable_vcpus().filter(|&most| config.vcpus > most) {
            warn!(
                vcpus = config.vcpus,
                reliable = most,
                %profile,
                "guests with more vCPUs than this host runs reliably may lose memory writes"
            );
        }
        info!(vcpus = config.vcpus, memory_mib = config.memory_mib, %profile, "VM built");
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

    /// Runs every vCPU in its own thread until the VM stops. Each thread
    /// applies its seccomp filter from `filters` as it starts, and this one
    /// (the main thread) once every other has started. `debug_api` lets the
    /// API serve `debug_forbidden_syscall`.
    pub fn run(mut self, filters: ThreadFilters, debug_api: bool) -> Result<VmExit, VmError> {
        // The device event loop never ends, so the vsock device's own Drop
        // never runs: remove its socket file on every way out of here.
        let _vsock_file = self.vsock_uds.take().map(RemoveOnDrop);
        if let Some(mut events) = self.events.take() {
            thread::Builder::new()
                .name("vmm-events".into())
                .spawn(move || {
                    filters.apply(Role::Events);
                    loop {
                        if let Err(error) = events.run() {
                            warn!(%error, "device event loop");
                        }
                    }
                })
                .map_err(VmError::SpawnEventLoop)?;
        }
        for OwnLoop {
            name,
            role,
            mut events,
            on_start,
        } in std::mem::take(&mut self.own_loops)
        {
            thread::Builder::new()
                .name(name.into())
                .spawn(move || {
                    on_start();
                    filters.apply(role);
                    loop {
                        if let Err(error) = events.run() {
                            warn!(%error, thread = name, "device event loop");
                        }
                    }
                })
                .map_err(VmError::SpawnEventLoop)?;
        }
        let (tx, rx) = mpsc::channel();
        let count = self.vcpus.len();
        let halted = Arc::new(AtomicUsize::new(0));
        install_kick_handler().map_err(VmError::Control)?;
        let control = Arc::new(VcpuControl::new(count));
        for vcpu in std::mem::take(&mut self.vcpus) {
            let (bus, halted, tx) = (self.bus.clone(), halted.clone(), tx.clone());
            let vcpu_control = Arc::clone(&control);
            thread::Builder::new()
                .name("vcpu".into())
                .spawn(move || {
                    filters.apply(Role::Vcpu);
                    vcpu.run(bus, vcpu_control, halted, count, tx)
                })
                .map_err(VmError::SpawnVcpu)?;
        }
        drop(tx);
        let api = match &self.api_sock {
            Some(path) => {
                let snapshotter = Snapshotter::new(
                    Arc::clone(&self.vm),
                    self.memory.clone(),
                    Arc::clone(&self.bus),
                    Arc::clone(&control),
                );
                let server = ApiServer::start(
                    path,
                    Arc::clone(&control),
                    self.shared_dir.clone(),
                    Some(Arc::new(snapshotter)),
                    ApiOptions { filters, debug_api },
                )
                .map_err(VmError::Api)?;
                Some(server)
            }
            None => None,
        };
        filters.apply(Role::Main);
        let exit = rx
            .recv()
            .unwrap_or_else(|_| VmExit::Error("every vCPU thread ended".into()));
        info!(
            ?exit,
            unknown_accesses = self.bus.unknown_accesses(),
            virtio = ?self.bus.virtio_counters(),
            "VM stopped"
        );
        drop(api); // removes the socket file
                   // vCPU threads may still be inside KVM_RUN; the process exit ends them.
        std::mem::forget(self.vm);
        std::mem::forget(self.memory);
        Ok(exit)
    }
}

//! Host profiles: the one place that knows how the host we run on changes
//! what we must offer the guest.
//!
//! On hosts with VT-x or AMD-V the guest needs nothing special. On an
//! *emulated-CPL0* host (KVM's nested PVM module, `/sys/module/kvm_pvm`) guest
//! kernel code is run by KVM's instruction emulator, which cannot execute some
//! instructions; the profile masks those CPU features and adds the kernel
//! command-line options that turn on the guest kernel's own cures
//! (see `kernel-config/README.md`). Nothing of it applies elsewhere.

use std::fmt;
use std::path::Path;

/// Base kernel arguments every Vessel guest gets: console on the first UART,
/// reboot through the i8042 port (the VMM treats a reboot as the guest's exit)
/// and reboot at once on panic.
pub const BASE_KERNEL_ARGS: &str = "console=ttyS0 reboot=k panic=-1";

/// Environment variable that overrides detection (`hardware` or `emulated-cpl0`).
pub const PROFILE_ENV: &str = "VESSEL_HOST_PROFILE";

/// A CPUID register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuidReg {
    Eax,
    Ebx,
    Ecx,
    Edx,
}

/// One CPU feature bit, as CPUID reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuidFeature {
    /// The name QEMU's `-cpu` and Linux's `clearcpuid=` use.
    pub name: &'static str,
    pub leaf: u32,
    pub subleaf: u32,
    pub reg: CpuidReg,
    pub bit: u8,
}

const fn feature(name: &'static str, leaf: u32, reg: CpuidReg, bit: u8) -> CpuidFeature {
    CpuidFeature {
        name,
        leaf,
        subleaf: 0,
        reg,
        bit,
    }
}

/// Features hidden from the guest on an emulated-CPL0 host, with why.
const EMULATED_CPL0_MASK: &[CpuidFeature] = &[
    // `lock cmpxchg16b` in SLUB cannot be emulated; SLUB falls back without it.
    feature("cx16", 1, CpuidReg::Ecx, 13),
    // XRSTOR during FPU init cannot be emulated (the cmdline adds `noxsave` too,
    // since hiding the bit alone did not take under QEMU).
    feature("xsave", 1, CpuidReg::Ecx, 26),
    // POPCNT in alternatives-patched code cannot be emulated.
    feature("popcnt", 1, CpuidReg::Ecx, 23),
    // CLAC/STAC on every exception entry cannot be emulated.
    feature("smap", 7, CpuidReg::Ebx, 20),
    // `rep movsb` is emulated byte by byte: slower than the fallback loops.
    feature("erms", 7, CpuidReg::Ebx, 9),
    // Same for fast short `rep movsb`.
    feature("fsrm", 7, CpuidReg::Edx, 4),
    // The emulated guest must not probe MSR_IA32_ARCH_CAPABILITIES.
    feature("arch-capabilities", 7, CpuidReg::Edx, 29),
];

/// Kernel arguments for an emulated-CPL0 host. `emulated_cpl0` switches on the
/// guest kernel's patches; the rest repeats the CPUID mask for features the
/// kernel would otherwise still use, and skips costly boot work.
const EMULATED_CPL0_ARGS: &str =
    "emulated_cpl0 noxsave clearcpuid=popcnt,smap,erms,fsrm noreplace-smp";

/// What the host we run on needs from the guest set-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostProfile {
    /// VT-x or AMD-V: no changes.
    Hardware,
    /// Guest kernel mode is emulated (KVM's PVM module).
    EmulatedCpl0,
}

impl HostProfile {
    /// Detects the profile of this host, honouring [`PROFILE_ENV`].
    pub fn detect() -> Result<Self, ProfileError> {
        match std::env::var(PROFILE_ENV) {
            Ok(value) => value.parse(),
            Err(_) => Ok(Self::detect_in(Path::new("/sys"))),
        }
    }

    /// Detects the profile from a sysfs tree rooted at `sys`.
    pub fn detect_in(sys: &Path) -> Self {
        if sys.join("module/kvm_pvm").exists() {
            Self::EmulatedCpl0
        } else {
            Self::Hardware
        }
    }

    /// Kernel arguments this profile adds after [`BASE_KERNEL_ARGS`].
    pub fn kernel_args(self) -> &'static str {
        match self {
            Self::Hardware => "",
            Self::EmulatedCpl0 => EMULATED_CPL0_ARGS,
        }
    }

    /// The full default command line: base arguments plus the profile's.
    pub fn default_cmdline(self) -> String {
        match self.kernel_args() {
            "" => BASE_KERNEL_ARGS.to_string(),
            extra => format!("{BASE_KERNEL_ARGS} {extra}"),
        }
    }

    /// CPUID features the VMM must hide from the guest.
    pub fn masked_cpuid(self) -> &'static [CpuidFeature] {
        match self {
            Self::Hardware => &[],
            Self::EmulatedCpl0 => EMULATED_CPL0_MASK,
        }
    }

    /// The most vCPUs a guest can have without losing memory writes, if this
    /// host limits it.
    ///
    /// On an emulated-CPL0 host a guest with two vCPUs loses user-mode
    /// writes now and then: a freshly exec'd static busybox read zeros (or
    /// another process's data) back from its own TLS block and crashed in
    /// 7 of 300 fork+execs, and large vsock receives came out spoiled; with
    /// one vCPU, 0 of 300 (kernel-config/README.md). The VMM still builds
    /// what it is asked for and warns; runtimes ask for this many.
    pub fn reliable_vcpus(self) -> Option<u8> {
        match self {
            Self::Hardware => None,
            Self::EmulatedCpl0 => Some(1),
        }
    }

    /// `wanted` vCPUs, or fewer where this host loses writes with more.
    pub fn workload_vcpus(self, wanted: u8) -> u8 {
        self.reliable_vcpus()
            .map_or(wanted, |most| wanted.min(most))
    }

    /// The `-cpu` model for the QEMU reference runner: the host's CPU less the
    /// masked features.
    pub fn qemu_cpu(self) -> String {
        let mut cpu = String::from("host");
        for f in self.masked_cpuid() {
            cpu.push_str(",-");
            cpu.push_str(f.name);
        }
        cpu
    }
}

impl fmt::Display for HostProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Hardware => "hardware",
            Self::EmulatedCpl0 => "emulated-cpl0",
        })
    }
}

impl std::str::FromStr for HostProfile {
    type Err = ProfileError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "hardware" => Ok(Self::Hardware),
            "emulated-cpl0" => Ok(Self::EmulatedCpl0),
            other => Err(ProfileError::UnknownProfile(other.to_string())),
        }
    }
}

/// Errors of choosing a host profile.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProfileError {
    #[error(
        "unknown host profile {0:?} in {PROFILE_ENV} (expected \"hardware\" or \"emulated-cpl0\")"
    )]
    UnknownProfile(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_pvm_from_sysfs() {
        let sys = tempfile::tempdir().unwrap();
        assert_eq!(HostProfile::detect_in(sys.path()), HostProfile::Hardware);
        std::fs::create_dir_all(sys.path().join("module/kvm_pvm")).unwrap();
        assert_eq!(
            HostProfile::detect_in(sys.path()),
            HostProfile::EmulatedCpl0
        );
    }

    #[test]
    fn hardware_profile_changes_nothing() {
        let p = HostProfile::Hardware;
        assert_eq!(p.default_cmdline(), BASE_KERNEL_ARGS);
        assert!(p.masked_cpuid().is_empty());
        assert_eq!(p.qemu_cpu(), "host");
    }

    #[test]
    fn emulated_profile_masks_cx16_and_enables_the_kernel_cures() {
        let p = HostProfile::EmulatedCpl0;
        let cmdline = p.default_cmdline();
        assert!(cmdline.starts_with(BASE_KERNEL_ARGS));
        for arg in [
            "emulated_cpl0",
            "noxsave",
            "clearcpuid=popcnt,smap,erms,fsrm",
        ] {
            assert!(
                cmdline.split(' ').any(|a| a == arg),
                "{arg} missing from {cmdline}"
            );
        }
        let cx16 = p.masked_cpuid().iter().find(|f| f.name == "cx16").unwrap();
        assert_eq!((cx16.leaf, cx16.reg, cx16.bit), (1, CpuidReg::Ecx, 13));
        assert!(p.qemu_cpu().starts_with("host,-cx16,-xsave,"));
    }

    #[test]
    fn only_the_emulated_profile_limits_vcpus() {
        assert_eq!(HostProfile::Hardware.reliable_vcpus(), None);
        assert_eq!(HostProfile::Hardware.workload_vcpus(4), 4);
        assert_eq!(HostProfile::EmulatedCpl0.reliable_vcpus(), Some(1));
        assert_eq!(HostProfile::EmulatedCpl0.workload_vcpus(4), 1);
        assert_eq!(HostProfile::EmulatedCpl0.workload_vcpus(1), 1);
    }

    #[test]
    fn profile_names_round_trip_and_bad_names_are_refused() {
        for p in [HostProfile::Hardware, HostProfile::EmulatedCpl0] {
            assert_eq!(p.to_string().parse::<HostProfile>(), Ok(p));
        }
        let err = "pvm".parse::<HostProfile>().unwrap_err();
        assert!(err.to_string().contains("\"pvm\""));
    }
}

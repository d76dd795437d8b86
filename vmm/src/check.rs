//! `vessel-vmm check`: whether this host can run Vessel, and why not (as
//! `kata-runtime check` does). Facts are gathered first and judged by a pure
//! function, so the judgement is unit-tested without a KVM host.

use std::fmt;
use std::path::Path;

use kvm_ioctls::{Cap, Kvm};

use crate::profile::HostProfile;

/// What the checks look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFacts {
    /// Opening /dev/kvm: Ok, or why not.
    pub kvm: Result<(), String>,
    pub api_version: Option<i32>,
    /// KVM capabilities Vessel needs, and whether each is there.
    pub caps: Vec<(&'static str, bool)>,
    pub profile: HostProfile,
    /// The host kernel release, e.g. "6.1.0".
    pub kernel_release: String,
    pub root: bool,
    pub tun: bool,
}

/// One verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub name: &'static str,
    /// Required checks fail the host; the others only warn.
    pub required: bool,
    pub ok: bool,
    pub detail: String,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mark = match (self.ok, self.required) {
            (true, _) => "ok  ",
            (false, true) => "FAIL",
            (false, false) => "warn",
        };
        write!(f, "{mark} {}: {}", self.name, self.detail)
    }
}

const CAPS: &[(&str, Cap)] = &[
    ("KVM_CAP_IRQCHIP", Cap::Irqchip),
    ("KVM_CAP_IRQFD", Cap::Irqfd),
    ("KVM_CAP_IOEVENTFD", Cap::Ioeventfd),
    ("KVM_CAP_USER_MEMORY", Cap::UserMemory),
    ("KVM_CAP_PIT2", Cap::Pit2),
    ("KVM_CAP_EXT_CPUID", Cap::ExtCpuid),
    ("KVM_CAP_SET_TSS_ADDR", Cap::SetTssAddr),
];

/// Looks at this host.
pub fn gather() -> HostFacts {
    let kvm = Kvm::new();
    let (open, api_version, caps) = match &kvm {
        Ok(kvm) => (
            Ok(()),
            Some(kvm.get_api_version()),
            CAPS.iter()
                .map(|(n, c)| (*n, kvm.check_extension(*c)))
                .collect(),
        ),
        Err(e) => (Err(e.to_string()), None, Vec::new()),
    };
    HostFacts {
        kvm: open,
        api_version,
        caps,
        profile: HostProfile::detect()
            .unwrap_or_else(|_| HostProfile::detect_in(Path::new("/sys"))),
        kernel_release: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned(),
        // SAFETY: geteuid has no preconditions.
        root: unsafe { libc::geteuid() } == 0,
        tun: Path::new("/dev/net/tun").exists(),
    }
}

/// (major, minor) of a kernel release string.
fn version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// Judges `facts`.
pub fn judge(facts: &HostFacts) -> Vec<Verdict> {
    let mut out = Vec::new();
    let mut push = |name, required, ok, detail: String| {
        out.push(Verdict {
            name,
            required,
            ok,
            detail,
        });
    };
    match &facts.kvm {
        Ok(()) => push("/dev/kvm", true, true, "opened read-write".into()),
        Err(e) => push(
            "/dev/kvm",
            true,
            false,
            format!("cannot open it ({e}): enable VT-x/AMD-V, load kvm_intel or kvm_amd, and run as a member of the kvm group"),
        ),
    }
    if let Some(v) = facts.api_version {
        push("KVM API version", true, v == 12, format!("{v} (12 needed)"));
    }
    for (name, present) in &facts.caps {
        let detail = if *present {
            "present".into()
        } else {
            "missing: this KVM is too old or restricted".into()
        };
        push(name, true, *present, detail);
    }
    let kernel_ok = version(&facts.kernel_release).is_some_and(|v| v >= (5, 6));
    push(
        "host kernel",
        true,
        kernel_ok,
        format!(
            "{} (5.6 or newer: openat2, open_tree and mount_setattr for virtio-fs shares)",
            facts.kernel_release
        ),
    );
    let profile_detail = match facts.profile {
        HostProfile::Hardware => "hardware virtualization".to_owned(),
        HostProfile::EmulatedCpl0 => "emulated-CPL0 (nested PVM): guest kernel code is emulated; boots take tens of seconds and guests get one vCPU".to_owned(),
    };
    push(
        "host profile",
        false,
        facts.profile == HostProfile::Hardware,
        profile_detail,
    );
    push(
        "privileges",
        false,
        facts.root,
        if facts.root {
            "root".into()
        } else {
            "not root: virtio-fs shares and the shim's mounts need CAP_SYS_ADMIN".into()
        },
    );
    push(
        "/dev/net/tun",
        false,
        facts.tun,
        if facts.tun {
            "present".into()
        } else {
            "missing: no tap networking".into()
        },
    );
    out
}

/// Prints every verdict; true if no required check failed.
pub fn run() -> bool {
    let verdicts = judge(&gather());
    for v in &verdicts {
        println!("{v}");
    }
    let failed = verdicts.iter().filter(|v| v.required && !v.ok).count();
    if failed == 0 {
        println!("this host can run Vessel");
    } else {
        println!("this host cannot run Vessel: {failed} required check(s) failed");
    }
    failed == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> HostFacts {
        HostFacts {
            kvm: Ok(()),
            api_version: Some(12),
            caps: CAPS.iter().map(|(n, _)| (*n, true)).collect(),
            profile: HostProfile::Hardware,
            kernel_release: "6.1.0-13-amd64".into(),
            root: true,
            tun: true,
        }
    }

    #[test]
    fn a_good_host_passes_everything() {
        assert!(judge(&good()).iter().all(|v| v.ok), "{:?}", judge(&good()));
    }

    #[test]
    fn missing_kvm_fails_with_the_reason() {
        let facts = HostFacts {
            kvm: Err("No such file or directory".into()),
            api_version: None,
            caps: vec![],
            ..good()
        };
        let v = judge(&facts);
        let kvm = v.iter().find(|v| v.name == "/dev/kvm").unwrap();
        assert!(!kvm.ok && kvm.required);
        assert!(kvm
            .to_string()
            .starts_with("FAIL /dev/kvm: cannot open it (No such file"));
    }

    #[test]
    fn old_kernels_and_missing_caps_fail_emulated_hosts_only_warn() {
        let mut facts = good();
        facts.kernel_release = "4.19.0".into();
        facts.caps[0].1 = false;
        facts.profile = HostProfile::EmulatedCpl0;
        let v = judge(&facts);
        let failed: Vec<_> = v
            .iter()
            .filter(|v| !v.ok)
            .map(|v| (v.name, v.required))
            .collect();
        assert_eq!(
            failed,
            vec![
                ("KVM_CAP_IRQCHIP", true),
                ("host kernel", true),
                ("host profile", false)
            ]
        );
    }

    #[test]
    fn kernel_versions_parse() {
        assert_eq!(version("6.18.44-fc-v595"), Some((6, 18)));
        assert_eq!(version("5.6"), Some((5, 6)));
        assert_eq!(version("junk"), None);
    }
}

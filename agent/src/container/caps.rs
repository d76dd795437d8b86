//! Linux capabilities of an OCI process (`process.capabilities`): the spec's
//! names as numbers and bit masks, and the words a raw `capset(2)` takes.
//!
//! The bounding and ambient sets are not part of `capset`; the engine drops
//! bounding capabilities with `PR_CAPBSET_DROP` (every one not in the set, up
//! to the kernel's `/proc/sys/kernel/cap_last_cap`, which may be above
//! [`last_cap`]) and raises ambient ones with `PR_CAP_AMBIENT_RAISE`.

use oci_spec::runtime::{Capabilities, Capability, LinuxCapabilities};

/// The highest capability number this code knows: CAP_CHECKPOINT_RESTORE.
pub const LAST_CAP: u32 = 40;

/// The kernel's `_LINUX_CAPABILITY_VERSION_3`: 64-bit sets as two 32-bit
/// words.
pub const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// The five capability sets of an OCI process as bit masks (bit n = capability number n).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CapSets {
    /// The bounding set.
    pub bounding: u64,
    /// The effective set.
    pub effective: u64,
    /// The permitted set.
    pub permitted: u64,
    /// The inheritable set.
    pub inheritable: u64,
    /// The ambient set.
    pub ambient: u64,
}

/// The kernel's `struct __user_cap_header_struct`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapUserHeader {
    /// [`LINUX_CAPABILITY_VERSION_3`].
    pub version: u32,
    /// The thread; 0 for the calling one.
    pub pid: i32,
}

/// The kernel's `struct __user_cap_data_struct`: 32 capabilities of each
/// set.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CapUserData {
    /// The effective set's word.
    pub effective: u32,
    /// The permitted set's word.
    pub permitted: u32,
    /// The inheritable set's word.
    pub inheritable: u32,
}

/// The capability's number in the kernel (`CAP_*` in `linux/capability.h`).
pub fn cap_number(cap: Capability) -> u32 {
    match cap {
        Capability::Chown => 0,
        Capability::DacOverride => 1,
        Capability::DacReadSearch => 2,
        Capability::Fowner => 3,
        Capability::Fsetid => 4,
        Capability::Kill => 5,
        Capability::Setgid => 6,
        Capability::Setuid => 7,
        Capability::Setpcap => 8,
        Capability::LinuxImmutable => 9,
        Capability::NetBindService => 10,
        Capability::NetBroadcast => 11,
        Capability::NetAdmin => 12,
        Capability::NetRaw => 13,
        Capability::IpcLock => 14,
        Capability::IpcOwner => 15,
        Capability::SysModule => 16,
        Capability::SysRawio => 17,
        Capability::SysChroot => 18,
        Capability::SysPtrace => 19,
        Capability::SysPacct => 20,
        Capability::SysAdmin => 21,
        Capability::SysBoot => 22,
        Capability::SysNice => 23,
        Capability::SysResource => 24,
        Capability::SysTime => 25,
        Capability::SysTtyConfig => 26,
        Capability::Mknod => 27,
        Capability::Lease => 28,
        Capability::AuditWrite => 29,
        Capability::AuditControl => 30,
        Capability::Setfcap => 31,
        Capability::MacOverride => 32,
        Capability::MacAdmin => 33,
        Capability::Syslog => 34,
        Capability::WakeAlarm => 35,
        Capability::BlockSuspend => 36,
        Capability::AuditRead => 37,
        Capability::Perfmon => 38,
        Capability::Bpf => 39,
        Capability::CheckpointRestore => 40,
    }
}

/// The process's capability sets; a set the spec leaves out is empty.
pub fn cap_sets(caps: &LinuxCapabilities) -> CapSets {
    let mask = |set: &Option<Capabilities>| {
        set.iter()
            .flatten()
            .fold(0u64, |mask, &cap| mask | 1 << cap_number(cap))
    };
    let sets = CapSets {
        bounding: mask(caps.bounding()),
        effective: mask(caps.effective()),
        permitted: mask(caps.permitted()),
        inheritable: mask(caps.inheritable()),
        ambient: mask(caps.ambient()),
    };
    tracing::debug!(
        bounding = format_args!("{:#x}", sets.bounding),
        effective = format_args!("{:#x}", sets.effective),
        permitted = format_args!("{:#x}", sets.permitted),
        inheritable = format_args!("{:#x}", sets.inheritable),
        ambient = format_args!("{:#x}", sets.ambient),
        "capability sets"
    );
    sets
}

/// The highest capability number this code knows (CAP_CHECKPOINT_RESTORE,
/// 40); the kernel may know more.
pub fn last_cap() -> u32 {
    LAST_CAP
}

/// The capability numbers in `mask`, lowest first.
pub fn mask_bits(mask: u64) -> impl Iterator<Item = u32> {
    let mut rest = mask;
    std::iter::from_fn(move || {
        if rest == 0 {
            return None;
        }
        let bit = rest.trailing_zeros();
        rest &= rest - 1;
        Some(bit)
    })
}

/// The header and the two data words (capabilities 0-31, then 32-63) of a
/// raw `capset(2)` setting the calling thread's effective, permitted and
/// inheritable sets.
pub fn capset_data(sets: &CapSets) -> (CapUserHeader, [CapUserData; 2]) {
    let word = |shift: u32| CapUserData {
        effective: (sets.effective >> shift) as u32,
        permitted: (sets.permitted >> shift) as u32,
        inheritable: (sets.inheritable >> shift) as u32,
    };
    let header = CapUserHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    (header, [word(0), word(32)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::str::FromStr;

    /// `linux/capability.h`, as (name, number).
    const KERNEL_CAPS: &str = "CHOWN 0 DAC_OVERRIDE 1 DAC_READ_SEARCH 2 FOWNER 3 FSETID 4 \
        KILL 5 SETGID 6 SETUID 7 SETPCAP 8 LINUX_IMMUTABLE 9 NET_BIND_SERVICE 10 \
        NET_BROADCAST 11 NET_ADMIN 12 NET_RAW 13 IPC_LOCK 14 IPC_OWNER 15 SYS_MODULE 16 \
        SYS_RAWIO 17 SYS_CHROOT 18 SYS_PTRACE 19 SYS_PACCT 20 SYS_ADMIN 21 SYS_BOOT 22 \
        SYS_NICE 23 SYS_RESOURCE 24 SYS_TIME 25 SYS_TTY_CONFIG 26 MKNOD 27 LEASE 28 \
        AUDIT_WRITE 29 AUDIT_CONTROL 30 SETFCAP 31 MAC_OVERRIDE 32 MAC_ADMIN 33 SYSLOG 34 \
        WAKE_ALARM 35 BLOCK_SUSPEND 36 AUDIT_READ 37 PERFMON 38 BPF 39 CHECKPOINT_RESTORE 40";

    fn kernel_caps() -> Vec<(String, u32)> {
        let words: Vec<&str> = KERNEL_CAPS.split_whitespace().collect();
        words
            .chunks(2)
            .map(|w| (w[0].to_owned(), w[1].parse().unwrap()))
            .collect()
    }

    fn caps(value: serde_json::Value) -> LinuxCapabilities {
        serde_json::from_value(value).expect("valid capabilities")
    }

    #[test]
    fn table_matches_the_kernel() {
        let mut variants = BTreeSet::new();
        for (name, number) in kernel_caps() {
            let cap = Capability::from_str(&name).expect("oci-spec knows the capability");
            assert_eq!(cap_number(cap), number, "{name}");
            variants.insert(cap.to_string());
        }
        // 41 distinct variants, numbered 0 to LAST_CAP.
        assert_eq!(variants.len(), 41);
        assert_eq!(last_cap(), LAST_CAP);
        let numbers: BTreeSet<u32> = kernel_caps().iter().map(|(_, n)| *n).collect();
        assert_eq!(numbers, (0..=LAST_CAP).collect());
    }

    /// Against the installed kernel header, when there is one.
    #[test]
    fn table_matches_the_installed_header() {
        let Ok(header) = std::fs::read_to_string("/usr/include/linux/capability.h") else {
            eprintln!("no linux/capability.h; skipped");
            return;
        };
        let mut seen = 0;
        for line in header.lines() {
            let mut words = line.split_whitespace();
            let (Some("#define"), Some(name), Some(value)) =
                (words.next(), words.next(), words.next())
            else {
                continue;
            };
            let (Some(name), Ok(number)) = (name.strip_prefix("CAP_"), value.parse::<u32>()) else {
                continue;
            };
            if let Ok(cap) = Capability::from_str(name) {
                assert_eq!(cap_number(cap), number, "CAP_{name}");
                seen += 1;
            }
        }
        assert!(seen >= 41, "only {seen} capabilities in the header");
    }

    #[test]
    fn sets_from_the_spec() {
        let sets = cap_sets(&caps(serde_json::json!({
            "bounding": ["CAP_CHOWN", "CAP_SYS_ADMIN", "CAP_CHECKPOINT_RESTORE"],
            "effective": ["CAP_KILL", "NET_BIND_SERVICE"],
            "permitted": ["CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_BPF"],
            "inheritable": [],
        })));
        assert_eq!(
            sets,
            CapSets {
                bounding: 1 | 1 << 21 | 1 << 40,
                effective: 1 << 5 | 1 << 10,
                permitted: 1 << 5 | 1 << 10 | 1 << 39,
                inheritable: 0,
                ambient: 0,
            }
        );
        assert_eq!(cap_sets(&caps(serde_json::json!({}))), CapSets::default());
        let all: Vec<String> = kernel_caps().into_iter().map(|(n, _)| n).collect();
        let sets = cap_sets(&caps(serde_json::json!({ "ambient": all })));
        assert_eq!(sets.ambient, (1 << 41) - 1);
    }

    #[test]
    fn bits_of_a_mask() {
        assert_eq!(mask_bits(0).count(), 0);
        assert_eq!(
            mask_bits(1 | 1 << 21 | 1 << 40 | 1 << 63).collect::<Vec<_>>(),
            [0, 21, 40, 63]
        );
        assert_eq!(
            mask_bits(u64::MAX).collect::<Vec<_>>(),
            (0..64).collect::<Vec<_>>()
        );
    }

    #[test]
    fn capset_words() {
        let sets = CapSets {
            bounding: u64::MAX,
            effective: 1 << 21 | 1 << 40,
            permitted: 1 << 21 | 1 << 39 | 1 << 40,
            inheritable: 1,
            ambient: 1,
        };
        let (header, data) = capset_data(&sets);
        assert_eq!(
            header,
            CapUserHeader {
                version: 0x2008_0522,
                pid: 0
            }
        );
        let low = CapUserData {
            effective: 1 << 21,
            permitted: 1 << 21,
            inheritable: 1,
        };
        let high = CapUserData {
            effective: 1 << 8,
            permitted: 1 << 7 | 1 << 8,
            inheritable: 0,
        };
        assert_eq!(data, [low, high]);
        assert_eq!(std::mem::size_of::<CapUserHeader>(), 8);
        assert_eq!(std::mem::size_of::<[CapUserData; 2]>(), 24);
    }

    /// The structures as the kernel reads them: capget of this thread agrees
    /// with /proc/self/status.
    #[test]
    fn kernel_reads_the_structures() {
        let mut header = CapUserHeader {
            version: LINUX_CAPABILITY_VERSION_3,
            pid: 0,
        };
        let mut data = [CapUserData::default(); 2];
        // SAFETY: capget writes one header and two data structs, which both
        // point to, with the layout the kernel expects for version 3.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_capget,
                &mut header as *mut CapUserHeader,
                data.as_mut_ptr(),
            )
        };
        assert_eq!(ret, 0, "capget: {}", std::io::Error::last_os_error());
        assert_eq!(header.version, LINUX_CAPABILITY_VERSION_3);
        let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        let field = |name: &str| {
            let line = status.lines().find(|l| l.starts_with(name)).unwrap();
            u64::from_str_radix(line[name.len()..].trim(), 16).unwrap()
        };
        let join =
            |f: fn(&CapUserData) -> u32| u64::from(f(&data[0])) | u64::from(f(&data[1])) << 32;
        assert_eq!(join(|d| d.effective), field("CapEff:"));
        assert_eq!(join(|d| d.permitted), field("CapPrm:"));
        assert_eq!(join(|d| d.inheritable), field("CapInh:"));
        let sets = CapSets {
            effective: field("CapEff:"),
            permitted: field("CapPrm:"),
            inheritable: field("CapInh:"),
            ..CapSets::default()
        };
        assert_eq!(capset_data(&sets).1, data);
    }
}

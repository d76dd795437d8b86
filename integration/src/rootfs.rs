//! Container fixtures: a busybox root filesystem built from the host's
//! static `/bin/busybox` (cached by content hash), the agent's initramfs
//! with that rootfs inside, a default OCI runtime spec, and a runc bundle of
//! the same rootfs for host-side comparisons.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use vessel_initramfs::Initramfs;

use crate::build::{cache_dir, static_binary};

/// Where [`agent_initramfs_with_rootfs`] puts the busybox rootfs in the guest.
pub const GUEST_BUSYBOX_ROOTFS: &str = "/vessel/rootfs/busybox";
/// `vessel-fsprobe` in that rootfs (a container's path).
pub const GUEST_FSPROBE: &str = "bin/fsprobe";

/// The host's busybox; Debian's `busybox-static` installs it statically linked.
const HOST_BUSYBOX: &str = "/bin/busybox";
const PACKAGE_HINT: &str = "install the Debian package busybox-static (.ci/install-deps does)";

/// Part of the cache key: change it whenever the layout below changes.
const LAYOUT_VERSION: &[u8] = b"vessel busybox rootfs v1";
/// Directories besides `bin`, with their modes.
const DIRS: [(&str, u32); 6] = [
    ("proc", 0o555),
    ("sys", 0o555),
    ("dev", 0o755),
    ("tmp", 0o1777),
    ("etc", 0o755),
    ("root", 0o700),
];
const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
                      nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
const GROUP: &str = "root:x:0:\nnogroup:x:65534:\n";

/// An OCI-style root filesystem of the host's static busybox: `bin/busybox`,
/// a symlink `bin/<applet>` -> `busybox` for every applet it lists,
/// `proc sys dev tmp etc root`, and `etc/passwd` (root, nobody) and
/// `etc/group`. Built once under `<cache>/rootfs/busybox-<hash>` (the hash
/// covers the binary, the applets and this layout) and moved into place by
/// an atomic rename, so concurrent builders never see half a tree. Treat it
/// as read-only: every test and benchmark shares it.
pub fn busybox_rootfs() -> Result<PathBuf> {
    static ROOTFS: OnceLock<PathBuf> = OnceLock::new();
    if let Some(path) = ROOTFS.get() {
        return Ok(path.clone());
    }
    let busybox =
        fs::read(HOST_BUSYBOX).with_context(|| format!("read {HOST_BUSYBOX}: {PACKAGE_HINT}"))?;
    ensure!(
        is_static_elf(&busybox),
        "{HOST_BUSYBOX} is not a statically linked x86-64 ELF (a dynamic busybox cannot run \
         in a bare rootfs): {PACKAGE_HINT}"
    );
    let applets = applets()?;

    let mut hasher = Sha256::new();
    hasher.update(LAYOUT_VERSION);
    hasher.update(&busybox);
    for applet in &applets {
        hasher.update(applet.as_bytes());
        hasher.update(b"\n");
    }
    hasher.update(PASSWD);
    hasher.update(GROUP);
    let digest = hasher.finalize();
    let name: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();

    let parent = cache_dir().join("rootfs");
    let path = parent.join(format!("busybox-{name}"));
    if !path.is_dir() {
        fs::create_dir_all(&parent).with_context(|| format!("create {}", parent.display()))?;
        let tmp = parent.join(format!(".busybox-{name}.{}.tmp", std::process::id()));
        if tmp.exists() {
            fs::remove_dir_all(&tmp).with_context(|| format!("remove {}", tmp.display()))?;
        }
        populate(&tmp, &busybox, &applets)
            .with_context(|| format!("build the busybox rootfs in {}", tmp.display()))?;
        if let Err(err) = fs::rename(&tmp, &path) {
            // Another builder won the race: its tree is identical.
            let _ = fs::remove_dir_all(&tmp);
            if !path.is_dir() {
                return Err(err).with_context(|| format!("move the rootfs to {}", path.display()));
            }
        }
    }
    Ok(ROOTFS.get_or_init(|| path).clone())
}

/// Whether `elf` is a 64-bit little-endian ELF without a program
/// interpreter (`PT_INTERP`), i.e. runs without a dynamic loader.
fn is_static_elf(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let u16_at = |at: usize| {
        elf.get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |at: usize| {
        elf.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |at: usize| {
        elf.get(at..at + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    // Magic, ELFCLASS64, ELFDATA2LSB.
    if elf.get(..6) != Some(b"\x7fELF\x02\x01".as_slice()) {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    let Ok(phoff) = usize::try_from(phoff) else {
        return false;
    };
    (0..usize::from(phnum)).all(|i| {
        let header = phoff + i * usize::from(phentsize);
        u32_at(header).is_some_and(|p_type| p_type != PT_INTERP)
    })
}

/// The applet names `busybox --list` prints, sorted.
fn applets() -> Result<Vec<String>> {
    let out = Command::new(HOST_BUSYBOX)
        .arg("--list")
        .output()
        .with_context(|| format!("run {HOST_BUSYBOX} --list: {PACKAGE_HINT}"))?;
    ensure!(
        out.status.success(),
        "{HOST_BUSYBOX} --list failed with {}",
        out.status
    );
    let mut applets: Vec<String> = String::from_utf8(out.stdout)
        .context("busybox --list printed non-UTF-8")?
        .lines()
        .map(str::trim)
        .filter(|name| !name.is_empty() && *name != "busybox")
        .map(String::from)
        .collect();
    applets.sort();
    applets.dedup();
    for applet in &applets {
        ensure!(
            !applet.contains('/') && applet != "." && applet != "..",
            "busybox --list printed the odd applet name {applet:?}"
        );
    }
    ensure!(!applets.is_empty(), "busybox --list printed no applets");
    Ok(applets)
}

/// Writes the rootfs tree at `root`.
fn populate(root: &Path, busybox: &[u8], applets: &[String]) -> Result<()> {
    let mode = |path: &Path, mode: u32| {
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .with_context(|| format!("chmod {}", path.display()))
    };
    fs::create_dir_all(root.join("bin"))?;
    mode(root, 0o755)?;
    mode(&root.join("bin"), 0o755)?;
    for (dir, bits) in DIRS {
        fs::create_dir(root.join(dir))?;
        mode(&root.join(dir), bits)?;
    }
    let bin = root.join("bin/busybox");
    fs::write(&bin, busybox)?;
    mode(&bin, 0o755)?;
    for applet in applets {
        symlink("busybox", root.join("bin").join(applet))?;
    }
    for (file, text) in [("etc/passwd", PASSWD), ("etc/group", GROUP)] {
        fs::write(root.join(file), text)?;
        mode(&root.join(file), 0o644)?;
    }
    Ok(())
}

/// The agent initramfs (as [`crate::agent_initramfs`]) plus the busybox
/// rootfs at [`GUEST_BUSYBOX_ROOTFS`], with `vessel-fsprobe` as
/// [`GUEST_FSPROBE`] in it. Deterministic, so cached by content
/// hash like every initramfs. The rootfs adds about 2 MB, which the guest
/// kernel unpacks in a few seconds where its copies are emulated.
pub fn agent_initramfs_with_rootfs() -> Result<PathBuf> {
    let agent = static_binary("vessel-agent", "vessel-agent")?;
    let fsprobe = static_binary("vessel-test-init", "vessel-fsprobe")?;
    let rootfs = busybox_rootfs()?;
    let mut image = Initramfs::with_init(&agent)?;
    add_tree(&mut image, &rootfs, GUEST_BUSYBOX_ROOTFS)?;
    image.add_file(
        &format!("{GUEST_BUSYBOX_ROOTFS}/{GUEST_FSPROBE}"),
        &fsprobe,
        0o755,
    )?;
    Ok(image.build_cached(&cache_dir().join("initramfs"))?)
}

/// Adds the host tree at `dir` to `image` at `guest` (directories, regular
/// files and symlinks, with their permission bits; owner root).
fn add_tree(image: &mut Initramfs, dir: &Path, guest: &str) -> Result<()> {
    let meta = fs::symlink_metadata(dir).with_context(|| format!("stat {}", dir.display()))?;
    image.add_dir(guest, meta.permissions().mode())?;
    let mut entries = fs::read_dir(dir)
        .with_context(|| format!("read {}", dir.display()))?
        .collect::<std::io::Result<Vec<_>>>()?;
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        let path = entry.path();
        let name = entry.file_name();
        let name = name
            .to_str()
            .with_context(|| format!("non-UTF-8 name {}", path.display()))?;
        let guest_path = format!("{guest}/{name}");
        let meta = fs::symlink_metadata(&path)?;
        let kind = meta.file_type();
        if kind.is_dir() {
            add_tree(image, &path, &guest_path)?;
        } else if kind.is_symlink() {
            let target = fs::read_link(&path)?;
            let target = target
                .to_str()
                .with_context(|| format!("non-UTF-8 link {}", path.display()))?;
            image.add_symlink(&guest_path, target)?;
        } else if kind.is_file() {
            image.add_file(&guest_path, &path, meta.permissions().mode())?;
        } else {
            bail!(
                "{} is neither a file, a directory nor a symlink",
                path.display()
            );
        }
    }
    Ok(())
}

/// A default OCI runtime spec for `args`, as `runc spec` writes it (runc's
/// default capabilities, `RLIMIT_NOFILE` 1024, no new privileges, the
/// standard mounts, pid/network/ipc/uts/mount namespaces, masked and
/// read-only paths), with hostname `vessel`, no terminal and a writable
/// `rootfs` root. Not included: the `/sys/fs/cgroup` mount, ambient
/// capabilities and the device rule runc's template has. Tests tweak the
/// value.
pub fn oci_spec(args: &[&str]) -> Value {
    let caps = json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": { "uid": 0, "gid": 0 },
            "args": args,
            "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {
                "bounding": caps.clone(),
                "effective": caps.clone(),
                "permitted": caps,
            },
            "rlimits": [{ "type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024 }],
            "noNewPrivileges": true,
        },
        "root": { "path": "rootfs", "readonly": false },
        "hostname": "vessel",
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc" },
            {
                "destination": "/dev",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
            },
            {
                "destination": "/dev/pts",
                "type": "devpts",
                "source": "devpts",
                "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
            },
            {
                "destination": "/dev/shm",
                "type": "tmpfs",
                "source": "shm",
                "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
            },
            {
                "destination": "/dev/mqueue",
                "type": "mqueue",
                "source": "mqueue",
                "options": ["nosuid", "noexec", "nodev"],
            },
            {
                "destination": "/sys",
                "type": "sysfs",
                "source": "sysfs",
                "options": ["nosuid", "noexec", "nodev", "ro"],
            },
        ],
        "linux": {
            "namespaces": [
                { "type": "pid" },
                { "type": "network" },
                { "type": "ipc" },
                { "type": "uts" },
                { "type": "mount" },
            ],
            "maskedPaths": [
                "/proc/acpi",
                "/proc/asound",
                "/proc/kcore",
                "/proc/keys",
                "/proc/latency_stats",
                "/proc/timer_list",
                "/proc/timer_stats",
                "/proc/sched_debug",
                "/sys/firmware",
                "/proc/scsi",
            ],
            "readonlyPaths": [
                "/proc/bus",
                "/proc/fs",
                "/proc/irq",
                "/proc/sys",
                "/proc/sysrq-trigger",
            ],
        },
    })
}

/// Writes `dir/config.json`: `spec` with `root.path` set to the (absolute)
/// busybox rootfs. The rootfs is the shared cache, so the bundle always
/// mounts it read-only (`root.readonly` true whatever `spec` says).
pub fn runc_bundle(dir: &Path, spec: &Value) -> Result<()> {
    let rootfs = busybox_rootfs()?;
    let mut spec = spec.clone();
    let root = rootfs
        .to_str()
        .with_context(|| format!("non-UTF-8 rootfs path {}", rootfs.display()))?;
    spec["root"] = json!({ "path": root, "readonly": true });
    fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let config = dir.join("config.json");
    fs::write(&config, serde_json::to_vec_pretty(&spec)?)
        .with_context(|| format!("write {}", config.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_elf_check() {
        let busybox = fs::read(HOST_BUSYBOX).expect(PACKAGE_HINT);
        assert!(is_static_elf(&busybox));
        // A dynamic executable: the test binary itself.
        let me = fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(!is_static_elf(&me));
        assert!(!is_static_elf(b"#!/bin/sh\n"));
        assert!(!is_static_elf(&busybox[..0x30]));
    }

    #[test]
    fn busybox_rootfs_layout() -> Result<()> {
        let root = busybox_rootfs()?;
        assert_eq!(busybox_rootfs()?, root, "memoised");
        assert!(root
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("busybox-")));
        assert_eq!(fs::read(root.join("bin/busybox"))?, fs::read(HOST_BUSYBOX)?);
        for applet in [
            "sh", "echo", "cat", "sleep", "awk", "stty", "ps", "hostname", "tr",
        ] {
            let link = root.join("bin").join(applet);
            assert_eq!(fs::read_link(&link)?, Path::new("busybox"), "{applet}");
        }
        for (dir, bits) in DIRS {
            let meta = fs::metadata(root.join(dir))?;
            assert!(meta.is_dir(), "{dir}");
            assert_eq!(meta.permissions().mode() & 0o7777, bits, "{dir}");
        }
        let passwd = fs::read_to_string(root.join("etc/passwd"))?;
        assert!(passwd.starts_with("root:x:0:0:"), "{passwd}");
        assert!(passwd.contains("nobody:x:65534:65534:"), "{passwd}");
        Ok(())
    }

    #[test]
    fn initramfs_tree_is_deterministic() -> Result<()> {
        let root = busybox_rootfs()?;
        let build = || -> Result<Vec<u8>> {
            let mut image = Initramfs::default();
            add_tree(&mut image, &root, GUEST_BUSYBOX_ROOTFS)?;
            Ok(image.to_bytes())
        };
        let bytes = build()?;
        assert_eq!(bytes, build()?);
        let entries = vessel_initramfs::read_archive(&bytes)?;
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        for name in [
            "vessel/rootfs/busybox/bin/busybox",
            "vessel/rootfs/busybox/tmp",
        ] {
            assert!(names.contains(&name), "{name} missing from {names:?}");
        }
        Ok(())
    }

    #[test]
    fn spec_matches_runc_defaults() {
        let spec = oci_spec(&["echo", "hi"]);
        assert_eq!(spec["ociVersion"], "1.0.2");
        assert_eq!(spec["process"]["args"], json!(["echo", "hi"]));
        assert_eq!(spec["process"]["capabilities"]["bounding"][1], "CAP_KILL");
        let mounts: Vec<&str> = spec["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["destination"].as_str().unwrap())
            .collect();
        assert_eq!(
            mounts,
            [
                "/proc",
                "/dev",
                "/dev/pts",
                "/dev/shm",
                "/dev/mqueue",
                "/sys"
            ]
        );
        assert_eq!(spec["linux"]["namespaces"].as_array().unwrap().len(), 5);
    }

    /// The spec and the rootfs together are a bundle runc runs (the host is
    /// root and `.ci/install-deps` installs runc).
    #[test]
    fn runc_runs_the_bundle() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let bundle = dir.path().join("bundle");
        runc_bundle(
            &bundle,
            &oci_spec(&["sh", "-c", "echo hi; cat /etc/passwd >/dev/null"]),
        )?;
        let state = dir.path().join("state");
        let id = format!("vessel-rootfs-test-{}", std::process::id());
        let out = Command::new("runc")
            .arg("--root")
            .arg(&state)
            .args(["run", "--bundle"])
            .arg(&bundle)
            .arg(&id)
            .output()
            .context("run runc (install it: .ci/install-deps)")?;
        let _ = Command::new("runc")
            .arg("--root")
            .arg(&state)
            .args(["delete", "-f", &id])
            .output();
        ensure!(
            out.status.success() && out.stdout == b"hi\n",
            "runc run: {}, stdout {:?}, stderr {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }
}

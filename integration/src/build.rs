//! Building (or reusing) what a guest boots: kernel, static binaries, initramfs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use anyhow::{bail, Context, Result};
use vessel_initramfs::Initramfs;

/// The only target we build guest binaries for (no musl target here).
pub const GUEST_TARGET: &str = "x86_64-unknown-linux-gnu";

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("integration/ has a parent")
        .to_path_buf()
}

/// The cache root, shared with `kernel-config/build.sh`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("VESSEL_CACHE_DIR") {
        return dir.into();
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cache")
        });
    base.join("vessel")
}

/// Path of the guest `vmlinux`, built by `kernel-config/build.sh` on first
/// use (minutes) and cached after that (milliseconds).
pub fn guest_kernel() -> Result<PathBuf> {
    static KERNEL: OnceLock<PathBuf> = OnceLock::new();
    if let Some(path) = KERNEL.get() {
        return Ok(path.clone());
    }
    let script = repo_root().join("kernel-config/build.sh");
    let out = Command::new(&script)
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("run {}", script.display()))?;
    if !out.status.success() {
        bail!("{} failed with {}", script.display(), out.status);
    }
    let stdout = String::from_utf8(out.stdout).context("kernel build printed non-UTF-8")?;
    let path = PathBuf::from(
        stdout
            .lines()
            .last()
            .context("kernel build printed no path")?,
    );
    if !path.is_file() {
        bail!(
            "kernel build named {}, which does not exist",
            path.display()
        );
    }
    Ok(KERNEL.get_or_init(|| path).clone())
}

/// Builds a binary of this workspace statically linked for the guest and
/// returns its path (stripped: every byte of the initramfs is copied by
/// emulated kernel code on some hosts).
pub fn static_binary(package: &str, bin: &str) -> Result<PathBuf> {
    build_binary(package, bin, Some(GUEST_TARGET))
}

/// Builds a host binary of this workspace (release) and returns its path.
pub fn host_binary(package: &str, bin: &str) -> Result<PathBuf> {
    build_binary(package, bin, None)
}

/// `cargo build --release` of one binary, for the guest (`target`: static,
/// in `target/guest/`) or the host (in `target/harness/`). Each has its own
/// target directory, so it never waits on the lock of the `cargo test` that
/// runs us, and the two never rebuild each other's dependencies.
fn build_binary(package: &str, bin: &str, target: Option<&str>) -> Result<PathBuf> {
    static BUILD: Mutex<()> = Mutex::new(());
    let _serial = BUILD
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let target_dir = repo_root().join(if target.is_some() {
        "target/guest"
    } else {
        "target/harness"
    });
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(repo_root())
        .args(["build", "--quiet", "--release", "-p", package, "--bin", bin])
        .env("CARGO_TARGET_DIR", &target_dir);
    let mut out_dir = target_dir.clone();
    match target {
        Some(triple) => {
            // --target keeps the flag off build scripts and proc macros.
            cmd.args(["--target", triple])
                .env("RUSTFLAGS", "-C target-feature=+crt-static")
                .env("CARGO_PROFILE_RELEASE_STRIP", "symbols");
            out_dir.push(triple);
        }
        None => {
            cmd.env_remove("RUSTFLAGS");
        }
    }
    let status = cmd
        .status()
        .with_context(|| format!("run cargo build for {package}"))?;
    if !status.success() {
        bail!("build of {package}/{bin} failed with {status}");
    }
    let path = out_dir.join("release").join(bin);
    if !path.is_file() {
        bail!("build of {bin} produced no {}", path.display());
    }
    Ok(path)
}

/// The `vessel-vmm` binary.
pub fn vessel_vmm() -> Result<PathBuf> {
    host_binary("vessel-vmm", "vessel-vmm")
}

/// The initramfs with `vessel-test-init` as `/init`.
pub fn test_initramfs() -> Result<PathBuf> {
    let init = static_binary("vessel-test-init", "vessel-test-init")?;
    Ok(Initramfs::with_init(&init)?.build_cached(&cache_dir().join("initramfs"))?)
}

/// The initramfs with the static `vessel-agent` as `/init`.
pub fn agent_initramfs() -> Result<PathBuf> {
    let agent = static_binary("vessel-agent", "vessel-agent")?;
    Ok(Initramfs::with_init(&agent)?.build_cached(&cache_dir().join("initramfs"))?)
}

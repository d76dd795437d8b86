//! Bad configurations get one clear line naming the field and a non-zero
//! exit, before any guest starts (no console output, no KVM work).

use std::path::Path;
use std::process::Command;

use anyhow::{ensure, Result};
use vessel_integration::{guest_kernel, test_initramfs, vessel_vmm};

/// Runs vessel-vmm with `args` and returns its stderr; it must fail fast.
fn refused(args: &[&str]) -> Result<String> {
    let out = Command::new(vessel_vmm()?).args(args).output()?;
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    ensure!(!out.status.success(), "{args:?} was accepted");
    ensure!(
        out.stdout.is_empty(),
        "{args:?} started a guest: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    ensure!(
        stderr.lines().count() == 1,
        "{args:?}: expected one line, got:\n{stderr}"
    );
    Ok(stderr)
}

fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

#[test]
fn bad_kernel_initrd_and_sizes_are_refused_before_boot() -> Result<()> {
    let (kernel, initrd) = (guest_kernel()?, test_initramfs()?);
    let (kernel, initrd) = (path(&kernel), path(&initrd));
    let dir = tempfile::tempdir()?;
    let not_elf = dir.path().join("not-a-kernel");
    std::fs::write(&not_elf, b"this is not an ELF file")?;

    let boot = |extra: &[&'static str]| -> Vec<String> {
        let mut args = vec![
            "--kernel".to_string(),
            kernel.to_string(),
            "--initrd".into(),
            initrd.into(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        args
    };
    let owned = |args: &[&str]| args.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            owned(&["--kernel", path(&not_elf), "--initrd", initrd]),
            "--kernel",
        ),
        (
            owned(&["--kernel", "/nonexistent/vmlinux", "--initrd", initrd]),
            "--kernel",
        ),
        (
            owned(&["--kernel", kernel, "--initrd", "/nonexistent/initrd"]),
            "--initrd",
        ),
        (owned(&["--kernel", kernel]), "--initrd"),
        (boot(&["--vcpus", "0"]), "--vcpus"),
        (boot(&["--vcpus", "4096"]), "--vcpus"),
        (boot(&["--memory-mib", "1"]), "--memory-mib"),
        (boot(&["--memory-mib", "99999999"]), "--memory-mib"),
        (boot(&["--memory-mib", "lots"]), "--memory-mib"),
    ];
    for (args, field) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let message = refused(&args)?;
        ensure!(
            message.contains(field),
            "{args:?}: {message:?} does not name {field}"
        );
    }
    Ok(())
}

#[test]
fn bad_config_files_are_refused_naming_the_field() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (kernel, initrd) = (guest_kernel()?, test_initramfs()?);
    let file = dir.path().join("vm.json");
    let cases = [
        (
            serde_json::json!({"kernel": kernel, "initrd": initrd, "vcpu": 2}),
            "\"vcpu\"",
        ),
        (
            serde_json::json!({"kernel": kernel, "initrd": initrd, "vcpus": "two"}),
            "\"vcpus\"",
        ),
        (
            serde_json::json!({"kernel": kernel, "initrd": initrd, "memory_mib": -5}),
            "\"memory_mib\"",
        ),
    ];
    for (json, field) in cases {
        std::fs::write(&file, json.to_string())?;
        let message = refused(&["--config", path(&file)])?;
        ensure!(
            message.contains(field),
            "{json}: {message:?} does not name {field}"
        );
    }
    std::fs::write(&file, "{ not json")?;
    let message = refused(&["--config", path(&file)])?;
    ensure!(
        message.contains(path(&file)),
        "{message:?} does not name the file"
    );
    Ok(())
}

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

    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--kernel", path(&not_elf), "--initrd", initrd],
            "--kernel",
        ),
        (
            vec!["--kernel", "/nonexistent/vmlinux", "--initrd", initrd],
            "--kernel",
        ),
        (
            vec!["--kernel", kernel, "--initrd", "/nonexistent/initrd"],
            "--initrd",
        ),
        (vec!["--kernel", kernel], "--initrd"),
        (
            vec!["--kernel", kernel, "--initrd", initrd, "--vcpus", "0"],
            "--vcpus",
        ),
        (
            vec!["--kernel", kernel, "--initrd", initrd, "--vcpus", "4096"],
            "--vcpus",
        ),
        (
            vec!["--kernel", kernel, "--initrd", initrd, "--memory-mib", "1"],
            "--memory-mib",
        ),
        (
            vec![
                "--kernel",
                kernel,
                "--initrd",
                initrd,
                "--memory-mib",
                "99999999",
            ],
            "--memory-mib",
        ),
        (
            vec![
                "--kernel",
                kernel,
                "--initrd",
                initrd,
                "--memory-mib",
                "lots",
            ],
            "--memory-mib",
        ),
    ];
    for (args, field) in cases {
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

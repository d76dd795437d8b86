//! `--serial-max-bytes` (`serial_max_bytes`): the console file's cap; `--log-max-bytes`: the VMM log's.

use std::io::Write;

use super::*;
use crate::profile::HostProfile;

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// A kernel and an initrd the checks accept, as boot flags.
fn boot_flags(dir: &Path) -> Vec<String> {
    let (kernel, initrd) = (dir.join("vmlinux"), dir.join("initrd"));
    File::create(&kernel)
        .unwrap()
        .write_all(b"\x7fELF\x02\x01")
        .unwrap();
    std::fs::write(&initrd, b"070701").unwrap();
    strings(&[
        "--kernel",
        kernel.to_str().unwrap(),
        "--initrd",
        initrd.to_str().unwrap(),
    ])
}

fn serial_of(args: Vec<String>) -> Result<SerialOutput, ConfigError> {
    match from_args(&args, HostProfile::Hardware)? {
        Launch::Boot(config) => Ok(config.serial),
        Launch::Restore(config) => Ok(config.serial),
    }
}

#[test]
fn a_capped_console_file_from_the_flag_or_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = boot_flags(dir.path());
    args.extend(strings(&[
        "--serial",
        "/c.log",
        "--serial-max-bytes",
        "8192",
    ]));
    assert_eq!(
        serial_of(args).unwrap(),
        SerialOutput::CappedFile {
            path: "/c.log".into(),
            max_bytes: 8192
        }
    );
    let file = dir.path().join("vm.json");
    std::fs::write(&file, r#"{"serial": "/c.log", "serial_max_bytes": 65536}"#).unwrap();
    let mut args = boot_flags(dir.path());
    args.extend(strings(&["--config", file.to_str().unwrap()]));
    assert_eq!(
        serial_of(args).unwrap(),
        SerialOutput::CappedFile {
            path: "/c.log".into(),
            max_bytes: 65536
        }
    );
}

#[test]
fn a_cap_needs_a_file_and_room() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = boot_flags(dir.path());
    args.extend(strings(&["--serial-max-bytes", "8192"]));
    assert_eq!(
        serial_of(args).unwrap_err().to_string(),
        "--serial-max-bytes: needs --serial PATH (the console on stdout has no cap)"
    );
    let mut args = boot_flags(dir.path());
    args.extend(strings(&[
        "--serial",
        "/c.log",
        "--serial-max-bytes",
        "100",
    ]));
    assert_eq!(
        serial_of(args).unwrap_err().to_string(),
        "--serial-max-bytes: 100 is below 4096"
    );
    let mut args = boot_flags(dir.path());
    args.extend(strings(&[
        "--serial",
        "/c.log",
        "--serial-max-bytes",
        "lots",
    ]));
    assert_eq!(
        serial_of(args).unwrap_err().to_string(),
        "--serial-max-bytes: \"lots\" is not a number"
    );
}

#[test]
fn a_restore_takes_a_cap_too() {
    let dir = tempfile::tempdir().unwrap();
    let (state, memory) = (dir.path().join("state"), dir.path().join("memory"));
    std::fs::write(&state, b"s").unwrap();
    std::fs::write(&memory, b"m").unwrap();
    let args = strings(&[
        "--restore-state",
        state.to_str().unwrap(),
        "--restore-memory",
        memory.to_str().unwrap(),
        "--serial",
        "/c.log",
        "--serial-max-bytes",
        "4096",
    ]);
    assert_eq!(
        serial_of(args).unwrap(),
        SerialOutput::CappedFile {
            path: "/c.log".into(),
            max_bytes: 4096
        }
    );
}

#[test]
fn the_log_cap_is_a_flag_checked_before_the_log_starts_and_again_with_the_rest() {
    assert_eq!(log_max_bytes(&[]).unwrap(), DEFAULT_LOG_MAX_BYTES);
    let args = strings(&["--log-max-bytes", "65536"]);
    assert_eq!(log_max_bytes(&args).unwrap(), 65536);
    for (bad, want) in [
        (vec!["--log-max-bytes", "100"], "below 4096"),
        (vec!["--log-max-bytes", "lots"], "lots"),
        (vec!["--log-max-bytes"], "--log-max-bytes"),
    ] {
        let err = log_max_bytes(&strings(&bad)).unwrap_err();
        assert!(err.to_string().contains(want), "{bad:?}: {err}");
    }
    let dir = tempfile::tempdir().unwrap();
    let mut args = boot_flags(dir.path());
    args.extend(strings(&["--log-max-bytes", "65536"]));
    assert!(serial_of(args.clone()).is_ok());
    args.extend(strings(&["--log-max-bytes", "10"]));
    assert!(matches!(serial_of(args), Err(ConfigError::LogMaxBytes(10))));
}

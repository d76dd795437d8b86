use super::*;
use crate::profile::HostProfile;
use std::io::Write;

const PROFILE: HostProfile = HostProfile::EmulatedCpl0;

/// A kernel and an initrd the checks accept, in `dir`.
fn boot_files(dir: &Path) -> (PathBuf, PathBuf) {
    let kernel = dir.join("vmlinux");
    let initrd = dir.join("initrd");
    File::create(&kernel)
        .unwrap()
        .write_all(b"\x7fELF\x02\x01")
        .unwrap();
    File::create(&initrd).unwrap().write_all(b"070701").unwrap();
    (kernel, initrd)
}

fn config(dir: &Path) -> VmConfig {
    let (kernel, initrd) = boot_files(dir);
    VmConfig {
        kernel,
        initrd,
        cmdline: "console=ttyS0".into(),
        vcpus: 1,
        memory_mib: 128,
        serial: SerialOutput::Stdout,
        api_sock: None,
        vsock_uds: None,
        guest_cid: 3,
        fs: None,
    }
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// The message of parsing `text` as the config file `/x.json`.
fn file_error(text: &str) -> String {
    FileConfig::parse(Path::new("/x.json"), text)
        .unwrap_err()
        .to_string()
}

/// `from_args` of a boot.
fn boot_from_args(args: &[String], profile: HostProfile) -> Result<VmConfig, ConfigError> {
    match from_args(args, profile)? {
        Launch::Boot(config) => Ok(config),
        Launch::Restore(restore) => panic!("a boot was parsed as a restore: {restore:?}"),
    }
}

/// The one-line error of `from_args`.
fn args_error(list: &[&str]) -> String {
    crate::error_chain(&from_args(&args(list), PROFILE).unwrap_err())
}

#[test]
fn accepts_a_good_config_and_names_bad_fields() {
    let dir = tempfile::tempdir().unwrap();
    let good = config(dir.path());
    good.validate().unwrap();

    let mut c = good.clone();
    c.kernel = dir.path().join("missing");
    assert!(c
        .validate()
        .unwrap_err()
        .to_string()
        .starts_with("--kernel"));

    let mut c = good.clone();
    c.kernel = c.initrd.clone();
    assert!(matches!(c.validate(), Err(ConfigError::KernelNotElf(_))));

    let mut c = good.clone();
    c.initrd = dir.path().join("missing");
    assert!(c
        .validate()
        .unwrap_err()
        .to_string()
        .starts_with("--initrd"));

    assert!(check_vcpus(0).is_err());
    assert!(check_vcpus(33).is_err());
    assert!(check_vcpus(300).is_err());
    assert_eq!(check_vcpus(32).unwrap(), 32);
    assert!(check_memory(63).is_err());
    assert!(check_memory(64 * 1024 + 1).is_err());
    assert_eq!(check_memory(64).unwrap(), 64);
}

#[test]
fn file_only_config() {
    let dir = tempfile::tempdir().unwrap();
    let (kernel, initrd) = boot_files(dir.path());
    let sock = dir.path().join("api.sock");
    let vsock = dir.path().join("v.sock");
    let json = serde_json::json!({
        "kernel": kernel,
        "initrd": initrd,
        "cmdline": "init=/sbin/init",
        "vcpus": 4,
        "memory_mib": 512,
        "serial": "/tmp/console.log",
        "api_sock": sock,
        "vsock_uds": vsock,
        "guest_cid": 42,
    });
    let file = write_file(dir.path(), "vm.json", &json.to_string());
    let config = boot_from_args(&args(&["--config", file.to_str().unwrap()]), PROFILE).unwrap();
    assert_eq!(
        config,
        VmConfig {
            kernel,
            initrd,
            cmdline: format!("{} quiet init=/sbin/init", PROFILE.default_cmdline()),
            vcpus: 4,
            memory_mib: 512,
            serial: SerialOutput::File("/tmp/console.log".into()),
            api_sock: Some(sock),
            vsock_uds: Some(vsock),
            guest_cid: 42,
            fs: None,
        }
    );
}

#[test]
fn flags_override_the_file_wherever_they_stand() {
    let dir = tempfile::tempdir().unwrap();
    let (kernel, initrd) = boot_files(dir.path());
    let other_initrd = write_file(dir.path(), "initrd2", "070701");
    let json = serde_json::json!({
        "kernel": kernel,
        "initrd": initrd,
        "cmdline": "from=file",
        "vcpus": 4,
        "memory_mib": 512,
        "serial": "/tmp/console.log",
    });
    let file = write_file(dir.path(), "vm.json", &json.to_string());
    let config = boot_from_args(
        &args(&[
            "--vcpus",
            "2",
            "--config",
            file.to_str().unwrap(),
            "--initrd",
            other_initrd.to_str().unwrap(),
            "--cmdline",
            "from=flag",
            "--serial",
            "stdout",
        ]),
        PROFILE,
    )
    .unwrap();
    assert_eq!(config.kernel, kernel);
    assert_eq!(config.initrd, other_initrd);
    assert_eq!(config.vcpus, 2);
    assert_eq!(config.memory_mib, 512);
    assert_eq!(config.serial, SerialOutput::Stdout);
    assert_eq!(
        config.cmdline,
        format!("{} quiet from=flag", PROFILE.default_cmdline())
    );
    assert_eq!(config.api_sock, None);
    assert_eq!(config.vsock_uds, None);
    assert_eq!(config.guest_cid, DEFAULT_GUEST_CID);
}

#[test]
fn cmdline_is_appended_after_the_profile_default_and_quiet() {
    let dir = tempfile::tempdir().unwrap();
    let (kernel, initrd) = boot_files(dir.path());
    let (kernel, initrd) = (kernel.to_str().unwrap(), initrd.to_str().unwrap());
    for profile in [HostProfile::Hardware, HostProfile::EmulatedCpl0] {
        let base = ["--kernel", kernel, "--initrd", initrd];
        let config = boot_from_args(&args(&base), profile).unwrap();
        assert_eq!(
            config.cmdline,
            format!("{} quiet", profile.default_cmdline())
        );
        assert_eq!(config.vcpus, DEFAULT_VCPUS);
        assert_eq!(config.memory_mib, DEFAULT_MEMORY_MIB);

        let mut extra = base.to_vec();
        extra.extend(["--cmdline", "  init=/bin/sh panic=1 "]);
        let config = boot_from_args(&args(&extra), profile).unwrap();
        assert_eq!(
            config.cmdline,
            format!("{} quiet init=/bin/sh panic=1", profile.default_cmdline())
        );
    }
}

#[test]
fn file_errors_name_the_path_and_the_field() {
    assert_eq!(
        file_error(r#"{"vcpu": 2}"#),
        r#"config file /x.json: unknown field "vcpu""#
    );
    for bad in [r#""two""#, "0", "33", "1.5", "-1", "null"] {
        assert_eq!(
            file_error(&format!(r#"{{"vcpus": {bad}}}"#)),
            r#"config file /x.json: "vcpus" must be a number from 1 to 32"#,
            "vcpus = {bad}"
        );
    }
    assert_eq!(
        file_error(r#"{"memory_mib": 32}"#),
        r#"config file /x.json: "memory_mib" must be a number from 64 to 65536"#
    );
    assert_eq!(
        file_error(r#"{"kernel": 7}"#),
        r#"config file /x.json: "kernel" must be a non-empty path"#
    );
    assert_eq!(
        file_error(r#"{"initrd": ""}"#),
        r#"config file /x.json: "initrd" must be a non-empty path"#
    );
    assert_eq!(
        file_error(r#"{"cmdline": ["a"]}"#),
        r#"config file /x.json: "cmdline" must be a string"#
    );
    assert_eq!(
        file_error(r#"{"serial": false}"#),
        r#"config file /x.json: "serial" must be "stdout" or a non-empty path"#
    );
    assert_eq!(
        file_error(r#"{"api_sock": {}}"#),
        r#"config file /x.json: "api_sock" must be a non-empty path"#
    );
    assert_eq!(
        file_error("[1, 2]"),
        "config file /x.json: the top level must be a JSON object"
    );
}

#[test]
fn unreadable_or_non_json_file_names_the_path_and_position() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.json");
    let missing = missing.to_str().unwrap();
    let line = args_error(&["--config", missing]);
    assert!(
        line.starts_with(&format!("config file {missing}: cannot read: ")),
        "{line}"
    );

    let broken = write_file(
        dir.path(),
        "broken.json",
        "{\n  \"vcpus\": 2\n  \"x\": 1\n}\n",
    );
    let broken = broken.to_str().unwrap();
    let line = args_error(&["--config", broken]);
    assert!(
        line.starts_with(&format!("config file {broken}: not valid JSON: ")),
        "{line}"
    );
    assert!(line.ends_with("at line 3 column 3"), "{line}");
    assert!(!line.contains('\n'), "{line}");
}

#[test]
fn flag_errors_name_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let (kernel, initrd) = boot_files(dir.path());
    let (kernel, initrd) = (kernel.to_str().unwrap(), initrd.to_str().unwrap());
    let missing = dir.path().join("missing");
    let missing = missing.to_str().unwrap();

    assert_eq!(
        args_error(&["--initrd", initrd]),
        r#"--kernel: missing; give the flag or the "kernel" key of the config file"#
    );
    assert_eq!(
        args_error(&["--kernel", kernel]),
        r#"--initrd: missing; give the flag or the "initrd" key of the config file"#
    );
    assert!(args_error(&["--kernel", missing, "--initrd", initrd])
        .starts_with(&format!("--kernel: cannot open {missing:?}: ")));
    assert_eq!(
        args_error(&["--kernel", initrd, "--initrd", initrd]),
        format!("--kernel: {initrd:?} is neither an ELF vmlinux nor a bzImage")
    );
    assert!(args_error(&["--kernel", kernel, "--initrd", missing])
        .starts_with(&format!("--initrd: cannot open {missing:?}: ")));

    let base = ["--kernel", kernel, "--initrd", initrd];
    let with = |more: &[&str]| {
        let mut list = base.to_vec();
        list.extend(more);
        args_error(&list)
    };
    assert_eq!(with(&["--vcpus", "0"]), "--vcpus: 0 is out of range 1..=32");
    assert_eq!(
        with(&["--vcpus", "300"]),
        "--vcpus: 300 is out of range 1..=32"
    );
    assert_eq!(
        with(&["--vcpus", "two"]),
        r#"--vcpus: "two" is not a number"#
    );
    assert_eq!(
        with(&["--memory-mib", "63"]),
        "--memory-mib: 63 is out of range 64..=65536"
    );
    assert_eq!(
        with(&["--memory-mib"]),
        "--memory-mib: missing value (see --help)"
    );
    assert_eq!(with(&["--vcpu", "2"]), "unknown option --vcpu (see --help)");
    let long = "x".repeat(crate::boot::params::CMDLINE_MAX_SIZE);
    assert_eq!(
        with(&["--cmdline", &long]),
        "--cmdline: the kernel command line is longer than 2047 bytes"
    );
}

#[test]
fn api_sock_needs_its_directory_and_no_other_file_in_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let (kernel, initrd) = boot_files(dir.path());
    let (kernel, initrd) = (kernel.to_str().unwrap(), initrd.to_str().unwrap());
    let with_sock = |sock: &Path| {
        boot_from_args(
            &args(&[
                "--kernel",
                kernel,
                "--initrd",
                initrd,
                "--api-sock",
                sock.to_str().unwrap(),
            ]),
            PROFILE,
        )
    };

    let fresh = dir.path().join("api.sock");
    assert_eq!(with_sock(&fresh).unwrap().api_sock, Some(fresh.clone()));

    let stale = dir.path().join("stale.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&stale).unwrap();
    assert_eq!(with_sock(&stale).unwrap().api_sock, Some(stale.clone()));

    let no_dir = dir.path().join("nope/api.sock");
    assert_eq!(
        crate::error_chain(&with_sock(&no_dir).unwrap_err()),
        format!("--api-sock: the directory of {no_dir:?} does not exist")
    );
    let file = Path::new(initrd);
    assert_eq!(
        crate::error_chain(&with_sock(file).unwrap_err()),
        format!("--api-sock: {file:?} exists and is not a socket")
    );
    assert_eq!(
        crate::error_chain(&with_sock(dir.path()).unwrap_err()),
        format!("--api-sock: {:?} exists and is not a socket", dir.path())
    );
}

#[test]
fn vsock_flags_and_keys() {
    let dir = tempfile::tempdir().unwrap();
    let (kernel, initrd) = boot_files(dir.path());
    let (kernel, initrd) = (kernel.to_str().unwrap(), initrd.to_str().unwrap());
    let base = ["--kernel", kernel, "--initrd", initrd];
    let with = |more: &[&str]| {
        let mut list = base.to_vec();
        list.extend(more);
        boot_from_args(&args(&list), PROFILE)
    };
    let uds = dir.path().join("v.sock");
    let config = with(&["--vsock-uds", uds.to_str().unwrap(), "--guest-cid", "7"]).unwrap();
    assert_eq!(config.vsock_uds, Some(uds.clone()));
    assert_eq!(config.guest_cid, 7);
    assert_eq!(with(&[]).unwrap().guest_cid, 3);

    let err = |more: &[&str]| crate::error_chain(&with(more).unwrap_err());
    assert_eq!(
        err(&["--guest-cid", "2"]),
        "--guest-cid: 2 is out of range 3..=4294967294"
    );
    assert_eq!(
        err(&["--guest-cid", "4294967295"]),
        "--guest-cid: 4294967295 is out of range 3..=4294967294"
    );
    assert_eq!(
        err(&["--guest-cid", "x"]),
        r#"--guest-cid: "x" is not a number"#
    );
    assert_eq!(
        err(&["--vsock-uds"]),
        "--vsock-uds: missing value (see --help)"
    );
    let no_dir = dir.path().join("nope/v.sock");
    assert_eq!(
        err(&["--vsock-uds", no_dir.to_str().unwrap()]),
        format!("--vsock-uds: the directory of {no_dir:?} does not exist")
    );
    assert_eq!(
        err(&["--vsock-uds", initrd]),
        format!(
            "--vsock-uds: {:?} exists and is not a socket",
            Path::new(initrd)
        )
    );

    assert_eq!(
        file_error(r#"{"guest_cid": 1}"#),
        r#"config file /x.json: "guest_cid" must be a number from 3 to 4294967294"#
    );
    assert_eq!(
        file_error(r#"{"vsock_uds": ""}"#),
        r#"config file /x.json: "vsock_uds" must be a non-empty path"#
    );
}

#[test]
fn fs_flags_and_keys() {
    let dir = tempfile::tempdir().unwrap();
    let (kernel, initrd) = boot_files(dir.path());
    let (kernel, initrd) = (kernel.to_str().unwrap(), initrd.to_str().unwrap());
    let share = dir.path().join("share");
    std::fs::create_dir(&share).unwrap();
    let share_str = share.to_str().unwrap();
    let base = ["--kernel", kernel, "--initrd", initrd];
    let with = |more: &[&str]| {
        let mut list = base.to_vec();
        list.extend(more);
        boot_from_args(&args(&list), PROFILE)
    };
    assert_eq!(with(&[]).unwrap().fs, None, "no fs device without --fs-dir");
    assert_eq!(
        with(&["--fs-dir", share_str]).unwrap().fs,
        Some(FsConfig {
            dir: share.clone(),
            tag: "vessel".into(),
            cache: CacheMode::Auto,
            xattr: true,
        })
    );
    let full = [
        "--fs-dir",
        share_str,
        "--fs-tag",
        "pod0",
        "--fs-cache",
        "never",
        "--fs-xattr",
        "off",
    ];
    assert_eq!(
        with(&full).unwrap().fs,
        Some(FsConfig {
            dir: share.clone(),
            tag: "pod0".into(),
            cache: CacheMode::Never,
            xattr: false,
        })
    );
    let tag36 = "t".repeat(36);
    assert_eq!(
        with(&["--fs-dir", share_str, "--fs-tag", &tag36])
            .unwrap()
            .fs
            .unwrap()
            .tag,
        tag36
    );

    let err = |more: &[&str]| crate::error_chain(&with(more).unwrap_err());
    let missing = dir.path().join("nope");
    assert_eq!(
        err(&["--fs-dir", missing.to_str().unwrap()]),
        format!("--fs-dir: {missing:?} does not exist")
    );
    assert_eq!(
        err(&["--fs-dir", initrd]),
        format!("--fs-dir: {:?} is not a directory", Path::new(initrd))
    );
    let tag37 = "t".repeat(37);
    assert_eq!(
        err(&["--fs-dir", share_str, "--fs-tag", &tag37]),
        format!("--fs-tag: {tag37:?} must be 1 to 36 bytes without NUL")
    );
    assert_eq!(
        err(&["--fs-dir", share_str, "--fs-tag", ""]),
        r#"--fs-tag: "" must be 1 to 36 bytes without NUL"#
    );
    assert_eq!(
        err(&["--fs-dir", share_str, "--fs-cache", "sometimes"]),
        r#"--fs-cache: "sometimes" is not auto, always or never"#
    );
    assert_eq!(
        err(&["--fs-dir", share_str, "--fs-xattr", "yes"]),
        r#"--fs-xattr: "yes" is not on or off"#
    );
    assert_eq!(
        err(&["--fs-tag", "x"]),
        r#"--fs-tag: needs --fs-dir (or the "fs_dir" key of the config file)"#
    );
    assert_eq!(
        err(&["--fs-xattr", "on"]),
        r#"--fs-xattr: needs --fs-dir (or the "fs_dir" key of the config file)"#
    );
    assert_eq!(err(&["--fs-dir"]), "--fs-dir: missing value (see --help)");

    // The same from a config file; flags override it.
    let json = serde_json::json!({
        "kernel": kernel,
        "initrd": initrd,
        "fs_dir": share,
        "fs_tag": "from-file",
        "fs_cache": "always",
        "fs_xattr": "off",
    });
    let file = write_file(dir.path(), "vm.json", &json.to_string());
    let file = file.to_str().unwrap();
    let fs = boot_from_args(&args(&["--config", file]), PROFILE)
        .unwrap()
        .fs
        .unwrap();
    assert_eq!(
        (fs.tag.as_str(), fs.cache, fs.xattr),
        ("from-file", CacheMode::Always, false)
    );
    let fs = boot_from_args(&args(&["--config", file, "--fs-xattr", "on"]), PROFILE)
        .unwrap()
        .fs
        .unwrap();
    assert!(fs.xattr);
    assert_eq!(
        FileConfig::parse(Path::new("/x.json"), r#"{"fs_xattr": true}"#)
            .unwrap()
            .fs_xattr,
        Some(true)
    );
    assert_eq!(
        file_error(r#"{"fs_dir": ""}"#),
        r#"config file /x.json: "fs_dir" must be a non-empty path"#
    );
    assert_eq!(
        file_error(&format!(r#"{{"fs_tag": "{tag37}"}}"#)),
        r#"config file /x.json: "fs_tag" must be a tag of 1 to 36 bytes without NUL"#
    );
    assert_eq!(
        file_error(r#"{"fs_tag": 5}"#),
        r#"config file /x.json: "fs_tag" must be a tag of 1 to 36 bytes without NUL"#
    );
    assert_eq!(
        file_error(r#"{"fs_cache": "none"}"#),
        r#"config file /x.json: "fs_cache" must be "auto", "always" or "never""#
    );
    assert_eq!(
        file_error(r#"{"fs_xattr": 1}"#),
        r#"config file /x.json: "fs_xattr" must be true, false, "on" or "off""#
    );
    assert_eq!(
        file_error(r#"{"fs_dri": "/x"}"#),
        r#"config file /x.json: unknown field "fs_dri""#
    );
}

#[test]
fn the_jails_flags_leave_the_vm_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let (kernel, initrd) = boot_files(dir.path());
    let (kernel, initrd) = (kernel.to_str().unwrap(), initrd.to_str().unwrap());
    let base = ["--kernel", kernel, "--initrd", initrd];
    let plain = boot_from_args(&args(&base), PROFILE).unwrap();
    let mut jailed = base.to_vec();
    jailed.extend(["--jail", "off", "--seccomp", "log", "--debug-api", "on"]);
    assert_eq!(boot_from_args(&args(&jailed), PROFILE).unwrap(), plain);
    let mut missing = base.to_vec();
    missing.push("--rlimit-nofile");
    assert_eq!(
        args_error(&missing),
        "--rlimit-nofile: missing value (see --help)"
    );
}

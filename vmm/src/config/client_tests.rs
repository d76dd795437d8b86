//! The contract with `vessel-vmm-client`: what its specs write is what
//! this parser reads back, field by field.

use std::io::Write;

use vessel_vmm_client::{BootSpec, Endpoints, FsSpec, RestoreSpec};

use super::*;
use crate::profile::HostProfile;

fn strings(args: Vec<std::ffi::OsString>) -> Vec<String> {
    args.into_iter().map(|a| a.into_string().unwrap()).collect()
}

#[test]
fn a_client_boot_spec_parses_to_its_config() {
    let dir = tempfile::tempdir().unwrap();
    let (kernel, initrd) = (dir.path().join("vmlinux"), dir.path().join("initrd"));
    File::create(&kernel)
        .unwrap()
        .write_all(b"\x7fELF\x02\x01")
        .unwrap();
    std::fs::write(&initrd, b"070701").unwrap();
    let share = dir.path().join("shared");
    std::fs::create_dir(&share).unwrap();
    let mut spec = BootSpec::new(&kernel, &initrd);
    spec.vcpus = 2;
    spec.memory_mib = 256;
    spec.cmdline = "vessel.log=debug".into();
    spec.endpoints = Endpoints {
        serial_max_bytes: Some(65536),
        ..Endpoints::in_dir(dir.path())
    };
    spec.fs = Some(FsSpec::new(&share, "podshare"));
    let profile = HostProfile::Hardware;
    let Launch::Boot(config) = from_args(&strings(spec.args()), profile).unwrap() else {
        panic!("a boot spec parsed as a restore");
    };
    assert_eq!(
        config,
        VmConfig {
            kernel,
            initrd,
            cmdline: full_cmdline(profile, Some("vessel.log=debug")),
            vcpus: 2,
            memory_mib: 256,
            serial: SerialOutput::CappedFile {
                path: dir.path().join("console.log"),
                max_bytes: 65536,
            },
            api_sock: Some(dir.path().join("api.sock")),
            vsock_uds: Some(dir.path().join("vsock.sock")),
            guest_cid: DEFAULT_GUEST_CID,
            fs: Some(FsConfig {
                dir: share,
                tag: "podshare".into(),
                cache: CacheMode::default(),
                xattr: true,
            }),
        }
    );
}

#[test]
fn a_client_restore_spec_parses_to_its_config() {
    let dir = tempfile::tempdir().unwrap();
    let (state, memory) = (dir.path().join("state"), dir.path().join("memory"));
    std::fs::write(&state, b"s").unwrap();
    std::fs::write(&memory, b"m").unwrap();
    let mut spec = RestoreSpec::new(&state, &memory);
    spec.endpoints = Endpoints::in_dir(dir.path());
    spec.fs_dir = Some(dir.path().to_owned());
    let Launch::Restore(config) = from_args(&strings(spec.args()), HostProfile::Hardware).unwrap()
    else {
        panic!("a restore spec parsed as a boot");
    };
    assert_eq!(
        config,
        RestoreConfig {
            state,
            memory,
            serial: SerialOutput::File(dir.path().join("console.log")),
            api_sock: Some(dir.path().join("api.sock")),
            vsock_uds: Some(dir.path().join("vsock.sock")),
            fs: Some(FsConfig {
                dir: dir.path().to_owned(),
                tag: String::new(),
                cache: CacheMode::default(),
                xattr: true,
            }),
        }
    );
}

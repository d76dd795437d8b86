use std::path::Path;

use super::*;
use crate::config::from_args;
use crate::profile::HostProfile;

/// A state and a memory file in `dir` (restore only checks they open).
fn snapshot_files(dir: &Path) -> (PathBuf, PathBuf) {
    let (state, memory) = (dir.join("state"), dir.join("memory"));
    std::fs::write(&state, b"state").unwrap();
    std::fs::write(&memory, b"memory").unwrap();
    (state, memory)
}

fn launch(list: &[&str]) -> Result<Launch, ConfigError> {
    let args: Vec<String> = list.iter().map(|s| s.to_string()).collect();
    from_args(&args, HostProfile::EmulatedCpl0)
}

fn error(list: &[&str]) -> String {
    crate::error_chain(&launch(list).unwrap_err())
}

#[test]
fn flags_restore_with_the_host_side_settings() {
    let dir = tempfile::tempdir().unwrap();
    let (state, memory) = snapshot_files(dir.path());
    let (vsock, api) = (dir.path().join("v.sock"), dir.path().join("api.sock"));
    let got = launch(&[
        "--restore-state",
        state.to_str().unwrap(),
        "--restore-memory",
        memory.to_str().unwrap(),
        "--vsock-uds",
        vsock.to_str().unwrap(),
        "--api-sock",
        api.to_str().unwrap(),
        "--serial",
        "/tmp/console",
    ])
    .unwrap();
    assert_eq!(
        got,
        Launch::Restore(RestoreConfig {
            state,
            memory,
            serial: SerialOutput::File("/tmp/console".into()),
            api_sock: Some(api),
            vsock_uds: Some(vsock),
            fs: None,
        })
    );
}

#[test]
fn the_share_directory_is_the_restoring_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let (state, memory) = snapshot_files(dir.path());
    let (state, memory) = (state.to_str().unwrap(), memory.to_str().unwrap());
    let base = ["--restore-state", state, "--restore-memory", memory];
    let Launch::Restore(got) = launch(&[&base[..], &["--fs-dir", "/srv/pod"]].concat()).unwrap()
    else {
        panic!("not a restore");
    };
    let fs = got.fs.unwrap();
    assert_eq!(fs.dir, PathBuf::from("/srv/pod"));
    assert_eq!(fs.tag, "", "no --fs-tag: the snapshot's tag");
    let with_tag = [
        &base[..],
        &["--fs-dir", "/srv", "--fs-tag", "pod", "--fs-xattr", "off"],
    ];
    let Launch::Restore(got) = launch(&with_tag.concat()).unwrap() else {
        panic!("not a restore");
    };
    let fs = got.fs.unwrap();
    assert_eq!((fs.tag.as_str(), fs.xattr), ("pod", false));
    assert_eq!(
        error(&[&base[..], &["--fs-tag", "pod"]].concat()),
        "--fs-tag: needs --fs-dir (or the \"fs_dir\" key of the config file)"
    );
}

#[test]
fn the_config_file_restores_too_and_flags_override_it() {
    let dir = tempfile::tempdir().unwrap();
    let (state, memory) = snapshot_files(dir.path());
    let other = dir.path().join("other-state");
    std::fs::write(&other, b"x").unwrap();
    let file = dir.path().join("vm.json");
    let json = serde_json::json!({"restore_state": state, "restore_memory": memory});
    std::fs::write(&file, json.to_string()).unwrap();
    let Launch::Restore(got) = launch(&["--config", file.to_str().unwrap()]).unwrap() else {
        panic!("not a restore");
    };
    assert_eq!((got.state, got.memory.clone()), (state, memory.clone()));
    let Launch::Restore(got) = launch(&[
        "--config",
        file.to_str().unwrap(),
        "--restore-state",
        other.to_str().unwrap(),
    ])
    .unwrap() else {
        panic!("not a restore");
    };
    assert_eq!((got.state, got.memory), (other, memory));
    assert_eq!(got.serial, SerialOutput::Stdout);
}

#[test]
fn the_guests_settings_are_refused_beside_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let (state, memory) = snapshot_files(dir.path());
    let (state, memory) = (state.to_str().unwrap(), memory.to_str().unwrap());
    for (flag, value) in [
        ("--kernel", "/vmlinux"),
        ("--initrd", "/initrd"),
        ("--cmdline", "quiet"),
        ("--vcpus", "2"),
        ("--memory-mib", "256"),
        ("--guest-cid", "5"),
    ] {
        let list = [
            "--restore-state",
            state,
            "--restore-memory",
            memory,
            flag,
            value,
        ];
        assert_eq!(
            error(&list),
            format!(
                "{flag}: not with --restore-state (the snapshot holds the guest and its settings)"
            )
        );
    }
}

#[test]
fn both_files_are_needed_and_must_open() {
    let dir = tempfile::tempdir().unwrap();
    let (state, memory) = snapshot_files(dir.path());
    let (state, memory) = (state.to_str().unwrap(), memory.to_str().unwrap());
    assert_eq!(
        error(&["--restore-state", state]),
        "--restore-memory: missing; give the flag or the \"restore_memory\" key of the config file"
    );
    assert_eq!(
        error(&["--restore-memory", memory]),
        "--restore-state: missing; give the flag or the \"restore_state\" key of the config file"
    );
    assert_eq!(
        error(&["--restore-state", "/nonexistent/state", "--restore-memory", memory]),
        "--restore-state: cannot open \"/nonexistent/state\": No such file or directory (os error 2)"
    );
    assert_eq!(
        error(&[
            "--restore-state",
            state,
            "--restore-memory",
            memory,
            "--vsock-uds",
            "/nonexistent/v.sock"
        ]),
        "--vsock-uds: the directory of \"/nonexistent/v.sock\" does not exist"
    );
}

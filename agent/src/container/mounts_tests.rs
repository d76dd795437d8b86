use super::*;
use std::os::unix::fs::symlink;

fn opts(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn options_split_into_flags_propagation_and_data() {
    let o = parse_options(&opts(&[
        "nosuid",
        "strictatime",
        "mode=755",
        "size=65536k",
        "rprivate",
        "ro",
        "rw",
    ]));
    assert_eq!(o.flags, libc::MS_NOSUID | libc::MS_STRICTATIME);
    assert_eq!(o.propagation, [libc::MS_PRIVATE | libc::MS_REC]);
    assert_eq!(o.data, ["mode=755", "size=65536k"]);
    let o = parse_options(&opts(&["rbind", "ro", "nodev"]));
    assert_eq!(
        o.flags,
        libc::MS_BIND | libc::MS_REC | libc::MS_RDONLY | libc::MS_NODEV
    );
}

#[test]
fn secure_join_keeps_symlinks_inside_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("etc/real")).unwrap();
    symlink("/", root.join("etc/abs")).unwrap();
    symlink("../../../..", root.join("etc/up")).unwrap();
    symlink("real", root.join("etc/rel")).unwrap();
    symlink("loop2", root.join("loop1")).unwrap();
    symlink("loop1", root.join("loop2")).unwrap();

    let join = |p: &str| secure_join(root, Path::new(p)).unwrap();
    assert_eq!(join("/etc/abs/x").0, root.join("x"));
    assert_eq!(join("/etc/up/etc").0, root.join("etc"));
    assert_eq!(join("/../../etc/rel/y").0, root.join("etc/real/y"));
    let (path, missing) = join("/etc/real/a/b");
    assert_eq!(path, root.join("etc/real/a/b"));
    assert_eq!(
        missing,
        [root.join("etc/real/a"), root.join("etc/real/a/b")]
    );
    assert!(join("/etc/real").1.is_empty());
    let err = secure_join(root, Path::new("/loop1")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ELOOP));
}

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Mount {
    oci_spec::runtime::MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source)
        .options(opts(options))
        .build()
        .unwrap()
}

fn lines(steps: Vec<Step>) -> Vec<String> {
    steps.into_iter().map(|s| format!("{s:?}")).collect()
}

#[test]
fn mounts_make_missing_targets_and_children_of_earlier_mounts() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("proc")).unwrap();
    std::fs::create_dir_all(root.join("dev/pts")).unwrap();
    let r = root.display();
    let mut planner = MountPlanner::new(root);
    planner
        .mount(&mount("/proc", "proc", "proc", &["nosuid"]))
        .unwrap();
    planner
        .mount(&mount("/dev", "tmpfs", "tmpfs", &["mode=755"]))
        .unwrap();
    planner
        .mount(&mount("/dev/pts", "devpts", "devpts", &["newinstance"]))
        .unwrap();
    planner
        .mount(&mount("/sys/fs/cgroup", "cgroup", "cgroup", &["ro"]))
        .unwrap();
    assert!(planner.has_mount("/dev"));
    let got = lines(planner.into_steps());
    let mkdirs: Vec<&String> = got.iter().filter(|l| l.starts_with("Mkdir")).collect();
    // /dev/pts exists in the rootfs but not in the new tmpfs: made in the
    // child; /sys/fs/cgroup is missing: all three made.
    assert_eq!(mkdirs.len(), 4, "{got:#?}");
    assert!(mkdirs[0].contains(&format!("{r}/dev/pts")));
    assert!(mkdirs[3].contains(&format!("{r}/sys/fs/cgroup")));
    assert!(got
        .iter()
        .any(|l| l.contains("cgroup2") && l.contains(&format!("{r}/sys/fs/cgroup"))));
}

#[test]
fn bind_mounts_remount_for_flags_and_touch_file_targets() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let src = dir.path().join("hosts");
    std::fs::write(&src, "127.0.0.1 localhost\n").unwrap();
    let mut planner = MountPlanner::new(&root);
    planner
        .mount(&mount(
            "/etc/hosts",
            "bind",
            src.to_str().unwrap(),
            &["rbind", "ro", "rprivate"],
        ))
        .unwrap();
    let got = lines(planner.into_steps());
    assert!(got[0].starts_with("Mkdir"), "{got:#?}");
    assert!(got[1].starts_with("Touch"), "{got:#?}");
    assert!(
        got[2].starts_with("Mount") && got[2].contains("flags: 20480"),
        "{got:#?}"
    );
    assert!(
        got[3].starts_with("RemountBind") && got[3].contains("flags: 1"),
        "{got:#?}"
    );
    assert!(got[4].starts_with("Mount") && got[4].contains("fstype: None"));

    let mut planner = MountPlanner::new(&root);
    let err = planner
        .mount(&mount("/x", "bind", "/nonexistent/src", &["bind"]))
        .unwrap_err();
    assert!(err.to_string().contains("/nonexistent/src"), "{err}");
    let err = planner
        .mount(&mount("relative", "tmpfs", "tmpfs", &[]))
        .unwrap_err();
    assert!(err.to_string().contains("not absolute"));
}

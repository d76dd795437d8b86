use super::*;
use std::cell::Cell;

/// A spec over small files in `dir`.
fn spec(dir: &Path) -> TemplateSpec {
    for (name, text) in [("vmlinux", "kernel"), ("initrd", "cpio"), ("vmm", "elf")] {
        fs::write(dir.join(name), text).unwrap();
    }
    TemplateSpec {
        kernel: dir.join("vmlinux"),
        initrd: dir.join("initrd"),
        vcpus: 1,
        memory_mib: 128,
        vmm: dir.join("vmm"),
        recipe: "console=ttyS0 vsock".into(),
    }
}

/// A maker that writes both files and counts its calls.
fn maker(calls: &Cell<u32>) -> impl FnOnce(&Path) -> io::Result<()> + '_ {
    move |dir: &Path| {
        calls.set(calls.get() + 1);
        fs::write(dir.join("state"), b"state")?;
        fs::write(dir.join("memory"), vec![0u8; 4096])
    }
}

#[test]
fn made_once_then_reused_read_only() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = spec(tmp.path());
    let cache = TemplateCache::new(tmp.path().join("templates"));
    let calls = Cell::new(0);
    let first = cache.get_or_create(&spec, maker(&calls)).unwrap();
    let again = cache.get_or_create(&spec, maker(&calls)).unwrap();
    assert_eq!(first, again);
    assert_eq!(calls.get(), 1, "made once");
    for path in [&first.state, &first.memory] {
        let mode = fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o400, "{}", path.display());
    }
    for dir in [
        tmp.path().join("templates"),
        first.state.parent().unwrap().to_owned(),
    ] {
        let mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}", dir.display());
    }
}

#[test]
fn every_input_changes_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let base = spec(tmp.path());
    let key = TemplateCache::key(&base).unwrap();
    let mut more_vcpus = base.clone();
    more_vcpus.vcpus = 2;
    let mut more_memory = base.clone();
    more_memory.memory_mib = 256;
    assert_ne!(TemplateCache::key(&more_vcpus).unwrap(), key);
    assert_ne!(TemplateCache::key(&more_memory).unwrap(), key);
    let mut other_recipe = base.clone();
    other_recipe.recipe.push_str(" fs=vessel");
    assert_ne!(TemplateCache::key(&other_recipe).unwrap(), key);
    for file in [&base.kernel, &base.initrd, &base.vmm] {
        let old = fs::read(file).unwrap();
        fs::write(file, b"changed").unwrap();
        assert_ne!(
            TemplateCache::key(&base).unwrap(),
            key,
            "{}",
            file.display()
        );
        fs::write(file, old).unwrap();
    }
    assert_eq!(TemplateCache::key(&base).unwrap(), key);
}

#[test]
fn half_written_and_stale_templates_are_made_again() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = spec(tmp.path());
    let cache = TemplateCache::new(tmp.path().join("templates"));
    let calls = Cell::new(0);
    let template = cache.get_or_create(&spec, maker(&calls)).unwrap();
    let dir = template.state.parent().unwrap().to_owned();

    // Stale: the memory file changed after it was sealed, even with its
    // size kept.
    fs::set_permissions(&template.memory, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&template.memory, vec![1u8; 4096]).unwrap();
    cache.get_or_create(&spec, maker(&calls)).unwrap();
    assert_eq!(calls.get(), 2);
    assert_eq!(fs::read(&template.memory).unwrap(), vec![0u8; 4096]);

    // Stale: the state file was replaced by another one.
    let other = dir.join("state.other");
    fs::write(&other, b"state").unwrap();
    fs::rename(&other, &template.state).unwrap();
    cache.get_or_create(&spec, maker(&calls)).unwrap();
    assert_eq!(calls.get(), 3);

    // Checking digests too, an intact template is reused.
    let digests = cache.clone().verify_digests();
    digests.get_or_create(&spec, maker(&calls)).unwrap();
    assert_eq!(calls.get(), 3);

    // Half-written: no ready file.
    fs::set_permissions(dir.join("ready"), fs::Permissions::from_mode(0o644)).unwrap();
    fs::remove_file(dir.join("ready")).unwrap();
    cache.get_or_create(&spec, maker(&calls)).unwrap();
    assert_eq!(calls.get(), 4);
}

#[test]
fn a_failed_maker_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = spec(tmp.path());
    let root = tmp.path().join("templates");
    let cache = TemplateCache::new(&root);
    let err = cache
        .get_or_create(&spec, |dir: &Path| {
            fs::write(dir.join("state"), b"half")?;
            Err(io::Error::other("the guest never answered"))
        })
        .unwrap_err();
    assert!(matches!(err, TemplateError::Make { .. }), "{err}");
    let err = cache
        .get_or_create(&spec, |dir: &Path| fs::write(dir.join("state"), b"s"))
        .unwrap_err();
    assert!(
        matches!(err, TemplateError::Missing { file: "memory", .. }),
        "{err}"
    );
    let left: Vec<_> = fs::read_dir(&root)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| !name.ends_with(".lock"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_missing_input_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let mut spec = spec(tmp.path());
    spec.kernel = tmp.path().join("no-such-vmlinux");
    let err = TemplateCache::key(&spec).unwrap_err();
    assert!(err.to_string().contains("no-such-vmlinux"), "{err}");
}

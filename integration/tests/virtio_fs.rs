//! virtio-fs in a real VM: a host directory served by vessel-vmm's
//! in-process virtio-fs device, used by containers. The VM is restored
//! from the agent VM template with a share its guest never mounted: the
//! restoring VMM serves this test's directory and the agent mounts it on
//! MountShare.
//!
//! - MountShare again with the same tag does nothing, another tag is
//!   refused, and a VM whose guest has mounted its share refuses a
//!   snapshot with a clear error (and carries on);
//! - POSIX operations on a volume of the share (create, write, read,
//!   rename, unlink, mkdir, symlink, hard link, chmod, chown, xattr, mmap),
//!   checked from the host side, and host writes read in the guest;
//! - two containers of different pods see the same volume;
//! - every escape attempt (`..`, host- and guest-made absolute and relative
//!   symlinks, hard links and renames across the share's edge, a rename
//!   race, forged `open_by_handle_at` handles, device nodes made on either
//!   side) fails and never reads a host file outside the share, and a
//!   setuid-root file from the host runs without privilege;
//! - guest root is not host root: chmod u+s or g+s and file capabilities
//!   are refused, a guest write clears a host file's setuid bit, and the
//!   VMM's threads hold only the capabilities virtio-fs needs, with
//!   no_new_privs;
//! - a rootfs hot-added through the VMM's API (`fs_add`) runs a container
//!   by a path inside the share, and `fs_remove` takes it away; an overlay
//!   keeps a container's writes in the guest;
//! - after the VM shuts down, no mount and no open file of the share is
//!   left on the host.
//!
//! One VM serves every case. Sizes are tiny: guest-kernel copies run at
//! about 0.6 MB/s on an emulated-CPL0 host (bench_fs has the real sizes).

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};
use tempfile::TempDir;
use vessel_agent_protocol::AgentClient;
use vessel_integration::agent::{container_spec, create_request, expect_refusal};
use vessel_integration::rootfs::busybox_rootfs;
use vessel_integration::{static_binary, AgentVm, ApiClient, Cases, VmState};
use vessel_vmm_client::{ApiClientError, Request};

const CALL_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the VMM's API socket may take to appear.
const API_WAIT: Duration = Duration::from_secs(60);
const SECRET: &str = "vessel-host-secret-7f3a";
/// vessel-fsprobe in the busybox rootfs (`rootfs::GUEST_FSPROBE`).
const FSPROBE: &str = "/bin/fsprobe";

/// The host side: `<tmp>/share` is served; `<tmp>/outside/secret` must stay
/// out of the guest's reach.
struct Host {
    tmp: TempDir,
}

impl Host {
    fn new() -> Result<Host> {
        let tmp = tempfile::tempdir()?;
        let host = Host { tmp };
        let outside = host.tmp.path().join("outside");
        fs::create_dir_all(&outside)?;
        fs::write(outside.join("secret"), SECRET)?;
        for dir in ["vol", "escape/dir", "containers"] {
            fs::create_dir_all(host.share().join(dir))?;
        }
        let esc = host.share().join("escape");
        fs::write(esc.join("file"), "inside the share\n")?;
        std::os::unix::fs::symlink(host.secret(), esc.join("abs-link"))?;
        std::os::unix::fs::symlink("../outside/secret", esc.join("rel-link"))?;
        mknod_char(&esc.join("host-null"), 1, 3)?;
        mknod_char(&esc.join("host-mem"), 1, 1)?;
        // A setuid-root copy of fsprobe: `euid` must not print 0.
        let suid = esc.join("suid-probe");
        fs::copy(static_binary("vessel-test-init", "vessel-fsprobe")?, &suid)?;
        fs::set_permissions(&suid, fs::Permissions::from_mode(0o4755))?;
        // The guest's uid 1000 may write the volume.
        fs::set_permissions(host.share().join("vol"), fs::Permissions::from_mode(0o777))?;
        Ok(host)
    }

    fn share(&self) -> PathBuf {
        self.tmp.path().join("share")
    }

    fn secret(&self) -> PathBuf {
        self.tmp.path().join("outside/secret")
    }
}

fn mknod_char(path: &Path, major: u32, minor: u32) -> Result<()> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())?;
    // SAFETY: a NUL-terminated path; makedev is arithmetic.
    let ret = unsafe {
        libc::mknod(
            c.as_ptr(),
            libc::S_IFCHR | 0o666,
            libc::makedev(major, minor),
        )
    };
    ensure!(
        ret == 0,
        "mknod {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
    Ok(())
}

/// A container spec running `script` in sh, with share volume `volume`
/// bound at `at`.
fn spec_with_volume(script: &str, volume: &str, at: &str) -> Value {
    let mut spec = container_spec(&["sh", "-c", script]);
    if let Some(mounts) = spec["mounts"].as_array_mut() {
        mounts.push(json!({
            "destination": at,
            "type": "bind",
            "source": volume,
            "options": ["rbind", "rw"],
        }));
    }
    spec
}

/// Gives the container's root `caps` (bounding, effective, permitted).
fn with_caps(spec: &mut Value, caps: &[&str]) {
    for set in ["bounding", "effective", "permitted"] {
        spec["process"]["capabilities"][set] = json!(caps);
    }
}

/// Runs `script` in a new container with volume `volume` at `at`, as root
/// with CAP_CHOWN and CAP_FOWNER; its stdout, or an error with everything
/// it said.
fn run_in(client: &AgentClient, id: &str, script: &str, volume: &str, at: &str) -> Result<String> {
    let mut spec = spec_with_volume(script, volume, at);
    with_caps(&mut spec, &["CAP_CHOWN", "CAP_FOWNER", "CAP_KILL"]);
    let out = vessel_integration::Container::run(client, id, &spec)?;
    ensure!(
        out.status == 0,
        "{id}: exit {} stdout {:?} stderr {:?}",
        out.status,
        out.stdout_text(),
        out.stderr_text()
    );
    Ok(out.stdout_text())
}

#[test]
fn virtio_fs() -> Result<()> {
    let host = Host::new()?;
    let vm = AgentVm::restore_with_share(CALL_TIMEOUT, &host.share())?;
    let client = vm.client();
    let mut cases = Cases::new().retry_host_crashes(|| vm.crashes());
    cases.run("MountShare and snapshots of a mounted share", || {
        mounted_share(client, &vm)
    });
    cases.run("POSIX operations, both sides", || posix_ops(client, &host));
    cases.run("two containers share a volume", || two_containers(client));
    cases.run("escape attempts fail", || escapes(client, &host));
    cases.run("setuid from the host is not honoured", || setuid(client));
    cases.run("guest root makes nothing privileged on the host", || {
        no_privilege(client, &host)
    });
    cases.run("the VMM keeps only the share's capabilities", || {
        vessel_integration::privileges::check_vmm(vm.vmm_pid(), true)
    });
    cases.run("a bind source cannot leave the share", || {
        bind_escape(client)
    });
    cases.run("hot-added rootfs, overlay, removal", || {
        hot_rootfs(client, &vm, &host)
    });
    cases.finish(&vm)?;
    let share = host.share();
    let pid = vm.vmm_pid();
    let status = vm.shutdown(Duration::from_secs(60))?;
    ensure!(status.success(), "the VMM exited with {status}");
    no_leaks(&share, pid)
}

fn mounted_share(client: &AgentClient, vm: &AgentVm) -> Result<()> {
    client
        .mount_share(vessel_agent_protocol::SHARE_TAG)
        .context("MountShare of the mounted tag")?;
    let err = client
        .mount_share("other")
        .err()
        .context("MountShare of another tag succeeded")?;
    let code = err.code();
    let text = format!("{:#}", anyhow::Error::new(err));
    ensure!(
        code == Some(ttrpc::Code::FAILED_PRECONDITION) && text.contains("is mounted"),
        "MountShare of another tag: {code:?} {text}"
    );
    let mut api = ApiClient::connect(&vm.api_sock(), API_WAIT)?;
    ensure!(api.pause()? == VmState::Paused);
    let dir = tempfile::tempdir()?;
    let reply = api.request(&Request::Snapshot {
        state: dir.path().join("state"),
        memory: dir.path().join("memory"),
    })?;
    ensure!(api.resume()? == VmState::Running);
    let error = reply.error.clone().unwrap_or_default();
    ensure!(
        !reply.ok && error.contains("the guest has mounted the virtio-fs share"),
        "a snapshot of a VM with a mounted share: {reply:?}"
    );
    ensure!(
        fs::read_dir(dir.path())?.next().is_none(),
        "the refused snapshot left files"
    );
    client.check().context("Check after the refused snapshot")?;
    Ok(())
}

fn posix_ops(client: &AgentClient, host: &Host) -> Result<()> {
    let vol = host.share().join("vol");
    fs::write(vol.join("from-host"), "written on the host\n")?;
    let script = format!(
        "set -e; cd /vol; cat from-host; \
         echo guest-data > created; mv created renamed; \
         echo doomed > doomed; rm doomed; \
         mkdir -p newdir/sub; ln -s renamed sym; ln renamed hard; \
         echo linked > hard; cat sym; \
         {FSPROBE} xattr-set renamed user.vessel hello; {FSPROBE} xattr-get renamed user.vessel; \
         chmod 0640 renamed; chown 1000:1000 renamed; \
         {FSPROBE} mmap-write mapped mmap-text; {FSPROBE} mmap-read mapped 9; echo; \
         stat -c '%a %u %g' renamed"
    );
    let out = run_in(client, "fs-posix", &script, "vol", "/vol")?;
    ensure!(
        out == "written on the host\nlinked\nhello\nmmap-text\n640 1000 1000\n",
        "guest saw {out:?}"
    );
    // The host side of each operation.
    ensure!(
        fs::read_to_string(vol.join("renamed"))? == "linked\n",
        "renamed content"
    );
    ensure!(
        !vol.join("created").exists() && !vol.join("doomed").exists(),
        "rename/unlink"
    );
    ensure!(vol.join("newdir/sub").is_dir(), "mkdir -p");
    ensure!(
        fs::read_link(vol.join("sym"))? == Path::new("renamed"),
        "symlink text"
    );
    let (renamed, hard) = (
        fs::metadata(vol.join("renamed"))?,
        fs::metadata(vol.join("hard"))?,
    );
    ensure!(
        renamed.ino() == hard.ino() && renamed.nlink() == 2,
        "hard link"
    );
    ensure!(
        renamed.mode() & 0o7777 == 0o640,
        "mode {:o}",
        renamed.mode()
    );
    ensure!(renamed.uid() == 1000 && renamed.gid() == 1000, "owner");
    let xattr = xattr_get(&vol.join("renamed"), "user.vessel")?;
    ensure!(xattr == b"hello", "xattr on the host {xattr:?}");
    ensure!(
        fs::read(vol.join("mapped"))?.starts_with(b"mmap-text"),
        "mmap write"
    );
    Ok(())
}

fn xattr_get(path: &Path, name: &str) -> Result<Vec<u8>> {
    let p = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())?;
    let n = std::ffi::CString::new(name)?;
    let mut buf = vec![0u8; 256];
    // SAFETY: NUL-terminated strings and a writable buffer of its length.
    let len = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    ensure!(len >= 0, "getxattr: {}", std::io::Error::last_os_error());
    buf.truncate(len as usize);
    Ok(buf)
}

fn two_containers(client: &AgentClient) -> Result<()> {
    run_in(
        client,
        "fs-writer",
        "echo from-a > /data/shared.txt",
        "vol",
        "/data",
    )?;
    let out = run_in(client, "fs-reader", "cat /data/shared.txt", "vol", "/data")?;
    ensure!(out == "from-a\n", "the second container read {out:?}");
    Ok(())
}

fn escapes(client: &AgentClient, host: &Host) -> Result<()> {
    // The attacker is root in the guest with the capabilities that matter.
    let script = format!("{FSPROBE} escape /esc {SECRET} {}", host.secret().display());
    let mut spec = spec_with_volume(&script, "escape", "/esc");
    let caps = [
        "CAP_DAC_READ_SEARCH",
        "CAP_MKNOD",
        "CAP_DAC_OVERRIDE",
        "CAP_FOWNER",
    ];
    with_caps(&mut spec, &caps);
    let out = vessel_integration::Container::run(client, "fs-escape", &spec)?;
    let text = out.stdout_text();
    let attempts: Vec<&str> = text.lines().filter(|l| l.starts_with("attempt ")).collect();
    ensure!(
        attempts.len() >= 15,
        "too few attempts ran: {text:?} {:?}",
        out.stderr_text()
    );
    eprintln!("{}", attempts.join("\n"));
    for line in &attempts {
        let (name, result) = line
            .trim_start_matches("attempt ")
            .split_once(": ")
            .with_context(|| format!("bad line {line:?}"))?;
        let allowed = result.starts_with("denied ")
            // A forged handle may name another file of the share; never the secret.
            || (name == "open-by-handle" && result == "inside");
        if !allowed {
            bail!("escape attempt {name} was not refused: {result}\nall:\n{text}");
        }
    }
    ensure!(
        fs::read_to_string(host.secret())? == SECRET,
        "the secret changed"
    );
    let outside: Vec<_> = fs::read_dir(host.secret().parent().unwrap_or(Path::new("/")))?
        .collect::<Result<_, _>>()?;
    ensure!(
        outside.len() == 1,
        "something appeared next to the secret: {outside:?}"
    );
    Ok(())
}

fn setuid(client: &AgentClient) -> Result<()> {
    let mut spec = spec_with_volume("/esc/suid-probe euid", "escape", "/esc");
    spec["process"]["user"] = json!({ "uid": 1000, "gid": 1000 });
    spec["process"]["noNewPrivileges"] = json!(false);
    let out = vessel_integration::Container::run(client, "fs-suid", &spec)?;
    ensure!(
        out.stdout_text() == "1000\n",
        "a setuid-root file from the host ran as {:?} ({:?})",
        out.stdout_text(),
        out.stderr_text()
    );
    Ok(())
}

fn no_privilege(client: &AgentClient, host: &Host) -> Result<()> {
    let vol = host.share().join("vol");
    let host_suid = vol.join("host-suid");
    fs::write(&host_suid, "#!/bin/sh\n")?;
    fs::set_permissions(&host_suid, fs::Permissions::from_mode(0o6755))?;
    let script = format!(
        "cd /vol; echo '#!/bin/sh' > tool; \
         chmod 4755 tool 2>/dev/null; echo $?; chmod 2755 tool 2>/dev/null; echo $?; \
         {FSPROBE} xattr-set tool security.capability x >/dev/null 2>&1; echo $?; \
         echo id >> host-suid; stat -c %a tool"
    );
    let out = run_in(client, "fs-nopriv", &script, "vol", "/vol")?;
    ensure!(out == "1\n1\n1\n644\n", "guest saw {out:?}");
    let tool = fs::metadata(vol.join("tool"))?.mode() & 0o7777;
    ensure!(tool == 0o644, "the guest's file is {tool:o} on the host");
    let suid = fs::metadata(&host_suid)?.mode() & 0o7777;
    ensure!(
        suid & 0o6000 == 0,
        "a guest write left the host file {suid:o}"
    );
    ensure!(
        xattr_get(&vol.join("tool"), "security.capability").is_err(),
        "file capabilities reached the host"
    );
    Ok(())
}

fn bind_escape(client: &AgentClient) -> Result<()> {
    // abs-link points at the host's secret; inside the share it names
    // nothing, so the bind source does not resolve.
    let spec = spec_with_volume("true", "escape/abs-link", "/esc");
    expect_refusal(
        "a bind source through an absolute symlink",
        vessel_integration::Container::create_with(client, &create_request("fs-bind", &spec)),
        "escape/abs-link",
    )?;
    Ok(())
}

fn hot_rootfs(client: &AgentClient, vm: &AgentVm, host: &Host) -> Result<()> {
    let mut api = ApiClient::connect(&vm.api_sock(), API_WAIT)?;
    let rootfs = busybox_rootfs()?;
    let target = "containers/hot/rootfs";
    api.fs_add(&rootfs, target, true)?;
    let listed = api.fs_list()?;
    ensure!(
        listed.iter().any(|m| m.target == target && m.readonly),
        "fs_list: {listed:?}"
    );

    let mut req = create_request("fs-hot", &container_spec(&["echo", "from the share"]));
    req.rootfs_path = target.into();
    let out = vessel_integration::Container::run_request(client, &req)?;
    ensure!(out.stdout == b"from the share\n", "{out:?}");

    // An overlay over the read-only rootfs: writes stay in the guest.
    let mut spec = container_spec(&["sh", "-c", "echo upper > /written; cat /written"]);
    spec["root"]["readonly"] = json!(false);
    let mut req = create_request("fs-overlay", &spec);
    req.rootfs_path = target.into();
    req.rootfs_overlay = true;
    let out = vessel_integration::Container::run_request(client, &req)?;
    ensure!(out.stdout == b"upper\n", "{out:?}");
    ensure!(
        !rootfs.join("written").exists(),
        "the overlay wrote through to the host"
    );

    // Without the overlay the rootfs is read-only: the write fails.
    let mut req = create_request("fs-readonly", &spec);
    req.rootfs_path = target.into();
    let out = vessel_integration::Container::run_request(client, &req)?;
    ensure!(
        out.status != 0,
        "a write to a read-only hot-added rootfs succeeded"
    );

    api.fs_remove(target)?;
    ensure!(
        !host.share().join(target).exists(),
        "fs_remove left the mount point"
    );
    let err = api.fs_remove(target);
    ensure!(
        matches!(err, Err(ApiClientError::Refused { .. })),
        "a second fs_remove was not refused: {err:?}"
    );
    let bad = api.fs_add(&rootfs, "../escape", true);
    ensure!(
        matches!(bad, Err(ApiClientError::Refused { .. })),
        "fs_add outside the share was not refused: {bad:?}"
    );
    Ok(())
}

/// After the VMM exited: nothing of the share is mounted on the host and
/// no process holds a file of it open.
fn no_leaks(share: &Path, vmm_pid: u32) -> Result<()> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")?;
    let share_text = share.display().to_string();
    let mounted: Vec<&str> = mountinfo
        .lines()
        .filter(|l| l.contains(&share_text))
        .collect();
    ensure!(mounted.is_empty(), "mounts left on the host: {mounted:?}");
    ensure!(
        !Path::new(&format!("/proc/{vmm_pid}")).exists()
            || fs::read_to_string(format!("/proc/{vmm_pid}/stat"))?.contains(" Z "),
        "the VMM still runs"
    );
    for proc_dir in fs::read_dir("/proc")?.flatten() {
        let Ok(fds) = fs::read_dir(proc_dir.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = fs::read_link(fd.path()) {
                ensure!(
                    !target.starts_with(share),
                    "{} holds {} open",
                    fd.path().display(),
                    target.display()
                );
            }
        }
    }
    Ok(())
}

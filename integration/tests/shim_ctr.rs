//! containerd-shim-vessel-v2 through a real containerd, all through `ctr`:
//! every container runs in a microVM of its own (no CRI: each is its own
//! sandbox), on the bundled demo image.

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use vessel_integration::containerd::{Containerd, RUNTIME};
use vessel_integration::pty::run_on_terminal;
use vessel_integration::Cases;
use vessel_vmm_client::{ApiClient, ProcessIdentity, Request};

/// Polls `f` until it is true or `timeout` passes.
fn eventually(what: &str, timeout: Duration, mut f: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if f()? {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `ctr run --rm` of the image's own command: its kernel is the guest's,
/// and its VM was restored from the shim's template, not booted.
fn run_rm_greets(c: &Containerd, image: &str) -> Result<()> {
    let out = c.ctr_ok(&["run", "--rm", "--runtime", RUNTIME, image, "greet"])?;
    let stdout = text(&out.stdout);
    let host = std::fs::read_to_string("/proc/sys/kernel/osrelease")?;
    ensure!(
        stdout.contains("hello from a Vessel microVM"),
        "no greeting: {stdout:?}"
    );
    let kernel = stdout
        .lines()
        .find_map(|l| l.strip_prefix("kernel "))
        .with_context(|| format!("no kernel line: {stdout:?}"))?;
    ensure!(
        kernel.trim() != host.trim(),
        "the container ran on the host kernel {kernel}"
    );
    let left = c.ctr_ok(&["containers", "ls", "-q"])?;
    ensure!(
        text(&left.stdout).trim().is_empty(),
        "--rm left {:?}",
        text(&left.stdout)
    );
    let log = c.log();
    let answered: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("the agent answered"))
        .collect();
    ensure!(
        !answered.is_empty() && answered.iter().all(|l| l.contains("restored=true")),
        "the pod VM was not restored from a template: {answered:?}; {:?}",
        log.lines().find(|l| l.contains("no VM template"))
    );
    Ok(())
}

/// Env, cwd and user from the image; stdin piped in; the exit code comes back.
fn image_config_stdin_and_exit_code(c: &Containerd, image: &str) -> Result<()> {
    let script = "echo \"$GREETING\"; pwd; id -u; cat; exit 7";
    let mut child = c
        .ctr(&[
            "run",
            "--rm",
            "--runtime",
            RUNTIME,
            image,
            "stdin",
            "sh",
            "-c",
            script,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().context("stdin")?;
    stdin.write_all(b"piped line one\npiped line two\n")?;
    drop(stdin);
    let out = child.wait_with_output()?;
    let stdout = text(&out.stdout);
    ensure!(
        stdout == "hello from a Vessel microVM\n/home\n0\npiped line one\npiped line two\n",
        "stdout {stdout:?} stderr {:?}",
        text(&out.stderr)
    );
    ensure!(
        out.status.code() == Some(7),
        "ctr exited {:?}, not 7",
        out.status
    );
    Ok(())
}

/// A detached container: exec, ps, pause/resume, metrics, SIGTERM.
fn task_verbs(c: &Containerd, image: &str) -> Result<()> {
    let id = "verbs";
    c.run_detached(
        image,
        id,
        &[
            "sh",
            "-c",
            "trap 'exit 143' TERM; while true; do sleep 1; done",
        ],
    )?;
    let mut cgroups = Vec::new();
    let result = (|| -> Result<()> {
        // The VMM runs in the task's cgroupsPath (ctr's /<namespace>/<id>).
        let pid = task_pid(c, id)?;
        cgroups = vmm_cgroups(&pid)?;
        ensure!(
            !cgroups.is_empty() && cgroups.iter().all(|d| d.ends_with("vessel/verbs")),
            "the VMM's cgroups: {cgroups:?}"
        );
        let exec = c.ctr_ok(&[
            "task",
            "exec",
            "--exec-id",
            "e1",
            id,
            "sh",
            "-c",
            "echo exec-ok; hostname",
        ])?;
        ensure!(
            text(&exec.stdout).starts_with("exec-ok\n"),
            "exec said {:?}",
            text(&exec.stdout)
        );
        let ps = text(&c.ctr_ok(&["task", "ps", id])?.stdout);
        ensure!(ps.lines().count() >= 2, "task ps listed no process: {ps:?}");
        c.ctr_ok(&["task", "pause", id])?;
        let paused = text(&c.ctr_ok(&["task", "ls"])?.stdout);
        ensure!(
            paused
                .lines()
                .any(|l| l.starts_with(id) && l.contains("PAUSED")),
            "not paused: {paused}"
        );
        c.ctr_ok(&["task", "resume", id])?;
        let metrics = text(&c.ctr_ok(&["task", "metrics", id])?.stdout);
        ensure!(
            metrics.contains("memory") || metrics.contains("pids"),
            "metrics: {metrics}"
        );
        c.ctr_ok(&["task", "kill", "--signal", "SIGTERM", id])?;
        eventually(
            "the task stops after SIGTERM",
            Duration::from_secs(60),
            || {
                let ls = text(&c.ctr_ok(&["task", "ls"])?.stdout);
                Ok(ls
                    .lines()
                    .any(|l| l.starts_with(id) && l.contains("STOPPED")))
            },
        )?;
        Ok(())
    })();
    let _ = c.ctr(&["task", "kill", "--signal", "SIGKILL", id]).output();
    let _ = c.ctr(&["task", "delete", "--force", id]).output();
    let _ = c.ctr(&["containers", "delete", id]).output();
    result?;
    let left: Vec<_> = cgroups.iter().filter(|d| d.exists()).collect();
    ensure!(left.is_empty(), "the VMM's cgroups were left: {left:?}");
    Ok(())
}

/// The memory and pids cgroup directories of process `pid` (cgroup v1),
/// or its one cgroup (v2), from `/proc/<pid>/cgroup`.
fn vmm_cgroups(pid: &str) -> Result<Vec<std::path::PathBuf>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    let root = std::path::Path::new("/sys/fs/cgroup");
    let v2 = !root.join("memory").exists();
    Ok(text
        .lines()
        .filter_map(|line| {
            let mut fields = line.splitn(3, ':');
            let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
            let path = path.trim_start_matches('/');
            match controllers {
                "" if v2 => Some(root.join(path)),
                "memory" | "pids" if !v2 => Some(root.join(controllers).join(path)),
                _ => None,
            }
        })
        .collect())
}

/// The PID column of `ctr task ls` for task `id`.
fn task_pid(c: &Containerd, id: &str) -> Result<String> {
    let ls = text(&c.ctr_ok(&["task", "ls"])?.stdout);
    ls.lines()
        .find(|l| l.split_whitespace().next() == Some(id))
        .and_then(|l| l.split_whitespace().nth(1))
        .map(str::to_owned)
        .with_context(|| format!("no task {id} in {ls:?}"))
}

fn task_status(c: &Containerd, id: &str) -> Result<String> {
    let ls = text(&c.ctr_ok(&["task", "ls"])?.stdout);
    Ok(ls
        .lines()
        .find(|l| l.split_whitespace().next() == Some(id))
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap_or("")
        .to_owned())
}

fn remove(c: &Containerd, id: &str) {
    let _ = c.ctr(&["task", "kill", "--signal", "SIGKILL", id]).output();
    let _ = c.ctr(&["task", "delete", "--force", id]).output();
    let _ = c.ctr(&["containers", "delete", id]).output();
}

/// Two containers of one pod (CRI annotations) share its VM and a volume;
/// SIGKILL stops one that ignores SIGTERM.
fn pod_shares_vm_and_volume(c: &Containerd, image: &str) -> Result<()> {
    let vol = c.dir().join("pod-volume");
    let _ = std::fs::remove_dir_all(&vol);
    std::fs::create_dir_all(&vol)?;
    let mount = format!("type=bind,src={},dst=/vol,options=rbind:rw", vol.display());
    let pod = |kind: &str| {
        vec![
            "--annotation".to_owned(),
            format!("io.kubernetes.cri.container-type={kind}"),
            "--annotation".to_owned(),
            "io.kubernetes.cri.sandbox-id=pod1".to_owned(),
        ]
    };
    let run = |id: &str, kind: &str, script: &str| -> Result<()> {
        let mut args: Vec<String> = ["run", "-d", "--runtime", RUNTIME, "--mount", &mount]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(pod(kind));
        args.extend(
            [image, id, "sh", "-c", script]
                .iter()
                .map(|s| s.to_string()),
        );
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        c.ctr_ok(&args).map(|_| ())
    };
    let result = (|| -> Result<()> {
        run(
            "pod1",
            "sandbox",
            "echo from-sandbox > /vol/a; exec sleep 1000",
        )?;
        // As kubelet does: the sandbox is up before its containers come.
        eventually(
            "the sandbox wrote the volume",
            Duration::from_secs(120),
            || Ok(std::fs::metadata(vol.join("a")).is_ok_and(|m| m.len() > 0)),
        )?;
        run(
            "pod1-c2",
            "container",
            // sleep inherits the ignored SIGTERM.
            "trap '' TERM; while [ ! -s /vol/a ]; do sleep 1; done; \
             cat /vol/a > /vol/seen; echo from-c2 > /vol/b; exec sleep 1000",
        )?;
        // Created before written: wait for the content.
        eventually(
            "the second container wrote the volume",
            Duration::from_secs(180),
            || Ok(std::fs::metadata(vol.join("b")).is_ok_and(|m| m.len() > 0)),
        )
        .with_context(|| {
            let tasks = c.ctr(&["task", "ls"]).output().map(|o| o.stdout);
            format!(
                "tasks: {}\nguest console:\n{}",
                text(&tasks.unwrap_or_default()),
                consoles(c)
            )
        })?;
        ensure!(
            std::fs::read_to_string(vol.join("seen"))? == "from-sandbox\n",
            "c2 did not see the sandbox's file"
        );
        ensure!(std::fs::read_to_string(vol.join("b"))? == "from-c2\n");
        let (a, b) = (task_pid(c, "pod1")?, task_pid(c, "pod1-c2")?);
        ensure!(
            a == b,
            "the pod's containers run in different VMs (VMM pids {a} and {b})"
        );
        c.ctr_ok(&["task", "kill", "--signal", "SIGTERM", "pod1-c2"])?;
        std::thread::sleep(Duration::from_secs(3));
        ensure!(
            task_status(c, "pod1-c2")? == "RUNNING",
            "SIGTERM was not ignored"
        );
        c.ctr_ok(&["task", "kill", "--signal", "SIGKILL", "pod1-c2"])?;
        eventually(
            "SIGKILL stops the container",
            Duration::from_secs(60),
            || Ok(task_status(c, "pod1-c2")? == "STOPPED"),
        )?;
        ensure!(
            task_status(c, "pod1")? == "RUNNING",
            "the sandbox died with its container"
        );
        c.ctr_ok(&["task", "delete", "pod1-c2"])?;
        c.ctr_ok(&["containers", "delete", "pod1-c2"])?;
        let mounts = c.leftover_mounts();
        ensure!(
            !mounts.iter().any(|m| m.contains("/pod1-c2")),
            "the deleted container's mounts stay: {mounts:?}"
        );
        ensure!(
            task_status(c, "pod1")? == "RUNNING",
            "the sandbox died when its container was deleted"
        );
        Ok(())
    })();
    remove(c, "pod1-c2");
    remove(c, "pod1");
    result
}

/// The tail of every sandbox's guest console.
fn consoles(c: &Containerd) -> String {
    let mut out = String::new();
    let dirs = std::fs::read_dir(c.vessel_state());
    for entry in dirs.into_iter().flatten().flatten() {
        let console = std::fs::read_to_string(entry.path().join("console.log")).unwrap_or_default();
        let lines: Vec<&str> = console.lines().collect();
        out.push_str(&lines[lines.len().saturating_sub(20)..].join("\n"));
        out.push('\n');
    }
    out
}

/// A VMM killed from outside: the task exits, and can be deleted.
fn killed_vmm_is_a_task_exit(c: &Containerd, image: &str) -> Result<()> {
    let id = "vmkill";
    let result = (|| -> Result<()> {
        c.run_detached(image, id, &["sleep", "1000"])?;
        let pid: i32 = task_pid(c, id)?.parse()?;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))?;
        ensure!(
            comm.trim() == "vessel-vmm",
            "task pid {pid} is {comm:?}, not the VMM"
        );
        // SAFETY: kill(2) on the VMM this test started; no memory is passed.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        eventually(
            "the task exits with its VM",
            Duration::from_secs(60),
            || Ok(task_status(c, id)? == "STOPPED"),
        )?;
        c.ctr_ok(&["task", "delete", id])?;
        Ok(())
    })();
    remove(c, id);
    result
}

/// The jailed VMM of a running pod: its monitor and every thread under
/// seccomp with no_new_privs and only the share's capabilities, in pid,
/// network and IPC namespaces of its own. Then a syscall outside the API
/// thread's policy (the harness's shims let the API make one on request):
/// the VMM exits, the task with it, and the shim's log says why.
fn forbidden_syscall_stops_the_pod(c: &Containerd, image: &str) -> Result<()> {
    let id = "seccomp";
    let result = (|| -> Result<()> {
        c.run_detached(image, id, &["sleep", "1000"])?;
        let pid: u32 = task_pid(c, id)?.parse()?;
        vessel_integration::privileges::check_vmm(pid, true)?;
        let api = api_socket_of(c, pid)?;
        let mut client = ApiClient::connect(&api, Duration::from_secs(5))?;
        // No reply: the VMM ends in the middle of the request.
        let _ = client.request(&Request::DebugForbiddenSyscall);
        eventually(
            "the task exits with its VM",
            Duration::from_secs(60),
            || Ok(task_status(c, id)? == "STOPPED"),
        )?;
        // containerd copies the shim's log on its own time.
        let stop_line = || {
            c.log()
                .lines()
                .find(|l| l.contains("the VMM exited") && l.contains("seccomp policy"))
                .map(str::to_owned)
        };
        eventually("the shim logs why", Duration::from_secs(30), || {
            Ok(stop_line().is_some())
        })
        .context("the shim's log gives no seccomp reason for the VMM's exit")?;
        let stop = stop_line().unwrap_or_default();
        ensure!(
            stop.contains(&format!(
                "the api thread made syscall {}",
                libc::SYS_getpgid
            )),
            "the reason does not name the thread and the syscall: {stop}"
        );
        c.ctr_ok(&["task", "delete", id])?;
        Ok(())
    })();
    remove(c, id);
    result
}

/// The guest plays hostile with the share (the test writes into it as
/// guest root would through virtio-fs): links to a host directory planted
/// where the shim makes a container's directory and a volume's mount
/// point before Create, inside a container's directory before exec and
/// Delete. Each create so attacked fails with an error naming the planted
/// path, the others carry on, and the host directory is never mounted
/// over, written or removed.
fn hostile_share_in_a_pod(c: &Containerd, image: &str) -> Result<()> {
    let host = c.dir().join("host-target");
    let vol = c.dir().join("hostile-volume");
    for dir in [&host, &vol] {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(host.join("keep"), "host data")?;
    let untouched = || -> Result<()> {
        let entries: Vec<_> = std::fs::read_dir(&host)?
            .flatten()
            .map(|e| e.file_name())
            .collect();
        ensure!(
            entries == ["keep"],
            "the host directory changed: {entries:?}"
        );
        ensure!(std::fs::read_to_string(host.join("keep"))? == "host data");
        let mounted = std::fs::read_to_string("/proc/self/mountinfo")?
            .lines()
            .any(|l| l.split_whitespace().nth(4) == Some(&*host.to_string_lossy()));
        ensure!(!mounted, "something was mounted over the host directory");
        Ok(())
    };
    let mount = format!("type=bind,src={},dst=/vol,options=rbind:rw", vol.display());
    let run = |id: &str, kind: &str| {
        c.ctr(&[
            "run",
            "-d",
            "--runtime",
            RUNTIME,
            "--mount",
            &mount,
            "--annotation",
            &format!("io.kubernetes.cri.container-type={kind}"),
            "--annotation",
            "io.kubernetes.cri.sandbox-id=hpod",
            image,
            id,
            "sleep",
            "1000",
        ])
        .output()
    };
    let refused = |id: &str, planted: &str| -> Result<()> {
        let out = run(id, "container")?;
        let stderr = text(&out.stderr);
        ensure!(
            !out.status.success(),
            "{id} was created through a link planted at {planted}"
        );
        ensure!(
            stderr.contains(planted) || stderr.contains("symbolic link"),
            "{id}'s error does not name the planted path {planted}: {stderr}"
        );
        untouched()
    };
    let ids = ["hpod-c2", "hpod-c3", "hpod-c4"];
    let result = (|| -> Result<()> {
        ensure!(
            run("hpod", "sandbox")?.status.success(),
            "the sandbox did not start"
        );
        let pid: u32 = task_pid(c, "hpod")?.parse()?;
        let share = api_socket_of(c, pid)?.with_file_name("shared");
        // Create, the container's own directory planted.
        std::os::unix::fs::symlink(&host, share.join("hpod-c2"))?;
        refused("hpod-c2", "hpod-c2")?;
        remove(c, "hpod-c2");
        // Create, its volume's mount point planted.
        std::fs::create_dir_all(share.join("hpod-c3/volumes"))?;
        std::os::unix::fs::symlink(&host, share.join("hpod-c3/volumes/0"))?;
        refused("hpod-c3", "volumes/0")?;
        remove(c, "hpod-c3");
        // Exec and Delete, links planted inside a running container's
        // directory, beside its mounts.
        let out = run("hpod-c4", "container")?;
        ensure!(out.status.success(), "hpod-c4: {}", text(&out.stderr));
        std::os::unix::fs::symlink(&host, share.join("hpod-c4/planted"))?;
        std::os::unix::fs::symlink(&host, share.join("hpod-c4/volumes/planted"))?;
        c.ctr_ok(&["task", "exec", "--exec-id", "e1", "hpod-c4", "true"])?;
        c.ctr_ok(&["task", "kill", "--signal", "SIGKILL", "hpod-c4"])?;
        eventually("hpod-c4 stops", Duration::from_secs(60), || {
            Ok(task_status(c, "hpod-c4")? == "STOPPED")
        })?;
        c.ctr_ok(&["task", "delete", "hpod-c4"])?;
        c.ctr_ok(&["containers", "delete", "hpod-c4"])?;
        untouched()?;
        ensure!(
            !share.join("hpod-c4").exists(),
            "Delete left the container's directory in the share"
        );
        ensure!(
            task_status(c, "hpod")? == "RUNNING",
            "the pod did not carry on"
        );
        Ok(())
    })();
    for id in ids {
        remove(c, id);
    }
    remove(c, "hpod");
    result.and_then(|()| untouched())
}

/// The API socket of the sandbox whose VMM (its monitor) is `pid`.
fn api_socket_of(c: &Containerd, pid: u32) -> Result<std::path::PathBuf> {
    for dir in std::fs::read_dir(c.vessel_state())?.flatten() {
        let owner = std::fs::read_to_string(dir.path().join("vmm.pid")).unwrap_or_default();
        if ProcessIdentity::parse(&owner).is_some_and(|id| id.pid == pid) {
            return Ok(dir.path().join("api.sock"));
        }
    }
    anyhow::bail!("no sandbox state directory names VMM {pid}")
}

/// `ctr run -t` on a terminal of 33 rows and 101 columns: the process has
/// a terminal, and ctr's ResizePty gives it that size. (ctr resizes only
/// after Start, so the process waits a while for a size.)
fn tty(c: &Containerd, image: &str) -> Result<()> {
    let script = "i=0; while [ \"$(stty size)\" = '0 0' ] && [ $i -lt 100 ]; do \
                  sleep 0.2; i=$((i+1)); done; \
                  test -t 0 && test -t 1 && echo \"size $(stty size)\" && tty";
    let mut ctr = c.ctr(&[
        "run",
        "--rm",
        "-t",
        "--runtime",
        RUNTIME,
        image,
        "tty",
        "sh",
        "-c",
        script,
    ]);
    let out = run_on_terminal(&mut ctr, 33, 101, Duration::from_secs(300))?;
    ensure!(
        out.status.success(),
        "ctr run -t ended with {}: {:?}",
        out.status,
        out.text
    );
    ensure!(
        out.text.contains("/dev/console") || out.text.contains("/dev/pts/"),
        "no terminal in the container: {:?}",
        out.text
    );
    ensure!(
        out.text.contains("size 33 101"),
        "the container's terminal is not 33x101: {:?}",
        out.text
    );
    Ok(())
}

/// After every container is gone: no shim, VMM, mount or state left.
fn nothing_left(c: &Containerd) -> Result<()> {
    eventually("shims and VMMs exit", Duration::from_secs(30), || {
        Ok(c.leftover_processes().is_empty())
    })
    .with_context(|| format!("still running: {:?}", c.leftover_processes()))?;
    let mounts = c.leftover_mounts();
    ensure!(
        mounts.iter().all(|m| !m.contains("/vessel/")),
        "mounts left: {mounts:?}"
    );
    let state: Vec<_> = std::fs::read_dir(c.vessel_state())
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    ensure!(state.is_empty(), "sandbox state left: {state:?}");
    Ok(())
}

#[test]
fn containers_run_in_microvms_through_containerd() -> Result<()> {
    let c = Containerd::start()?;
    let image = c.import_demo_image()?;
    let mut cases = Cases::new().retry_host_crashes(|| c.crashes());
    cases.run("ctr run --rm greets from the guest kernel", || {
        run_rm_greets(&c, image)
    });
    cases.run("image env, cwd and user; stdin; exit code", || {
        image_config_stdin_and_exit_code(&c, image)
    });
    cases.run("exec, ps, pause, resume, metrics, SIGTERM", || {
        task_verbs(&c, image)
    });
    cases.run("a pod: one VM, one volume, SIGKILL", || {
        pod_shares_vm_and_volume(&c, image)
    });
    cases.run(
        "links planted in the share at create, exec and delete",
        || hostile_share_in_a_pod(&c, image),
    );
    cases.run("a killed VMM is a task exit", || {
        killed_vmm_is_a_task_exit(&c, image)
    });
    cases.run("a jailed VMM; a forbidden syscall stops the pod", || {
        forbidden_syscall_stops_the_pod(&c, image)
    });
    cases.run("ctr run -t gets a terminal", || tty(&c, image));
    cases.run("nothing is left behind", || nothing_left(&c));
    let log = c.log();
    let log: Vec<&str> = log.lines().collect();
    let tail = log[log.len().saturating_sub(60)..].join("\n");
    cases.finish_with(&format!("containerd log tail:\n{tail}"))
}

//! containerd-shim-vessel-v2 through a real containerd, all through `ctr`:
//! every container runs in a microVM of its own (no CRI: each is its own
//! sandbox), on the bundled demo image.

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use vessel_integration::containerd::{Containerd, RUNTIME};
use vessel_integration::Cases;

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

/// `ctr run --rm` of the image's own command: its kernel is the guest's.
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
    let result = (|| -> Result<()> {
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
    result
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

/// `ctr run -t`: the process has a terminal (ctr needs one: script(1)).
fn tty(c: &Containerd, image: &str) -> Result<()> {
    let ctr = format!(
        "timeout 300 ctr --address {} --namespace vessel run --rm -t --runtime {RUNTIME} {image} tty sh -c 'test -t 0 && test -t 1 && tty'",
        c.dir().join("containerd.sock").display()
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &ctr, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .context("script (util-linux)")?;
    let stdout = text(&out.stdout);
    ensure!(
        stdout.contains("/dev/console") || stdout.contains("/dev/pts/"),
        "no terminal in the container: {stdout:?} {:?}",
        text(&out.stderr)
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
    let mut cases = Cases::new();
    cases.run("ctr run --rm greets from the guest kernel", || {
        run_rm_greets(&c, image)
    });
    cases.run("image env, cwd and user; stdin; exit code", || {
        image_config_stdin_and_exit_code(&c, image)
    });
    cases.run("exec, ps, pause, resume, metrics, SIGTERM", || {
        task_verbs(&c, image)
    });
    cases.run("a killed VMM is a task exit", || {
        killed_vmm_is_a_task_exit(&c, image)
    });
    cases.run("ctr run -t gets a terminal", || tty(&c, image));
    cases.run("nothing is left behind", || nothing_left(&c));
    let log = c.log();
    let log: Vec<&str> = log.lines().collect();
    let tail = log[log.len().saturating_sub(60)..].join("\n");
    cases.finish_with(&format!("containerd log tail:\n{tail}"))
}

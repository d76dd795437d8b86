//! Runs a command on a pseudo-terminal of its own, as a user at a shell
//! would: a new session whose controlling terminal is the pty, in the
//! foreground, with a known window size. (`script(1)` plus `timeout(1)`
//! put the command in a background process group of its terminal, where
//! a `tcsetattr` stops it.)

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// What a command printed on its terminal, and how it ended.
#[derive(Debug)]
pub struct TerminalOutput {
    pub status: ExitStatus,
    pub text: String,
}

/// Runs `cmd` on a new pty of `rows` x `cols`; kills it after `timeout`.
pub fn run_on_terminal(
    cmd: &mut Command,
    rows: u16,
    cols: u16,
    timeout: Duration,
) -> Result<TerminalOutput> {
    let (master, slave) = open_pty(rows, cols)?;
    cmd.stdin(Stdio::from(slave.try_clone()?))
        .stdout(Stdio::from(slave.try_clone()?))
        .stderr(Stdio::from(slave.try_clone()?));
    // SAFETY: between fork and exec only async-signal-safe calls (setsid,
    // ioctl); std has already made the slave the child's fd 0.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let spawned = cmd.spawn().context("spawn on a pty");
    // The command holds its copies of the slave until told otherwise; the
    // reader sees EOF only once no one but the child has it.
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    drop(slave);
    let mut child = spawned?;
    // The reader ends with EIO once the last holder of the slave is gone.
    let reader = std::thread::spawn(move || {
        let mut master = std::fs::File::from(master);
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        out
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let text = reader.join().map(|o| lossy(&o)).unwrap_or_default();
            bail!("still running after {timeout:?}; its terminal showed {text:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let text = reader
        .join()
        .map(|o| lossy(&o))
        .map_err(|_| anyhow::anyhow!("the pty reader panicked"))?;
    Ok(TerminalOutput { status, text })
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn open_pty(rows: u16, cols: u16) -> Result<(OwnedFd, OwnedFd)> {
    let mut master = -1;
    let mut slave = -1;
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: openpty writes two descriptors into the given ints; the name
    // buffer is null and the termios and winsize pointers are valid or null.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &size,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("openpty");
    }
    // SAFETY: openpty succeeded, so both are open descriptors owned by us.
    let pair = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    for fd in [&pair.0, &pair.1] {
        // SAFETY: F_SETFD on a descriptor we own; no memory is passed.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
            return Err(std::io::Error::last_os_error()).context("FD_CLOEXEC on the pty");
        }
    }
    Ok(pair)
}

//! A guest program connects to the host (CID 2) on port 5001 and reaches the
//! unix socket `<vsock-uds>_5001`, as hybrid vsock promises; bytes flow both
//! ways and the VMM exits 0 afterwards.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use vessel_integration::{guest_kernel, test_initramfs, BootSpec, Report, Runner};

const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

#[test]
fn guest_reaches_a_host_unix_socket() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let uds = dir.path().join("vsock.sock");
    let listener = UnixListener::bind(dir.path().join("vsock.sock_5001"))?;
    listener.set_nonblocking(true)?;
    let mut spec = BootSpec::new(guest_kernel()?, test_initramfs()?);
    spec.cmdline = "vessel.test=vsock-dial".into();
    spec.endpoints.vsock_uds = Some(uds);
    let mut guest = Runner::VesselVmm.spawn(&spec)?;

    let deadline = Instant::now() + BOOT_TIMEOUT;
    let stream = loop {
        match listener.accept() {
            Ok((stream, _)) => break stream,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if let Some(status) = guest.exited()? {
                    bail!(
                        "the VMM exited with {status} before the guest dialled:\n{}",
                        guest.console()
                    );
                }
                if Instant::now() >= deadline {
                    bail!(
                        "the guest did not connect within {BOOT_TIMEOUT:?}:\n{}",
                        guest.console()
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(e).context("accept the guest's connection"),
        }
    };
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut line = String::new();
    BufReader::new(stream.try_clone()?).read_line(&mut line)?;
    ensure!(line == "hello from the guest\n", "the guest sent {line:?}");
    (&stream).write_all(b"hello from the host\n")?;

    let out = guest.wait(Duration::from_secs(60))?;
    let report = Report::parse(&out.console).with_context(|| out.console.clone())?;
    ensure!(
        report.ok("vsock_dial")? == "hello from the host",
        "{:?}",
        report.values
    );
    ensure!(
        out.status.success(),
        "vessel-vmm exited with {}",
        out.status
    );
    Ok(())
}

//! The README's main job: a container in a microVM through a private
//! containerd. It starts containerd (own config, root and state under a
//! temporary directory) with io.containerd.vessel.v2 registered, imports the
//! bundled demo image (built locally from Debian's busybox-static with
//! umoci, no registry), runs it with `ctr run --rm`, and stops everything.

use std::time::Instant;

use anyhow::{ensure, Result};
use vessel_integration::containerd::{Containerd, RUNTIME};
use vessel_vmm_client::HostProfile;

fn main() -> Result<()> {
    eprintln!(
        "demo: host profile {}; building the shim, VMM, guest kernel and initramfs (cached)",
        HostProfile::detect()?
    );
    let containerd = Containerd::start()?;
    eprintln!("demo: private containerd at {}", containerd.dir().display());
    let image = containerd.import_demo_image()?;
    eprintln!("demo: imported {image}; ctr run --rm --runtime {RUNTIME} {image} demo");
    let start = Instant::now();
    let out = containerd
        .ctr(&["run", "--rm", "--runtime", RUNTIME, image, "demo"])
        .output()?;
    let took = start.elapsed();
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    let host = std::fs::read_to_string("/proc/sys/kernel/osrelease")?;
    println!(
        "(host kernel {}; the container ran in its own microVM)",
        host.trim()
    );
    eprintln!(
        "demo: ctr run took {:.1} s; stopping containerd",
        took.as_secs_f64()
    );
    ensure!(out.status.success(), "ctr run failed with {}", out.status);
    drop(containerd);
    Ok(())
}

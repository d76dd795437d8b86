//! The bundled demo image: an OCI image layout built locally with umoci
//! from the busybox rootfs (no registry), packed as an archive `ctr images
//! import` takes.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::build::cache_dir;
use crate::rootfs::busybox_rootfs;

/// The name the demo image is imported under.
pub const DEMO_IMAGE: &str = "docker.io/vessel/demo:latest";
/// Its tag in the OCI layout (umoci's ref name).
const TAG: &str = "latest";

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Builds (once, cached by the rootfs it packs) `demo.tar`: an OCI archive
/// whose image runs as user 0 in `/home`, with `GREETING` set and a default
/// command that prints the kernel release and the greeting.
pub fn demo_image_archive() -> Result<PathBuf> {
    let rootfs = busybox_rootfs()?;
    let key = rootfs
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = cache_dir().join("image").join(format!("demo-{key}"));
    let archive = dir.join("demo.tar");
    if archive.is_file() {
        return Ok(archive);
    }
    let work = cache_dir()
        .join("image")
        .join(format!(".build-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let result = build(&rootfs, &work);
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&work);
        return Err(e);
    }
    std::fs::create_dir_all(dir.parent().unwrap_or(Path::new("/")))?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&work, &dir).context("move the demo image into the cache")?;
    Ok(archive)
}

fn build(rootfs: &Path, work: &Path) -> Result<()> {
    let layout = work.join("layout");
    let bundle = work.join("bundle");
    let image = format!("{}:{TAG}", layout.display());
    run(Command::new("umoci")
        .args(["init", "--layout"])
        .arg(&layout))
    .context("umoci (Debian package umoci) is needed for the demo image")?;
    run(Command::new("umoci").args(["new", "--image", &image]))?;
    run(Command::new("umoci")
        .args(["unpack", "--image", &image])
        .arg(&bundle))?;
    run(Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", rootfs.display()))
        .arg(bundle.join("rootfs")))?;
    std::fs::create_dir_all(bundle.join("rootfs/home"))?;
    run(Command::new("umoci")
        .args(["repack", "--image", &image])
        .arg(&bundle))?;
    run(Command::new("umoci").args([
        "config",
        "--image",
        &image,
        "--config.env",
        "GREETING=hello from a Vessel microVM",
        "--config.env",
        "PATH=/bin",
        "--config.workingdir",
        "/home",
        "--config.user",
        "0:0",
        "--config.cmd",
        "sh",
        "--config.cmd",
        "-c",
        "--config.cmd",
        "echo \"kernel $(uname -r)\"; echo \"$GREETING\"",
    ]))?;
    run(Command::new("umoci").args(["gc", "--layout"]).arg(&layout))?;
    run(Command::new("tar")
        .arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(work.join("demo.tar"))
        .arg("."))?;
    let _ = std::fs::remove_dir_all(&bundle);
    Ok(())
}

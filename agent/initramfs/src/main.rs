//! `vessel-initramfs`: pack a static init (and extra files) into a cached
//! newc initramfs and print its path.
//!
//! ```text
//! vessel-initramfs --init PATH [--file GUEST_PATH=HOST_PATH[:MODE]]... (--out FILE | --cache DIR)
//! ```

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use vessel_initramfs::Initramfs;

const USAGE: &str =
    "usage: vessel-initramfs --init PATH [--file GUEST=HOST[:MODE]]... (--out FILE | --cache DIR)";

fn main() -> Result<()> {
    let mut init = None;
    let mut files = Vec::new();
    let mut out = None;
    let mut cache = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .with_context(|| format!("{arg} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "--init" => init = Some(PathBuf::from(value()?)),
            "--file" => files.push(value()?),
            "--out" => out = Some(PathBuf::from(value()?)),
            "--cache" => cache = Some(PathBuf::from(value()?)),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    let init = init.with_context(|| format!("--init is required\n{USAGE}"))?;
    let mut archive = Initramfs::with_init(&init)?;
    for spec in files {
        let (guest, host) = spec
            .split_once('=')
            .with_context(|| format!("--file {spec:?}: expected GUEST=HOST[:MODE]"))?;
        let (host, mode) = match host.rsplit_once(':') {
            Some((path, mode)) => (
                path,
                u32::from_str_radix(mode, 8)
                    .with_context(|| format!("--file {spec:?}: mode is not octal"))?,
            ),
            None => (host, 0o644),
        };
        archive.add_file(guest, host.as_ref(), mode)?;
    }
    let path = match (out, cache) {
        (Some(out), None) => {
            let file =
                std::fs::File::create(&out).with_context(|| format!("create {}", out.display()))?;
            archive
                .write_to(std::io::BufWriter::new(file))
                .with_context(|| format!("write {}", out.display()))?;
            out
        }
        (None, Some(dir)) => archive.build_cached(&dir)?,
        _ => bail!("give exactly one of --out and --cache\n{USAGE}"),
    };
    println!("{}", path.display());
    Ok(())
}

//! Paths inside a root that the guest does not trust: [`secure_join`]
//! resolves them with symlinks followed as if the root were `/`, so no
//! link in a container's rootfs or in the host's share points outside it.
//! Used by the spec's mounts (`mounts.rs`) and the share's paths
//! (`share.rs`).

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io;
use std::path::{Component, Path, PathBuf};

/// The most symlinks one resolution follows (as the kernel's ELOOP limit).
const MAX_SYMLINKS: u32 = 40;

/// `unsafe_path` inside `root`, with symlinks resolved as if `root` were `/`.
/// Returns the path and the components (full paths, in order) that do not
/// exist yet.
pub fn secure_join(root: &Path, unsafe_path: &Path) -> io::Result<(PathBuf, Vec<PathBuf>)> {
    let mut pending: VecDeque<OsString> = components(unsafe_path);
    let mut resolved = PathBuf::new();
    let mut missing = Vec::new();
    let mut hops = 0;
    while let Some(part) = pending.pop_front() {
        if part == ".." {
            if missing.is_empty() {
                resolved.pop();
            } else {
                // Under a missing directory there are no symlinks to follow.
                missing.pop();
                resolved.pop();
            }
            continue;
        }
        let candidate = resolved.join(&part);
        let full = root.join(&candidate);
        if !missing.is_empty() {
            missing.push(full);
            resolved = candidate;
            continue;
        }
        match std::fs::symlink_metadata(&full) {
            Ok(meta) if meta.file_type().is_symlink() => {
                hops += 1;
                if hops > MAX_SYMLINKS {
                    return Err(io::Error::from_raw_os_error(libc::ELOOP));
                }
                let target = std::fs::read_link(&full)?;
                if target.is_absolute() {
                    resolved = PathBuf::new();
                }
                for (i, c) in components(&target).into_iter().enumerate() {
                    pending.insert(i, c);
                }
            }
            Ok(_) => resolved = candidate,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                missing.push(full);
                resolved = candidate;
            }
            Err(e) => return Err(e),
        }
    }
    Ok((root.join(resolved), missing))
}

/// The normal and `..` components of `path` (`.` and the root dropped).
fn components(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect()
}

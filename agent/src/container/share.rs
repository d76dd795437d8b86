//! Paths the host names inside its virtio-fs share ([`crate::share`]): a
//! rootfs or a bind-mount source given relative to the share, or absolute
//! under its mount point, is resolved inside it with symlinks taken as if
//! the share were `/`, so nothing in the share can point a container at
//! guest files outside it.

use std::path::{Path, PathBuf};

use super::error::SpecError;
use super::resolve::secure_join;

/// Where the agent mounted the share (see [`crate::share::SHARED_DIR`]).
pub const SHARE_ROOT: &str = crate::share::SHARED_DIR;

/// `path` resolved: relative ones and those under `root` inside the share
/// at `root`, which must exist; other absolute paths are the guest's own
/// and are returned as they are.
pub fn resolve(root: &Path, path: &Path) -> Result<PathBuf, SpecError> {
    let inside = if path.is_relative() {
        path
    } else if let Ok(rest) = path.strip_prefix(root) {
        rest
    } else {
        return Ok(path.to_path_buf());
    };
    let (resolved, missing) =
        secure_join(root, inside).map_err(|source| SpecError::ResolvePath {
            path: path.to_path_buf(),
            source,
        })?;
    if !missing.is_empty() {
        return Err(SpecError::ResolvePath {
            path: path.to_path_buf(),
            source: std::io::ErrorKind::NotFound.into(),
        });
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn share() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("containers/c1/rootfs/etc")).unwrap();
        std::fs::create_dir_all(dir.path().join("volumes/data")).unwrap();
        symlink("/etc", dir.path().join("volumes/abs")).unwrap();
        symlink("../../..", dir.path().join("volumes/up")).unwrap();
        symlink("data", dir.path().join("volumes/rel")).unwrap();
        dir
    }

    #[test]
    fn relative_and_share_paths_resolve_inside() {
        let dir = share();
        let root = dir.path();
        assert_eq!(
            resolve(root, Path::new("containers/c1/rootfs")).unwrap(),
            root.join("containers/c1/rootfs")
        );
        assert_eq!(
            resolve(root, &root.join("volumes/rel")).unwrap(),
            root.join("volumes/data")
        );
    }

    #[test]
    fn symlinks_and_dotdot_stay_in_the_share() {
        let dir = share();
        let root = dir.path();
        // "/etc" in the share is the share's etc (missing here), never the guest's.
        assert!(resolve(root, Path::new("volumes/abs")).is_err());
        assert_eq!(
            resolve(root, Path::new("volumes/up")).unwrap(),
            root.to_path_buf()
        );
        assert_eq!(
            resolve(root, Path::new("../../../containers/c1/rootfs/etc")).unwrap(),
            root.join("containers/c1/rootfs/etc")
        );
    }

    #[test]
    fn guest_paths_pass_and_missing_share_paths_fail() {
        let dir = share();
        let root = dir.path();
        assert_eq!(
            resolve(root, Path::new("/vessel/rootfs/busybox")).unwrap(),
            PathBuf::from("/vessel/rootfs/busybox")
        );
        let err = resolve(root, Path::new("containers/nope")).unwrap_err();
        assert!(err.to_string().contains("containers/nope"), "{err}");
    }
}

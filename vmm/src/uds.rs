//! The VMM's listening unix sockets (the API's, hybrid vsock's): whoever
//! connects drives the VM or reaches the guest, so each is its owner's
//! alone (0600), whatever the umask.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::Path;

/// Binds a listening socket at `path` and makes it mode 0600. (The window
/// between the two is closed by the directory: the shim's state directory
/// is its alone.)
pub fn bind_owner_only(path: &Path) -> io::Result<UnixListener> {
    let listener = UnixListener::bind(path)?;
    if let Err(error) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
        let _ = std::fs::remove_file(path);
        return Err(error);
    }
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_is_its_owners_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let _listener = bind_owner_only(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(
            bind_owner_only(&path).is_err(),
            "an existing path is not replaced here"
        );
    }
}

//! The VMM's own namespaces: what of Firecracker's jailer Vessel has so far.
//!
//! Before any thread starts, the VMM leaves the host's network and IPC
//! namespaces for fresh, empty ones (`unshare(CLONE_NEWNET |
//! CLONE_NEWIPC)`): it has no network device yet and uses no System V
//! IPC, so a compromised VMM sees no host interface, route or socket port
//! and no host shared memory. Its unix sockets (API, hybrid vsock) are
//! reached by path, which works across network namespaces. With a share it
//! also has a private mount namespace (`devices::virtio::fs::share`).
//!
//! Not yet: a pid namespace (it needs a fork, the VMM's child being its
//! init), `pivot_root` into a per-VM root, an unprivileged uid, seccomp.
//! [`crate::privileges`] drops the capabilities it does not use.

/// Why the VMM could not leave the host's namespaces.
#[derive(Debug, thiserror::Error)]
pub enum JailError {
    #[error("unshare(CLONE_NEWNET | CLONE_NEWIPC)")]
    Unshare(#[source] std::io::Error),
}

/// Moves the calling thread, which must be the VMM's only one, into new
/// network and IPC namespaces; the threads it starts later follow.
pub fn enter_own_namespaces() -> Result<(), JailError> {
    // SAFETY: unshare takes flags only; with one thread it applies to the
    // whole process.
    if unsafe { libc::unshare(libc::CLONE_NEWNET | libc::CLONE_NEWIPC) } != 0 {
        return Err(JailError::Unshare(std::io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn namespace(pid: &str, kind: &str) -> std::path::PathBuf {
        std::fs::read_link(format!("/proc/{pid}/ns/{kind}")).unwrap()
    }

    #[test]
    fn a_thread_leaves_the_hosts_network_and_ipc_namespaces() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        let host = (namespace("self", "net"), namespace("self", "ipc"));
        // In a thread of its own (namespaces are per thread), so the
        // test's process stays where it was.
        let own = std::thread::spawn(|| {
            enter_own_namespaces().unwrap();
            // SAFETY: gettid has no preconditions.
            let tid = format!("self/task/{}", unsafe { libc::gettid() });
            (namespace(&tid, "net"), namespace(&tid, "ipc"))
        })
        .join()
        .unwrap();
        assert_ne!(own.0, host.0);
        assert_ne!(own.1, host.1);
        assert_eq!(namespace("self", "net"), host.0);
    }
}

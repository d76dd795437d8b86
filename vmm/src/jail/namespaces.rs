//! The VMM's own namespaces: before any thread starts, it leaves the
//! host's network, IPC and pid namespaces for fresh, empty ones
//! (`unshare(CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWPID)`). It has no
//! network device yet and uses no System V IPC, so a compromised VMM sees
//! no host interface, route or socket port and no host shared memory. Its
//! unix sockets (API, hybrid vsock) are reached by path, which works across
//! network namespaces. A new pid namespace takes effect for the caller's
//! children only: [`super::monitor`] forks the VMM into it.

/// Why the VMM could not leave the host's namespaces.
#[derive(Debug, thiserror::Error)]
pub enum NamespacesError {
    #[error("unshare(CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWPID)")]
    Unshare(#[source] std::io::Error),
}

/// Moves the calling thread, which must be the VMM's only one, into new
/// network and IPC namespaces, and its future children into a new pid
/// namespace.
pub fn unshare_all() -> Result<(), NamespacesError> {
    let flags = libc::CLONE_NEWNET | libc::CLONE_NEWIPC | libc::CLONE_NEWPID;
    // SAFETY: unshare takes flags only; with one thread it applies to the
    // whole process.
    if unsafe { libc::unshare(flags) } != 0 {
        return Err(NamespacesError::Unshare(std::io::Error::last_os_error()));
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
    fn a_thread_leaves_the_hosts_network_ipc_and_pid_namespaces() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        let host = namespace("self", "net");
        let host_ipc = namespace("self", "ipc");
        let host_pid = namespace("self", "pid_for_children");
        // In a thread of its own (namespaces are per thread), so the
        // test's process stays where it was.
        let own = std::thread::spawn(|| {
            unshare_all().unwrap();
            // SAFETY: gettid has no preconditions.
            let tid = format!("self/task/{}", unsafe { libc::gettid() });
            // A pid namespace without a process yet has no link to read.
            let pid = std::fs::read_link(format!("/proc/{tid}/ns/pid_for_children")).ok();
            (namespace(&tid, "net"), namespace(&tid, "ipc"), pid)
        })
        .join()
        .unwrap();
        assert_ne!(own.0, host);
        assert_ne!(own.1, host_ipc);
        assert_ne!(own.2, Some(host_pid));
        assert_eq!(namespace("self", "net"), host);
    }
}

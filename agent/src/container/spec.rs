//! OCI runtime spec -> [`Plan`]: what a container's init (or an exec'd
//! process) does before `execve`.
//!
//! Namespaces in the guest:
//! - mount, and pid unless the spec joins the pod's: the container's own;
//! - uts and ipc: the pod's. The pod's first container creates them; later
//!   containers of the sandbox join them (whatever path the host put in
//!   the spec, which means nothing in the guest);
//! - network: the guest's own. The VM is the pod, and its interfaces live
//!   in the guest's network namespace, so a spec's network namespace is
//!   taken to be that one;
//! - user and cgroup: the container's own when the spec asks.

use std::ffi::CString;
use std::os::fd::RawFd;
use std::path::Path;
use std::sync::Arc;

use oci_spec::runtime::{LinuxNamespaceType, PosixRlimitType, Process, Spec};

use super::caps;
use super::error::SpecError;
use super::mounts::{cstr, propagation, MountPlanner};
use super::plan::{Command, Plan, Step};
use super::seccomp::{self, SeccompProgram};

/// The PATH searched when the process's environment has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The umask when the spec gives none (runc's).
const DEFAULT_UMASK: libc::mode_t = 0o022;

/// The process's standard streams, as fds of the agent.
#[derive(Debug, Clone)]
pub enum ProcessIo {
    /// Pipe ends for fds 0, 1 and 2.
    Pipes {
        stdin: RawFd,
        stdout: RawFd,
        stderr: RawFd,
    },
    /// A terminal's follower end, and its path (bound to /dev/console).
    Tty { follower: RawFd, path: String },
}

/// Facts about the guest the plans depend on.
#[derive(Debug, Clone, Copy)]
pub struct GuestFacts {
    /// `/proc/sys/kernel/cap_last_cap`.
    pub last_cap: u32,
}

/// The plan of a container's init, with how to clone it.
#[derive(Debug)]
pub struct InitPlan {
    /// The steps.
    pub plan: Plan,
    /// CLONE_NEW* flags for `clone3`.
    pub namespaces: u64,
    /// Born into the pid namespace of this pidfd's process (the pod's).
    pub pid_ns_of: Option<RawFd>,
    /// uid_map and gid_map for a new user namespace.
    pub id_maps: Option<(String, String)>,
    /// The namespaces an exec joins (of the init).
    pub join: libc::c_int,
    /// The seccomp program, reused for execs.
    pub seccomp: Option<Arc<SeccompProgram>>,
}

/// Parses a runtime spec.
pub fn parse_spec(json: &[u8]) -> Result<Spec, SpecError> {
    serde_json::from_slice(json).map_err(|source| SpecError::Parse {
        what: "runtime spec",
        source,
    })
}

/// Parses a process (ExecProcess).
pub fn parse_process(json: &[u8]) -> Result<Process, SpecError> {
    serde_json::from_slice(json).map_err(|source| SpecError::Parse {
        what: "process",
        source,
    })
}

fn cstring(s: &str, what: &str) -> Result<CString, SpecError> {
    CString::new(s).map_err(|_| SpecError::Invalid(format!("{what} contains a NUL byte")))
}

/// The plan of a container's init. `pod` is the pidfd of the pod's first
/// container when this one joins an existing pod.
pub fn init_plan(
    spec: &Spec,
    rootfs: &Path,
    io: &ProcessIo,
    pod: Option<RawFd>,
    facts: GuestFacts,
) -> Result<InitPlan, SpecError> {
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| SpecError::Invalid("the spec has no process".into()))?;
    let linux = spec.linux().clone().unwrap_or_default();
    let mut steps = Vec::new();

    // Namespaces.
    let mut namespaces = libc::CLONE_NEWNS as u64;
    let mut join = libc::CLONE_NEWNS;
    let mut pid_ns_of = None;
    let mut id_maps = None;
    let mut own_uts = false;
    let mut pod_join = 0;
    let mut cgroup_ns = false;
    for ns in linux.namespaces().as_deref().unwrap_or_default() {
        let path = ns.path().as_ref();
        match ns.typ() {
            LinuxNamespaceType::Mount if path.is_some() => {
                return Err(SpecError::Invalid(
                    "joining a mount namespace by path is not supported".into(),
                ))
            }
            LinuxNamespaceType::Mount | LinuxNamespaceType::Network => {}
            LinuxNamespaceType::Pid => match (path, pod) {
                (None, _) => namespaces |= libc::CLONE_NEWPID as u64,
                (Some(_), Some(pod)) => pid_ns_of = Some(pod),
                (Some(p), None) => {
                    return Err(SpecError::Invalid(format!(
                        "pid namespace {p:?}: only a pod's can be joined, and this is the pod's first container"
                    )))
                }
            },
            kind @ (LinuxNamespaceType::Uts | LinuxNamespaceType::Ipc) => {
                let flag = if kind == LinuxNamespaceType::Uts {
                    libc::CLONE_NEWUTS
                } else {
                    libc::CLONE_NEWIPC
                };
                join |= flag;
                if pod.is_some() {
                    pod_join |= flag;
                } else {
                    namespaces |= flag as u64;
                    own_uts |= kind == LinuxNamespaceType::Uts;
                }
            }
            LinuxNamespaceType::User => {
                if path.is_some() {
                    return Err(SpecError::Invalid(
                        "joining a user namespace by path is not supported".into(),
                    ));
                }
                namespaces |= libc::CLONE_NEWUSER as u64;
                join |= libc::CLONE_NEWUSER;
                id_maps = Some(id_maps_of(&linux)?);
            }
            LinuxNamespaceType::Cgroup => {
                if path.is_some() {
                    return Err(SpecError::Invalid(
                        "joining a cgroup namespace by path is not supported".into(),
                    ));
                }
                cgroup_ns = true;
                join |= libc::CLONE_NEWCGROUP;
            }
            other => {
                return Err(SpecError::Invalid(format!(
                    "namespace {other} is not supported"
                )))
            }
        }
    }
    let userns = id_maps.is_some();
    if userns {
        steps.push(Step::WaitParent);
    }
    if let (Some(pod), true) = (pod, pod_join != 0) {
        steps.push(Step::SetNs {
            fd: pod,
            nstype: pod_join,
        });
    }
    if cgroup_ns {
        steps.push(Step::Unshare(libc::CLONE_NEWCGROUP));
    }
    if let Some(adj) = process.oom_score_adj() {
        steps.push(Step::WriteFile {
            path: c"/proc/self/oom_score_adj".into(),
            data: cstring(&adj.to_string(), "oom_score_adj")?,
        });
    }

    // The root and the mounts.
    let rootfs_c = cstr(rootfs)?;
    steps.push(Step::Mount {
        source: None,
        target: c"/".into(),
        fstype: None,
        flags: libc::MS_REC | libc::MS_PRIVATE,
        data: None,
    });
    steps.push(Step::Mount {
        source: Some(rootfs_c.clone()),
        target: rootfs_c.clone(),
        fstype: None,
        flags: libc::MS_BIND | libc::MS_REC,
        data: None,
    });
    let mut planner = MountPlanner::new(rootfs);
    for m in spec.mounts().as_deref().unwrap_or_default() {
        planner.mount(m)?;
    }
    if planner.has_mount("/dev") {
        default_devices(&mut planner, userns)?;
    }
    for dev in linux.devices().as_deref().unwrap_or_default() {
        planner.device(dev, userns)?;
    }
    let console = match io {
        ProcessIo::Tty { path, .. } if planner.has_mount("/dev") => {
            let dest = Path::new("/dev/console");
            let (target, _) = super::mounts::secure_join(rootfs, dest).map_err(|source| {
                SpecError::ResolvePath {
                    path: dest.into(),
                    source,
                }
            })?;
            Some(Step::BindDevice {
                source: cstr(path)?,
                target: cstr(&target)?,
            })
        }
        _ => None,
    };
    steps.extend(planner.into_steps());
    steps.extend(console);
    steps.push(Step::Chdir(rootfs_c));
    steps.push(Step::PivotRoot);
    if let Some(p) = linux.rootfs_propagation() {
        let flags = propagation(p)
            .ok_or_else(|| SpecError::Invalid(format!("rootfsPropagation {p:?} is unknown")))?;
        steps.push(Step::Mount {
            source: None,
            target: c"/".into(),
            fstype: None,
            flags,
            data: None,
        });
    }
    for path in linux.masked_paths().as_deref().unwrap_or_default() {
        steps.push(Step::MaskPath(container_path(path)?));
    }
    for path in linux.readonly_paths().as_deref().unwrap_or_default() {
        steps.push(Step::ReadonlyPath(container_path(path)?));
    }
    if spec.root().as_ref().and_then(|r| r.readonly()) == Some(true) {
        steps.push(Step::RemountBind {
            target: c"/".into(),
            flags: libc::MS_RDONLY,
        });
    }
    if let Some(sysctl) = linux.sysctl() {
        let mut keys: Vec<_> = sysctl.iter().collect();
        keys.sort();
        for (key, value) in keys {
            if key.contains("..") || key.contains('/') {
                return Err(SpecError::Invalid(format!("sysctl {key:?} is not a key")));
            }
            steps.push(Step::WriteFile {
                path: cstring(&format!("/proc/sys/{}", key.replace('.', "/")), "sysctl")?,
                data: cstring(value, "sysctl value")?,
            });
        }
    }
    if let Some(name) = spec.hostname().as_deref().filter(|h| !h.is_empty()) {
        if own_uts {
            steps.push(Step::SetHostname(cstring(name, "hostname")?));
        } else if pod.is_none() {
            return Err(SpecError::Invalid(
                "a hostname needs a uts namespace".into(),
            ));
        }
    }
    if let Some(name) = spec.domainname().as_deref().filter(|h| !h.is_empty()) {
        if own_uts {
            steps.push(Step::SetDomainname(cstring(name, "domainname")?));
        }
    }

    let seccomp = linux
        .seccomp()
        .as_ref()
        .map(|s| seccomp::compile(s).map(Arc::new))
        .transpose()
        .map_err(SpecError::CompileSeccomp)?;
    let command = process_steps(process, io, seccomp.as_deref(), facts, true, &mut steps)?;
    Ok(InitPlan {
        plan: Plan {
            steps,
            command,
            report_fd: -1,
            start_fd: -1,
        },
        namespaces,
        pid_ns_of,
        id_maps,
        join,
        seccomp,
    })
}

/// The plan of a process exec'd into a running container whose init has
/// pidfd `init` and namespaces `join`.
pub fn exec_plan(
    process: &Process,
    init: RawFd,
    join: libc::c_int,
    seccomp: Option<&SeccompProgram>,
    io: &ProcessIo,
    facts: GuestFacts,
) -> Result<Plan, SpecError> {
    let mut steps = vec![Step::SetNs {
        fd: init,
        nstype: join,
    }];
    let command = process_steps(process, io, seccomp, facts, false, &mut steps)?;
    Ok(Plan {
        steps,
        command,
        report_fd: -1,
        start_fd: -1,
    })
}

/// The container path of a masked or read-only path.
fn container_path(path: &str) -> Result<CString, SpecError> {
    if !path.starts_with('/') {
        return Err(SpecError::Invalid(format!("path {path:?} is not absolute")));
    }
    cstring(path, "a masked or read-only path")
}

fn id_maps_of(linux: &oci_spec::runtime::Linux) -> Result<(String, String), SpecError> {
    let render = |maps: &Option<Vec<oci_spec::runtime::LinuxIdMapping>>, what: &str| {
        let maps = maps.as_deref().unwrap_or_default();
        if maps.is_empty() {
            return Err(SpecError::Invalid(format!(
                "a user namespace needs {what} mappings"
            )));
        }
        Ok(maps
            .iter()
            .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
            .collect::<String>())
    };
    Ok((
        render(linux.uid_mappings(), "uid")?,
        render(linux.gid_mappings(), "gid")?,
    ))
}

/// runc's default devices, and the /dev symlinks.
fn default_devices(planner: &mut MountPlanner<'_>, userns: bool) -> Result<(), SpecError> {
    for (name, major, minor) in [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ] {
        let dev = oci_spec::runtime::LinuxDeviceBuilder::default()
            .path(format!("/dev/{name}"))
            .typ(oci_spec::runtime::LinuxDeviceType::C)
            .major(major)
            .minor(minor)
            .file_mode(0o666u32)
            .build()
            .map_err(|e| SpecError::Invalid(e.to_string()))?;
        planner.device(&dev, userns)?;
    }
    for (to, link) in [
        ("/proc/self/fd", "/dev/fd"),
        ("/proc/self/fd/0", "/dev/stdin"),
        ("/proc/self/fd/1", "/dev/stdout"),
        ("/proc/self/fd/2", "/dev/stderr"),
        ("pts/ptmx", "/dev/ptmx"),
    ] {
        planner.symlink(to, link)?;
    }
    Ok(())
}

fn rlimit_resource(typ: PosixRlimitType) -> libc::c_int {
    (match typ {
        PosixRlimitType::RlimitCpu => libc::RLIMIT_CPU,
        PosixRlimitType::RlimitFsize => libc::RLIMIT_FSIZE,
        PosixRlimitType::RlimitData => libc::RLIMIT_DATA,
        PosixRlimitType::RlimitStack => libc::RLIMIT_STACK,
        PosixRlimitType::RlimitCore => libc::RLIMIT_CORE,
        PosixRlimitType::RlimitRss => libc::RLIMIT_RSS,
        PosixRlimitType::RlimitNproc => libc::RLIMIT_NPROC,
        PosixRlimitType::RlimitNofile => libc::RLIMIT_NOFILE,
        PosixRlimitType::RlimitMemlock => libc::RLIMIT_MEMLOCK,
        PosixRlimitType::RlimitAs => libc::RLIMIT_AS,
        PosixRlimitType::RlimitLocks => libc::RLIMIT_LOCKS,
        PosixRlimitType::RlimitSigpending => libc::RLIMIT_SIGPENDING,
        PosixRlimitType::RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        PosixRlimitType::RlimitNice => libc::RLIMIT_NICE,
        PosixRlimitType::RlimitRtprio => libc::RLIMIT_RTPRIO,
        PosixRlimitType::RlimitRttime => libc::RLIMIT_RTTIME,
    }) as libc::c_int
}

/// The per-process steps (stdio, limits, identity, privileges) and the
/// command; shared by inits and execs.
fn process_steps(
    process: &Process,
    io: &ProcessIo,
    seccomp: Option<&SeccompProgram>,
    facts: GuestFacts,
    wait_start: bool,
    steps: &mut Vec<Step>,
) -> Result<Command, SpecError> {
    steps.push(Step::Setsid);
    match io {
        ProcessIo::Pipes {
            stdin,
            stdout,
            stderr,
        } => {
            for (from, to) in [(*stdin, 0), (*stdout, 1), (*stderr, 2)] {
                steps.push(Step::Dup2 { from, to });
            }
        }
        ProcessIo::Tty { follower, .. } => {
            for to in 0..3 {
                steps.push(Step::Dup2 {
                    from: *follower,
                    to,
                });
            }
            steps.push(Step::SetCtty(0));
        }
    }
    for rlimit in process.rlimits().as_deref().unwrap_or_default() {
        steps.push(Step::SetRlimit {
            resource: rlimit_resource(rlimit.typ()),
            soft: rlimit.soft(),
            hard: rlimit.hard(),
        });
    }
    let no_new_privs = process.no_new_privileges() == Some(true);
    let seccomp_step = |p: &SeccompProgram| Step::Seccomp {
        filters: p.filters.clone(),
        flags: p.flags,
    };
    // Without no_new_privs a filter needs CAP_SYS_ADMIN: install it while
    // the process still has it.
    if let (Some(p), false) = (seccomp, no_new_privs) {
        if !p.filters.is_empty() {
            steps.push(seccomp_step(p));
        }
    }
    let sets = process
        .capabilities()
        .as_ref()
        .map(caps::cap_sets)
        .unwrap_or_default();
    steps.push(Step::DropBounding {
        keep: sets.bounding,
        last: facts.last_cap,
    });
    let user = process.user();
    steps.push(Step::SetGroups(
        user.additional_gids().clone().unwrap_or_default(),
    ));
    steps.push(Step::SetUser {
        uid: user.uid(),
        gid: user.gid(),
    });
    steps.push(Step::SetCaps(sets));
    steps.push(Step::Umask(
        user.umask().map_or(DEFAULT_UMASK, |m| m as libc::mode_t),
    ));
    let cwd = process.cwd();
    if !cwd.is_absolute() {
        return Err(SpecError::Invalid(format!("cwd {cwd:?} is not absolute")));
    }
    steps.push(Step::Chdir(cstr(cwd)?));
    if no_new_privs {
        steps.push(Step::NoNewPrivs);
    }
    steps.push(Step::FindExecutable);
    if wait_start {
        steps.push(Step::WaitStart);
    }
    if let (Some(p), true) = (seccomp, no_new_privs) {
        if !p.filters.is_empty() {
            steps.push(seccomp_step(p));
        }
    }
    steps.push(Step::Exec);
    command(process)
}

/// argv, envp and the PATH candidates of `process`.
fn command(process: &Process) -> Result<Command, SpecError> {
    let args = process.args().as_deref().unwrap_or_default();
    let Some(arg0) = args.first().filter(|a| !a.is_empty()) else {
        return Err(SpecError::Invalid("the process has no args".into()));
    };
    let env = process.env().as_deref().unwrap_or_default();
    let candidates = if arg0.contains('/') {
        vec![cstring(arg0, "args[0]")?]
    } else {
        let path = env
            .iter()
            .rev()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or(DEFAULT_PATH);
        path.split(':')
            .filter(|dir| !dir.is_empty())
            .map(|dir| cstring(&format!("{}/{arg0}", dir.trim_end_matches('/')), "PATH"))
            .collect::<Result<Vec<_>, _>>()?
    };
    Ok(Command {
        candidates,
        argv: args
            .iter()
            .map(|a| cstring(a, "an argument"))
            .collect::<Result<_, _>>()?,
        envp: env
            .iter()
            .map(|e| cstring(e, "an environment variable"))
            .collect::<Result<_, _>>()?,
    })
}

#[cfg(test)]
#[path = "spec_tests.rs"]
mod tests;

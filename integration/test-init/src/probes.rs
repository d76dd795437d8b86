//! The probes. Each returns a short value for the report or the first error.

use crate::sys::{self, check, SysResult};

/// proc, sysfs, devtmpfs and devpts, as the agent will mount them.
pub fn mount_base() -> SysResult<String> {
    for (fstype, target) in [
        ("proc", "/proc"),
        ("sysfs", "/sys"),
        ("devtmpfs", "/dev"),
        ("tmpfs", "/run"),
    ] {
        sys::mkdir_p(target)?;
        sys::mount(fstype, target, fstype, libc::MS_NOSUID, "")?;
    }
    sys::mkdir_p("/dev/pts")?;
    sys::mount(
        "devpts",
        "/dev/pts",
        "devpts",
        libc::MS_NOSUID | libc::MS_NOEXEC,
        "ptmxmode=0666,newinstance",
    )?;
    Ok("ok".into())
}

pub fn kernel_release() -> SysResult<String> {
    Ok(sys::read_to_string("/proc/sys/kernel/osrelease")?
        .trim()
        .to_string())
}

/// Counts CPUs in /sys/devices/system/cpu/online ("0-3,5").
pub fn online_cpus() -> SysResult<String> {
    let online = sys::read_to_string("/sys/devices/system/cpu/online")?;
    let mut count = 0;
    for range in online.trim().split(',') {
        let (lo, hi) = range.split_once('-').unwrap_or((range, range));
        let parse = |s: &str| {
            s.parse::<u32>()
                .map_err(|_| format!("bad cpu list {online:?}"))
        };
        count += parse(hi)? - parse(lo)? + 1;
    }
    Ok(count.to_string())
}

pub fn mem_total_kib() -> SysResult<String> {
    let meminfo = sys::read_to_string("/proc/meminfo")?;
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .map(|v| v.trim().to_string())
        .ok_or_else(|| "no MemTotal in /proc/meminfo".into())
}

/// The file systems Vessel needs, in a fixed order; errors name the missing.
pub fn filesystems() -> SysResult<String> {
    let list = sys::read_to_string("/proc/filesystems")?;
    let have: Vec<&str> = list
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .collect();
    let wanted = [
        "overlay", "virtiofs", "fuse", "cgroup2", "ext4", "erofs", "tmpfs", "devpts", "mqueue",
    ];
    let missing: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|w| !have.contains(w))
        .collect();
    if missing.is_empty() {
        Ok(wanted.join(","))
    } else {
        Err(format!("missing {}", missing.join(",")))
    }
}

/// Mounts cgroup2, enables the controllers, sets and reads back limits.
pub fn cgroup2() -> SysResult<String> {
    let root = "/sys/fs/cgroup";
    sys::mount(
        "cgroup2",
        root,
        "cgroup2",
        libc::MS_NOSUID | libc::MS_NOEXEC,
        "",
    )?;
    let controllers = sys::read_to_string(&format!("{root}/cgroup.controllers"))?
        .trim()
        .to_string();
    sys::write(
        &format!("{root}/cgroup.subtree_control"),
        "+memory +pids +cpu +io",
    )?;
    let probe = format!("{root}/vessel-probe");
    sys::mkdir_p(&probe)?;
    for (file, value) in [
        ("memory.max", "67108864"),
        ("pids.max", "16"),
        ("cpu.max", "50000 100000"),
    ] {
        sys::write(&format!("{probe}/{file}"), value)?;
        let got = sys::read_to_string(&format!("{probe}/{file}"))?;
        if got.trim() != value {
            return Err(format!("{file}: wrote {value}, read {}", got.trim()));
        }
    }
    sys::write(&format!("{probe}/cgroup.freeze"), "1")?;
    sys::write(&format!("{probe}/cgroup.freeze"), "0")?;
    std::fs::remove_dir(&probe).map_err(|e| format!("rmdir {probe}: {e}"))?;
    Ok(controllers)
}

/// An overlay of a tmpfs lower and upper dir: read through, copy up on write.
pub fn overlay() -> SysResult<String> {
    let base = "/run/ovl";
    for dir in ["lower", "upper", "work", "merged"] {
        sys::mkdir_p(&format!("{base}/{dir}"))?;
    }
    sys::write(&format!("{base}/lower/hello"), "from-lower")?;
    sys::mount(
        "overlay",
        &format!("{base}/merged"),
        "overlay",
        0,
        &format!("lowerdir={base}/lower,upperdir={base}/upper,workdir={base}/work"),
    )?;
    let read = sys::read_to_string(&format!("{base}/merged/hello"))?;
    sys::write(&format!("{base}/merged/hello"), "changed")?;
    let upper = sys::read_to_string(&format!("{base}/upper/hello"))?;
    let lower = sys::read_to_string(&format!("{base}/lower/hello"))?;
    sys::umount(&format!("{base}/merged"))?;
    if (read.as_str(), upper.as_str(), lower.as_str()) != ("from-lower", "changed", "from-lower") {
        return Err(format!("read {read:?}, upper {upper:?}, lower {lower:?}"));
    }
    Ok("ok".into())
}

/// `struct clone_args` of clone3(2).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// clone3 into new pid, mount, uts, ipc and net namespaces; the child checks
/// it is PID 1, sets a hostname, leaves the initramfs root, pivot_roots into a
/// tmpfs and brings up its own loopback over netlink. Its exit code names the step that failed.
pub fn namespaces_pivot_root() -> SysResult<String> {
    let mut args = CloneArgs {
        flags: (libc::CLONE_NEWNS
            | libc::CLONE_NEWPID
            | libc::CLONE_NEWUTS
            | libc::CLONE_NEWIPC
            | libc::CLONE_NEWNET) as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..Default::default()
    };
    // SAFETY: args is a valid clone_args of the size passed; without
    // CLONE_VM the child gets its own copy of memory, like fork(), and this
    // process is single-threaded, so the child may run ordinary code.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    let pid = check(pid, "clone3")?;
    if pid == 0 {
        let code = match in_new_namespaces() {
            Ok(()) => 0,
            Err((step, err)) => {
                println!("VESSEL-PROBE namespaces child: {err}");
                step
            }
        };
        // SAFETY: _exit ends the child without running the parent's atexit work.
        unsafe { libc::_exit(code) };
    }
    sys::wait_child(pid)?;
    Ok("pid,mnt,uts,ipc,net+pivot_root".into())
}

fn in_new_namespaces() -> Result<(), (i32, String)> {
    let step = |n: i32| move |e: String| (n, e);
    // SAFETY: getpid has no preconditions.
    if unsafe { libc::getpid() } != 1 {
        return Err((1, "not PID 1 in the new pid namespace".into()));
    }
    let name = b"vessel-probe";
    // SAFETY: name points to name.len() readable bytes.
    let ret = unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) };
    check(ret.into(), "sethostname").map_err(step(2))?;
    sys::mount("none", "/", "", libc::MS_REC | libc::MS_PRIVATE, "").map_err(step(3))?;
    // pivot_root(2) refuses to move away from the initramfs (rootfs): first
    // move a tmpfs over / and chroot into it, as switch_root does. The agent
    // must do the same before it pivots into container root file systems.
    sys::mkdir_p("/run/stage").map_err(step(4))?;
    sys::mount("tmpfs", "/run/stage", "tmpfs", 0, "").map_err(step(4))?;
    sys::write("/run/stage/stage-marker", "").map_err(step(4))?;
    std::env::set_current_dir("/run/stage").map_err(|e| (4, format!("chdir /run/stage: {e}")))?;
    sys::mount(".", "/", "", libc::MS_MOVE, "").map_err(step(4))?;
    // SAFETY: the path is a valid NUL-terminated string.
    check(unsafe { libc::chroot(c".".as_ptr()) }.into(), "chroot .").map_err(step(4))?;
    std::env::set_current_dir("/").map_err(|e| (4, format!("chdir /: {e}")))?;
    // Now a real pivot_root into a fresh root, as for a container.
    sys::mkdir_p("/newroot").map_err(step(5))?;
    sys::mount("tmpfs", "/newroot", "tmpfs", 0, "").map_err(step(5))?;
    sys::mkdir_p("/newroot/old").map_err(step(5))?;
    let (new_c, old_c) = (c"/newroot", c"/newroot/old");
    // SAFETY: both are valid NUL-terminated paths.
    let ret = unsafe { libc::syscall(libc::SYS_pivot_root, new_c.as_ptr(), old_c.as_ptr()) };
    check(ret, "pivot_root").map_err(step(6))?;
    std::env::set_current_dir("/").map_err(|e| (7, format!("chdir /: {e}")))?;
    sys::umount("/old").map_err(step(8))?;
    if std::path::Path::new("/stage-marker").exists()
        || std::path::Path::new("/old/stage-marker").exists()
    {
        return Err((9, "old root still visible after pivot_root".into()));
    }
    netlink_loopback_up().map(drop).map_err(step(10))
}

/// RTM_NEWLINK on ifindex 1 (lo) with IFF_UP, and wait for the kernel's ACK.
pub fn netlink_loopback_up() -> SysResult<String> {
    // SAFETY: plain socket creation.
    let fd = check(
        unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        }
        .into(),
        "socket(AF_NETLINK)",
    )? as libc::c_int;
    let result = (|| {
        // nlmsghdr (16) + ifinfomsg (16)
        let mut msg = [0u8; 32];
        msg[0..4].copy_from_slice(&32u32.to_ne_bytes());
        msg[4..6].copy_from_slice(&libc::RTM_NEWLINK.to_ne_bytes());
        msg[6..8].copy_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16).to_ne_bytes());
        msg[8..12].copy_from_slice(&1u32.to_ne_bytes()); // sequence
        msg[16] = libc::AF_UNSPEC as u8;
        msg[20..24].copy_from_slice(&1i32.to_ne_bytes()); // ifindex of lo
        msg[24..28].copy_from_slice(&(libc::IFF_UP as u32).to_ne_bytes()); // flags
                                                                           // change mask
        msg[28..32].copy_from_slice(&(libc::IFF_UP as u32).to_ne_bytes());
        // SAFETY: msg is a valid buffer of msg.len() bytes.
        let ret = unsafe { libc::send(fd, msg.as_ptr().cast(), msg.len(), 0) };
        check(ret as libc::c_long, "netlink send")?;
        let mut reply = [0u8; 256];
        // SAFETY: reply is a writable buffer of reply.len() bytes.
        let n = check(
            unsafe { libc::recv(fd, reply.as_mut_ptr().cast(), reply.len(), 0) } as libc::c_long,
            "netlink recv",
        )? as usize;
        let kind = u16::from_ne_bytes([reply[4], reply[5]]);
        let errno = i32::from_ne_bytes([reply[16], reply[17], reply[18], reply[19]]);
        if n < 20 || kind != libc::NLMSG_ERROR as u16 {
            return Err(format!("unexpected netlink reply type {kind} ({n} bytes)"));
        }
        if errno != 0 {
            return Err(format!(
                "RTM_NEWLINK lo up: {}",
                std::io::Error::from_raw_os_error(-errno)
            ));
        }
        Ok("lo up".to_string())
    })();
    sys::close(fd);
    result
}

/// An eventfd made readable wakes epoll_wait.
pub fn epoll_eventfd() -> SysResult<String> {
    // SAFETY: plain fd creation.
    let ep = check(
        unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) }.into(),
        "epoll_create1",
    )? as libc::c_int;
    // SAFETY: plain fd creation.
    let ev = check(
        unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) }.into(),
        "eventfd",
    )? as libc::c_int;
    let result = (|| {
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: 7,
        };
        // SAFETY: ep and ev are open fds; event is a valid epoll_event.
        let ret = unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, ev, &mut event) };
        check(ret.into(), "epoll_ctl")?;
        let one = 1u64.to_ne_bytes();
        // SAFETY: one is 8 readable bytes.
        let ret = unsafe { libc::write(ev, one.as_ptr().cast(), 8) };
        check(ret as libc::c_long, "eventfd write")?;
        let mut out = [libc::epoll_event { events: 0, u64: 0 }; 2];
        // SAFETY: out has room for 2 events.
        let n = check(
            unsafe { libc::epoll_wait(ep, out.as_mut_ptr(), 2, 1000) }.into(),
            "epoll_wait",
        )?;
        let token = out[0].u64;
        if n == 1 && token == 7 {
            Ok("ok".to_string())
        } else {
            Err(format!("epoll_wait gave {n} events, token {token}"))
        }
    })();
    sys::close(ev);
    sys::close(ep);
    result
}

/// An AF_VSOCK stream socket bound to port 1024 and listening, as the agent's.
pub fn vsock_listen() -> SysResult<String> {
    // SAFETY: plain socket creation.
    let fd = check(
        unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) }.into(),
        "socket(AF_VSOCK)",
    )? as libc::c_int;
    let result = (|| {
        // SAFETY: sockaddr_vm is plain data; all-zero is a valid value.
        let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
        addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
        addr.svm_port = 1024;
        addr.svm_cid = libc::VMADDR_CID_ANY;
        let len = std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t;
        // SAFETY: addr is a valid sockaddr_vm of len bytes.
        let ret = unsafe { libc::bind(fd, (&addr as *const libc::sockaddr_vm).cast(), len) };
        check(ret.into(), "bind vsock port 1024")?;
        // SAFETY: fd is a bound socket.
        check(unsafe { libc::listen(fd, 16) }.into(), "listen vsock")?;
        Ok("listening on port 1024".to_string())
    })();
    sys::close(fd);
    result
}

/// Mounts a FUSE file system on /dev/fuse and reads the kernel's FUSE_INIT.
pub fn fuse_init() -> SysResult<String> {
    const FUSE_INIT: u32 = 26;
    // SAFETY: the path is a valid NUL-terminated string.
    let fd = check(
        unsafe { libc::open(c"/dev/fuse".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) }.into(),
        "open /dev/fuse",
    )? as libc::c_int;
    let target = "/run/fuse";
    let result = (|| {
        sys::mkdir_p(target)?;
        sys::mount(
            "vessel-probe",
            target,
            "fuse",
            libc::MS_NOSUID | libc::MS_NODEV,
            &format!("fd={fd},rootmode=40000,user_id=0,group_id=0"),
        )?;
        let mut buf = vec![0u8; 1 << 17];
        // SAFETY: buf is writable for buf.len() bytes.
        let n = check(
            unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) } as libc::c_long,
            "read /dev/fuse",
        )? as usize;
        let opcode = u32::from_ne_bytes([buf[4], buf[5], buf[6], buf[7]]);
        if n < 40 || opcode != FUSE_INIT {
            return Err(format!(
                "first request is opcode {opcode} ({n} bytes), not FUSE_INIT"
            ));
        }
        Ok("FUSE_INIT received".to_string())
    })();
    let _ = sys::umount(target);
    sys::close(fd);
    result
}

/// A pty pair from the devpts instance mounted above.
pub fn pty() -> SysResult<String> {
    // SAFETY: the path is a valid NUL-terminated string.
    let master = check(
        unsafe {
            libc::open(
                c"/dev/pts/ptmx".as_ptr(),
                libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
            )
        }
        .into(),
        "open /dev/pts/ptmx",
    )? as libc::c_int;
    let result = (|| {
        // SAFETY: master is an open ptmx fd.
        check(unsafe { libc::unlockpt(master) }.into(), "unlockpt")?;
        let mut n: libc::c_uint = 0;
        // SAFETY: TIOCGPTN writes one unsigned int to &mut n.
        let ret = unsafe { libc::ioctl(master, libc::TIOCGPTN, &mut n) };
        check(ret.into(), "TIOCGPTN")?;
        let ws = libc::winsize {
            ws_row: 40,
            ws_col: 120,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one winsize from &ws.
        let ret = unsafe { libc::ioctl(master, libc::TIOCSWINSZ, &ws) };
        check(ret.into(), "TIOCSWINSZ")?;
        Ok(format!("/dev/pts/{n}"))
    })();
    sys::close(master);
    result
}

/// A child installs a seccomp filter that fails getppid with EPERM.
pub fn seccomp_filter() -> SysResult<String> {
    // SAFETY: fork in a single-threaded process; the child only makes
    // syscalls and exits.
    let pid = check(unsafe { libc::fork() }.into(), "fork")?;
    if pid == 0 {
        let code = seccomp_child();
        // SAFETY: ends the child at once.
        unsafe { libc::_exit(code) };
    }
    sys::wait_child(pid)?;
    Ok("filter installed, EPERM seen".into())
}

fn seccomp_child() -> i32 {
    const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
    const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
    let insn = |code: u32, jt: u8, jf: u8, k: u32| libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    };
    // load nr; if nr == getppid return ERRNO(EPERM) else ALLOW
    let filter = [
        insn(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0, 0, 0),
        insn(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            0,
            1,
            libc::SYS_getppid as u32,
        ),
        insn(
            libc::BPF_RET | libc::BPF_K,
            0,
            0,
            SECCOMP_RET_ERRNO | libc::EPERM as u32,
        ),
        insn(libc::BPF_RET | libc::BPF_K, 0, 0, SECCOMP_RET_ALLOW),
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut _,
    };
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return 1;
    }
    // SAFETY: prog points to a valid filter that outlives the call.
    if unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &prog as *const libc::sock_fprog,
        )
    } != 0
    {
        return 2;
    }
    // SAFETY: raw getppid has no preconditions.
    let ret = unsafe { libc::syscall(libc::SYS_getppid) };
    let errno = std::io::Error::last_os_error().raw_os_error();
    if ret == -1 && errno == Some(libc::EPERM) {
        0
    } else {
        3
    }
}

/// The virtio-rng device: the kernel picked it, and /dev/hwrng yields bytes.
pub fn hwrng() -> SysResult<String> {
    let current = sys::read_to_string("/sys/class/misc/hw_random/rng_current")?;
    let current = current.trim();
    if !current.starts_with("virtio_rng") {
        return Err(format!("current hw_random source is {current:?}"));
    }
    let mut buf = [0u8; 16];
    use std::io::Read;
    std::fs::File::open("/dev/hwrng")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|e| format!("read /dev/hwrng: {e}"))?;
    if buf == [0u8; 16] {
        return Err("/dev/hwrng gave 16 zero bytes".into());
    }
    Ok(current.to_string())
}

//! A hand-rolled FUSE client for tests and fuzzing: it builds requests the
//! way a (possibly malicious) guest kernel would, posts them on a virtio-fs
//! request queue in test guest memory and decodes the replies.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use fuse_backend_rs::abi::fuse_abi::{
    AttrOut, CreateIn, EntryOut, GetattrIn, InHeader, InitIn, LinkIn, MkdirIn, MknodIn, Opcode,
    OpenIn, OpenOut, OutHeader, ReadIn, Rename2In, RenameIn, SetattrIn, SetattrValid, SetxattrIn,
    WriteIn,
};
use vm_memory::ByteValued;

use super::device::{self, Fs, FsWorker};
use super::server::{CacheMode, FsServer};
use super::test_utils::FsQueues;
use crate::devices::virtio::VirtioDevice;

/// The secret kept outside the share; it must never reach the guest.
pub const SECRET: &[u8] = b"VESSEL-SECRET-7f3a9c-outside-the-share";
/// FUSE_ROOT_ID.
pub const ROOT: u64 = 1;

/// True if `bytes` holds [`SECRET`].
pub fn contains_secret(bytes: &[u8]) -> bool {
    // Word at a time: memory is mostly zeros, and this runs per fuzz input.
    let first = u64::from_le_bytes(SECRET[..8].try_into().expect("8 bytes"));
    let last = bytes.len().saturating_sub(SECRET.len());
    let mut at = 0;
    while at <= last && bytes.len() >= SECRET.len() {
        let chunk = &bytes[at..(at + 8).min(bytes.len())];
        let word = chunk.iter().rev().fold(0u64, |w, &b| w << 8 | u64::from(b));
        if chunk.iter().all(|&b| b == 0) {
            at += 8;
            continue;
        }
        if word == first && bytes[at..].starts_with(SECRET) {
            return true;
        }
        at += 1;
    }
    false
}

/// Lays out `base/share` (a file, a directory, a FIFO, symlinks to the
/// secret both absolute and relative) and `base/outside/secret`.
pub fn populate(base: &Path) -> std::io::Result<()> {
    let share = base.join("share");
    let outside = base.join("outside");
    std::fs::create_dir_all(share.join("dir"))?;
    std::fs::create_dir_all(&outside)?;
    let secret = outside.join("secret");
    std::fs::write(&secret, SECRET)?;
    std::fs::write(share.join("hello.txt"), b"hello from the host\n")?;
    std::fs::write(share.join("dir/inner.txt"), b"inner\n")?;
    let _ = std::fs::remove_file(share.join("abs-link"));
    std::os::unix::fs::symlink(&secret, share.join("abs-link"))?;
    let _ = std::fs::remove_file(share.join("rel-link"));
    std::os::unix::fs::symlink("../outside/secret", share.join("rel-link"))?;
    let fifo = CString::new(share.join("fifo").as_os_str().as_encoded_bytes())
        .map_err(std::io::Error::other)?;
    // SAFETY: fifo is a valid NUL-terminated path.
    if unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) } != 0 {
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::AlreadyExists {
            return Err(err);
        }
    }
    Ok(())
}

/// A 16 MiB tmpfs that is mounted nowhere (fsopen + fsmount), reached as
/// `/proc/self/fd/N`; None if the process may not make one (not root).
pub fn scratch_tmpfs() -> Option<PathBuf> {
    const FSOPEN_CLOEXEC: libc::c_uint = 1;
    const FSCONFIG_SET_STRING: libc::c_uint = 1;
    const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
    const FSMOUNT_CLOEXEC: libc::c_uint = 1;
    // SAFETY: a constant file-system name; the result is checked.
    let fs = unsafe { libc::syscall(libc::SYS_fsopen, c"tmpfs".as_ptr(), FSOPEN_CLOEXEC) };
    if fs < 0 {
        return None;
    }
    // SAFETY: fsopen returned this fd; we own it.
    let fs = unsafe { OwnedFd::from_raw_fd(fs as i32) };
    let (key, value) = (c"size", c"16m");
    // SAFETY: fs is an fsopen fd; key and value are valid strings.
    let set = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_SET_STRING,
            key.as_ptr(),
            value.as_ptr(),
            0,
        )
    };
    // SAFETY: as above, with null key and value as FSCONFIG_CMD_CREATE wants.
    let created = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    };
    if set < 0 || created < 0 {
        return None;
    }
    // SAFETY: fs is a configured fsopen fd; the result is checked.
    let mnt = unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, 0) };
    if mnt < 0 {
        return None;
    }
    // Kept open for the life of the process: the path goes through it.
    let path = PathBuf::from(format!("/proc/self/fd/{mnt}"));
    Some(path)
}

/// A FUSE_INIT request (protocol 7.31, no flags) with id `unique`.
pub fn init_request(unique: u64) -> Vec<u8> {
    let init = InitIn {
        major: 7,
        minor: 31,
        max_readahead: 0,
        flags: 0,
    };
    request(Opcode::Init as u32, unique, 0, init.as_slice())
}

/// A whole request: header (uid and gid 0) then `body`.
pub fn request(opcode: u32, unique: u64, nodeid: u64, body: &[u8]) -> Vec<u8> {
    let header = InHeader {
        len: (std::mem::size_of::<InHeader>() + body.len()) as u32,
        opcode,
        unique,
        nodeid,
        ..Default::default()
    };
    let mut bytes = header.as_slice().to_vec();
    bytes.extend_from_slice(body);
    bytes
}

/// `T` from the front of `bytes` (zero-filled if short).
pub fn decode<T: ByteValued + Default>(bytes: &[u8]) -> T {
    let mut value = T::default();
    let out = value.as_mut_slice();
    let n = out.len().min(bytes.len());
    out[..n].copy_from_slice(&bytes[..n]);
    value
}

/// Concatenates structs and NUL-terminated names into a request body.
pub fn body(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// A name as FUSE sends it: the bytes and a NUL.
pub fn name(s: &[u8]) -> Vec<u8> {
    let mut v = s.to_vec();
    v.push(0);
    v
}

/// A decoded reply: `error` is the negated errno (0 on success).
#[derive(Debug, Clone)]
pub struct Reply {
    pub error: i32,
    pub unique: u64,
    pub body: Vec<u8>,
}

impl Reply {
    /// The errno of a failed reply, or the body of a successful one.
    pub fn result(self) -> Result<Vec<u8>, i32> {
        if self.error == 0 {
            Ok(self.body)
        } else {
            Err(-self.error)
        }
    }
}

/// A virtio-fs device in test guest memory with a FUSE client in front.
pub struct FuseClient {
    pub q: FsQueues,
    pub dev: Fs,
    pub worker: FsWorker,
    next_unique: u64,
}

impl FuseClient {
    /// A device serving `root`, activated, before FUSE_INIT.
    pub fn new(root: &Path) -> Self {
        Self::with_options(root, CacheMode::Auto, true)
    }

    pub fn with_options(root: &Path, cache: CacheMode, xattr: bool) -> Self {
        let server = FsServer::new(root, cache, xattr).expect("FUSE server");
        let (mut dev, worker) = device::new("vessel", server).expect("virtio-fs device");
        let q = FsQueues::new(64);
        dev.activate(q.activation()).expect("activate");
        Self {
            q,
            dev,
            worker,
            next_unique: 1,
        }
    }

    /// Like [`FuseClient::new`], then FUSE_INIT.
    pub fn initialised(root: &Path) -> Self {
        let mut client = Self::new(root);
        client.init();
        client
    }

    /// Posts raw request bytes with a `reply_len` reply buffer and serves
    /// the queue; returns what the device wrote (None: chain not returned).
    pub fn send_raw(&mut self, request: &[u8], reply_len: u32) -> Option<Vec<u8>> {
        let (head, reply) = self.q.post(request, reply_len);
        self.worker.process_queues();
        self.q.reply(head, reply)
    }

    /// Sends one request and decodes the reply.
    pub fn send(&mut self, opcode: Opcode, nodeid: u64, body: &[u8]) -> Reply {
        let unique = self.next_unique;
        self.next_unique += 1;
        let bytes = request(opcode as u32, unique, nodeid, body);
        let raw = self.send_raw(&bytes, 1 << 17).expect("the chain came back");
        assert!(raw.len() >= 16, "{opcode:?}: reply shorter than a header");
        let header: OutHeader = decode(&raw);
        assert_eq!(
            header.unique, unique,
            "{opcode:?}: reply to another request"
        );
        assert_eq!(header.len as usize, raw.len(), "{opcode:?}: header length");
        Reply {
            error: header.error,
            unique,
            body: raw[16..].to_vec(),
        }
    }

    pub fn init(&mut self) {
        let init = InitIn {
            major: 7,
            minor: 31,
            max_readahead: 0,
            flags: 0,
        };
        let reply = self.send(Opcode::Init, 0, init.as_slice());
        assert_eq!(reply.error, 0, "FUSE_INIT failed");
    }

    pub fn lookup(&mut self, parent: u64, n: &[u8]) -> Result<EntryOut, i32> {
        let r = self.send(Opcode::Lookup, parent, &name(n));
        r.result().map(|b| decode(&b))
    }

    pub fn getattr(&mut self, node: u64) -> Result<AttrOut, i32> {
        let r = self.send(Opcode::Getattr, node, GetattrIn::default().as_slice());
        r.result().map(|b| decode(&b))
    }

    pub fn open(&mut self, node: u64, flags: i32) -> Result<u64, i32> {
        let args = OpenIn {
            flags: flags as u32,
            fuse_flags: 0,
        };
        let r = self.send(Opcode::Open, node, args.as_slice());
        r.result().map(|b| decode::<OpenOut>(&b).fh)
    }

    pub fn opendir(&mut self, node: u64) -> Result<u64, i32> {
        let args = OpenIn {
            flags: libc::O_RDONLY as u32,
            fuse_flags: 0,
        };
        let r = self.send(Opcode::Opendir, node, args.as_slice());
        r.result().map(|b| decode::<OpenOut>(&b).fh)
    }

    pub fn read(&mut self, node: u64, fh: u64, size: u32) -> Result<Vec<u8>, i32> {
        let args = ReadIn {
            fh,
            offset: 0,
            size,
            ..Default::default()
        };
        self.send(Opcode::Read, node, args.as_slice()).result()
    }

    pub fn create(
        &mut self,
        parent: u64,
        n: &[u8],
        flags: i32,
        mode: u32,
    ) -> Result<(EntryOut, u64), i32> {
        let args = CreateIn {
            flags: flags as u32,
            mode,
            umask: 0,
            fuse_flags: 0,
        };
        let b = self
            .send(Opcode::Create, parent, &body(&[args.as_slice(), &name(n)]))
            .result()?;
        let entry: EntryOut = decode(&b);
        let open: OpenOut = decode(&b[std::mem::size_of::<EntryOut>()..]);
        Ok((entry, open.fh))
    }

    pub fn mkdir(&mut self, parent: u64, n: &[u8]) -> Result<EntryOut, i32> {
        self.mkdir_mode(parent, n, 0o755)
    }

    pub fn mkdir_mode(&mut self, parent: u64, n: &[u8], mode: u32) -> Result<EntryOut, i32> {
        let args = MkdirIn { mode, umask: 0 };
        let r = self.send(Opcode::Mkdir, parent, &body(&[args.as_slice(), &name(n)]));
        r.result().map(|b| decode(&b))
    }

    pub fn mknod(&mut self, parent: u64, n: &[u8], mode: u32, rdev: u32) -> Result<EntryOut, i32> {
        let args = MknodIn {
            mode,
            rdev,
            umask: 0,
            padding: 0,
        };
        let r = self.send(Opcode::Mknod, parent, &body(&[args.as_slice(), &name(n)]));
        r.result().map(|b| decode(&b))
    }

    /// SETATTR of the mode alone (chmod).
    pub fn chmod(&mut self, node: u64, mode: u32) -> Result<(), i32> {
        let args = SetattrIn {
            valid: SetattrValid::MODE.bits(),
            mode,
            ..Default::default()
        };
        self.send(Opcode::Setattr, node, args.as_slice())
            .result()
            .map(drop)
    }

    pub fn setxattr(&mut self, node: u64, n: &[u8], value: &[u8]) -> Result<(), i32> {
        let args = SetxattrIn {
            size: value.len() as u32,
            flags: 0,
        };
        self.send(
            Opcode::Setxattr,
            node,
            &body(&[args.as_slice(), &name(n), value]),
        )
        .result()
        .map(drop)
    }

    pub fn write(&mut self, node: u64, fh: u64, offset: u64, data: &[u8]) -> Result<(), i32> {
        let args = WriteIn {
            fh,
            offset,
            size: data.len() as u32,
            ..Default::default()
        };
        self.send(Opcode::Write, node, &body(&[args.as_slice(), data]))
            .result()
            .map(drop)
    }

    pub fn link(&mut self, old: u64, new_parent: u64, n: &[u8]) -> Result<EntryOut, i32> {
        let args = LinkIn { oldnodeid: old };
        let r = self.send(
            Opcode::Link,
            new_parent,
            &body(&[args.as_slice(), &name(n)]),
        );
        r.result().map(|b| decode(&b))
    }

    pub fn symlink(&mut self, parent: u64, n: &[u8], target: &[u8]) -> Result<EntryOut, i32> {
        let r = self.send(Opcode::Symlink, parent, &body(&[&name(n), &name(target)]));
        r.result().map(|b| decode(&b))
    }

    pub fn readlink(&mut self, node: u64) -> Result<Vec<u8>, i32> {
        self.send(Opcode::Readlink, node, &[]).result()
    }

    pub fn rename(&mut self, dir: u64, old: &[u8], new_dir: u64, new: &[u8]) -> Result<(), i32> {
        let args = RenameIn { newdir: new_dir };
        let b = body(&[args.as_slice(), &name(old), &name(new)]);
        self.send(Opcode::Rename, dir, &b).result().map(|_| ())
    }

    pub fn rename2(
        &mut self,
        dir: u64,
        old: &[u8],
        new_dir: u64,
        new: &[u8],
        flags: u32,
    ) -> Result<(), i32> {
        let args = Rename2In {
            newdir: new_dir,
            flags,
            padding: 0,
        };
        let b = body(&[args.as_slice(), &name(old), &name(new)]);
        self.send(Opcode::Rename2, dir, &b).result().map(|_| ())
    }

    pub fn unlink(&mut self, parent: u64, n: &[u8]) -> Result<(), i32> {
        self.send(Opcode::Unlink, parent, &name(n))
            .result()
            .map(|_| ())
    }

    /// Opens and reads a whole (small) file by node id.
    pub fn cat(&mut self, node: u64) -> Result<Vec<u8>, i32> {
        let fh = self.open(node, libc::O_RDONLY)?;
        self.read(node, fh, 4096)
    }
}

/// Runs `f` on a thread of its own in a private mount namespace (whose
/// mounts vanish when the thread ends), with `/` made a recursive slave.
/// None, after saying so, if the process may not (not root).
pub fn in_private_mount_ns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    std::thread::spawn(move || {
        if let Err(err) = super::share::enter_private_mount_namespace() {
            eprintln!(
                "skipped: no private mount namespace ({err}: {:?})",
                std::error::Error::source(&err)
            );
            return None;
        }
        Some(f())
    })
    .join()
    .expect("the namespace thread panicked")
}

//! One descriptor chain in, one FUSE reply out: the bridge between the
//! virtqueue and fuse-backend-rs's [`Server`] over a [`PassthroughFs`].
//!
//! The passthrough file system is set up for an untrusted client:
//! `do_import` (fuse-backend-rs then checks every name the guest sends for
//! `/`, `.` and `..`, and maps `..` at the root to the root), no writeback
//! cache, no file handles (`open_by_handle_at` is never used: inodes are
//! only the `O_PATH` fds it opened itself), inode identity including the
//! mount id (so a read-only hot mount of a directory also shared read-write
//! is a different inode), `killpriv_v2` (writes by the guest drop setuid
//! bits the way a local file system does) and no DAX.

use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use fuse_backend_rs::abi::fuse_abi::{InHeader, Opcode, OutHeader};
use fuse_backend_rs::api::server::Server;
use fuse_backend_rs::passthrough::{CachePolicy, Config, PassthroughFs};
use fuse_backend_rs::transport::{Reader, VirtioFsWriter, Writer};
use tracing::{debug, warn};
use virtio_queue::DescriptorChain;
use vm_memory::GuestMemoryMmap;

use super::counters::FsCounters;
use super::policy::{self, Verdict};
use super::FsError;

/// How long the guest may cache what it learns, as virtiofsd's `--cache`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CacheMode {
    /// Close-to-open consistency; names and attributes valid for 1 s.
    #[default]
    Auto,
    /// The guest keeps everything (data included) for a day: only for a
    /// directory nobody else changes.
    Always,
    /// No caching: every access goes to the host.
    Never,
}

impl CacheMode {
    /// Parses `auto`, `always` or `never`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "auto" => Some(Self::Auto),
            "always" => Some(Self::Always),
            "never" => Some(Self::Never),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Always => "always",
            Self::Never => "never",
        }
    }

    /// The entry and attribute timeout.
    pub fn timeout(self) -> Duration {
        match self {
            Self::Never => Duration::ZERO,
            Self::Auto => Duration::from_secs(1),
            Self::Always => Duration::from_secs(86_400),
        }
    }

    fn policy(self) -> CachePolicy {
        match self {
            Self::Never => CachePolicy::Never,
            Self::Auto => CachePolicy::Auto,
            Self::Always => CachePolicy::Always,
        }
    }
}

/// The FUSE server of one virtio-fs device.
pub struct FsServer {
    server: Server<Arc<PassthroughFs>>,
    fs: Arc<PassthroughFs>,
}

impl FsServer {
    /// Serves the directory `root` (see [`super::SharedDir::fs_root`]).
    /// Nothing is opened until the guest's FUSE_INIT.
    pub fn new(root: &Path, cache: CacheMode, xattr: bool) -> Result<Self, FsError> {
        let create_error = |e| FsError::CreatePassthrough(root.to_path_buf(), e);
        let root_dir = root
            .to_str()
            .ok_or_else(|| create_error(std::io::Error::from_raw_os_error(libc::EINVAL)))?;
        let config = Config {
            root_dir: root_dir.to_string(),
            do_import: true,
            writeback: false,
            xattr,
            killpriv_v2: true,
            inode_file_handles: false,
            enable_mntid: true,
            no_open: false,
            no_opendir: false,
            dax_file_size: None,
            cache_policy: cache.policy(),
            entry_timeout: cache.timeout(),
            attr_timeout: cache.timeout(),
            ..Config::default()
        };
        let fs = Arc::new(PassthroughFs::<()>::new(config).map_err(create_error)?);
        Ok(Self {
            server: Server::new(Arc::clone(&fs)),
            fs,
        })
    }

    /// Serves the request in `chain` and writes the reply into its
    /// device-writable buffers. Returns the used length for the chain.
    pub fn handle_chain<M>(
        &self,
        mem: &GuestMemoryMmap,
        chain: DescriptorChain<M>,
        counters: &mut FsCounters,
    ) -> u32
    where
        M: Deref<Target = GuestMemoryMmap> + Clone,
    {
        let head = chain.head_index();
        let reader = match Reader::from_descriptor_chain(mem, chain.clone()) {
            Ok(reader) => reader,
            Err(err) => return bad_chain(counters, head, &err),
        };
        let writer = match VirtioFsWriter::new(mem, chain) {
            Ok(writer) => writer,
            Err(err) => return bad_chain(counters, head, &err),
        };
        let mut body = reader.clone();
        let header: InHeader = match body.read_obj() {
            Ok(header) => header,
            Err(err) => return bad_chain(counters, head, &err),
        };
        let opcode = header.opcode;
        if let Verdict::Refuse(errno) = policy::check(&header, &mut body, &self.fs) {
            counters.refused += 1;
            warn!(
                opcode,
                nodeid = header.nodeid,
                errno,
                "virtio-fs: refused a request"
            );
            return reply_error(writer, head, header.unique, errno, counters);
        }
        // A second view of the reply buffers, for our own error reply.
        let spare = writer.clone();
        match self
            .server
            .handle_message(reader, Writer::VirtioFs(writer), None, None)
        {
            Ok(len) => {
                counters.requests += 1;
                u32::try_from(len).unwrap_or(0)
            }
            Err(err) => {
                counters.failed_requests += 1;
                debug!(opcode, %err, "virtio-fs: a request fuse-backend-rs could not serve");
                if expects_reply(opcode) {
                    reply_error(spare, head, header.unique, libc::EINVAL, counters)
                } else {
                    0
                }
            }
        }
    }

    /// The passthrough file system, for the policy and tests.
    pub fn fs(&self) -> &PassthroughFs {
        &self.fs
    }
}

fn bad_chain(counters: &mut FsCounters, head: u16, err: &dyn std::fmt::Display) -> u32 {
    counters.bad_chains += 1;
    warn!(head, %err, "virtio-fs: return a malformed chain unused");
    0
}

/// FORGET, BATCH_FORGET and INTERRUPT get no reply (FUSE protocol).
fn expects_reply(opcode: u32) -> bool {
    ![
        Opcode::Forget as u32,
        Opcode::BatchForget as u32,
        Opcode::Interrupt as u32,
    ]
    .contains(&opcode)
}

/// Writes a bare error reply; returns its length, or 0 if it does not fit.
fn reply_error(
    mut writer: VirtioFsWriter<'_>,
    head: u16,
    unique: u64,
    errno: i32,
    counters: &mut FsCounters,
) -> u32 {
    let header = OutHeader {
        len: std::mem::size_of::<OutHeader>() as u32,
        error: -errno,
        unique,
    };
    match writer.write_obj(header) {
        Ok(()) => header.len,
        Err(err) => bad_chain(counters, head, &err),
    }
}

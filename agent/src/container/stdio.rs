//! The agent's side of a container process's standard streams.
//!
//! Without a terminal, stdin, stdout and stderr are three pipes. A read RPC
//! blocks on its pipe until data or EOF, so a slow reader only makes the
//! process block on a full pipe: nothing is dropped. With a terminal, one
//! pty carries both directions; its follower end goes to the process.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::Mutex;

use super::spawn::pipe;
use super::spec::ProcessIo;

/// Bytes one read returns when the request names no size.
pub const DEFAULT_READ: usize = 64 * 1024;
/// The most one read returns (ttrpc messages stay well under their 4 MiB).
pub const MAX_READ: usize = 1024 * 1024;

/// Which output stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// fd 1 (or the terminal).
    Stdout,
    /// fd 2 (empty with a terminal).
    Stderr,
}

/// One output stream: the read end until EOF.
#[derive(Debug)]
struct Stream(Option<File>);

impl Stream {
    fn read(&mut self, max: usize) -> io::Result<Vec<u8>> {
        let Some(file) = self.0.as_mut() else {
            return Ok(Vec::new());
        };
        let mut buf = vec![0u8; max];
        loop {
            match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    buf.truncate(n);
                    return Ok(buf);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // A pty whose follower is closed everywhere: EOF.
                Err(e) if e.raw_os_error() == Some(libc::EIO) => break,
                Err(e) => return Err(e),
            }
        }
        self.0 = None;
        Ok(Vec::new())
    }
}

/// A process's streams, as the agent holds them.
#[derive(Debug)]
pub struct Stdio {
    stdin: Mutex<Option<File>>,
    stdout: Mutex<Stream>,
    stderr: Mutex<Stream>,
    /// The pty's leader, for resizes (also `stdin` and `stdout`).
    tty: Option<File>,
}

/// The process's ends, given to it at spawn and closed in the agent after.
#[derive(Debug)]
pub struct ChildEnds {
    /// How the plan refers to them.
    pub io: ProcessIo,
    _files: Vec<File>,
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

impl Stdio {
    /// Three pipes.
    pub fn pipes() -> io::Result<(Stdio, ChildEnds)> {
        let (stdin_r, stdin_w) = pipe()?;
        let (stdout_r, stdout_w) = pipe()?;
        let (stderr_r, stderr_w) = pipe()?;
        let io = ProcessIo::Pipes {
            stdin: stdin_r.as_raw_fd(),
            stdout: stdout_w.as_raw_fd(),
            stderr: stderr_w.as_raw_fd(),
        };
        let stdio = Stdio {
            stdin: Mutex::new(Some(stdin_w)),
            stdout: Mutex::new(Stream(Some(stdout_r))),
            stderr: Mutex::new(Stream(Some(stderr_r))),
            tty: None,
        };
        let ends = ChildEnds {
            io,
            _files: vec![stdin_r, stdout_w, stderr_w],
        };
        Ok((stdio, ends))
    }

    /// A new pty from the agent's devpts.
    pub fn tty() -> io::Result<(Stdio, ChildEnds)> {
        let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
        // SAFETY: the path is NUL-terminated.
        let leader = check(unsafe { libc::open(c"/dev/ptmx".as_ptr(), flags) })?;
        // SAFETY: `leader` was just opened and is owned by nobody else.
        let leader = unsafe { File::from_raw_fd(leader) };
        let unlock: libc::c_int = 0;
        // SAFETY: TIOCSPTLCK reads an int from the valid pointer.
        check(unsafe { libc::ioctl(leader.as_raw_fd(), libc::TIOCSPTLCK, &unlock) })?;
        let mut number: libc::c_uint = 0;
        // SAFETY: TIOCGPTN writes an unsigned int to the valid pointer.
        check(unsafe { libc::ioctl(leader.as_raw_fd(), libc::TIOCGPTN, &mut number) })?;
        // SAFETY: TIOCGPTPEER opens the follower with these open flags.
        let follower = check(unsafe { libc::ioctl(leader.as_raw_fd(), libc::TIOCGPTPEER, flags) })?;
        // SAFETY: `follower` was just opened and is owned by nobody else.
        let follower = unsafe { File::from_raw_fd(follower) };
        let io = ProcessIo::Tty {
            follower: follower.as_raw_fd(),
            path: format!("/dev/pts/{number}"),
        };
        let stdio = Stdio {
            stdin: Mutex::new(Some(leader.try_clone()?)),
            stdout: Mutex::new(Stream(Some(leader.try_clone()?))),
            stderr: Mutex::new(Stream(None)),
            tty: Some(leader),
        };
        Ok((
            stdio,
            ChildEnds {
                io,
                _files: vec![follower],
            },
        ))
    }

    /// Reads up to `max` bytes (0: the default), blocking until there are
    /// some; empty at EOF.
    pub fn read(&self, which: Output, max: usize) -> io::Result<Vec<u8>> {
        let max = if max == 0 {
            DEFAULT_READ
        } else {
            max.min(MAX_READ)
        };
        let stream = match which {
            Output::Stdout => &self.stdout,
            Output::Stderr => &self.stderr,
        };
        stream.lock().unwrap_or_else(|e| e.into_inner()).read(max)
    }

    /// Writes all of `data` to stdin (blocking while the pipe is full).
    pub fn write_stdin(&self, data: &[u8]) -> io::Result<usize> {
        let mut stdin = self.stdin.lock().unwrap_or_else(|e| e.into_inner());
        let file = stdin.as_mut().ok_or(io::ErrorKind::BrokenPipe)?;
        file.write_all(data)?;
        Ok(data.len())
    }

    /// Closes stdin: the process reads EOF. With a terminal, sends the EOF
    /// character (a pty cannot be half-closed).
    pub fn close_stdin(&self) -> io::Result<()> {
        let mut stdin = self.stdin.lock().unwrap_or_else(|e| e.into_inner());
        if let (Some(file), Some(_)) = (stdin.as_mut(), &self.tty) {
            file.write_all(&[4])?;
        }
        *stdin = None;
        Ok(())
    }

    /// Sets the terminal's size.
    pub fn resize(&self, rows: u16, columns: u16) -> io::Result<()> {
        let tty = self.tty.as_ref().ok_or(io::ErrorKind::Unsupported)?;
        let size = libc::winsize {
            ws_row: rows,
            ws_col: columns,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads a winsize from the valid pointer.
        check(unsafe { libc::ioctl(tty.as_raw_fd(), libc::TIOCSWINSZ, &size) })?;
        Ok(())
    }

    /// Whether the process has a terminal.
    pub fn is_tty(&self) -> bool {
        self.tty.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The child ends behave as the process would use them.
    fn child_files(ends: &ChildEnds) -> (File, File, File) {
        let ProcessIo::Pipes {
            stdin,
            stdout,
            stderr,
        } = ends.io
        else {
            panic!("pipes expected")
        };
        // SAFETY: duplicates of fds `ends` keeps open.
        let dup = |fd| unsafe { File::from_raw_fd(libc::dup(fd)) };
        (dup(stdin), dup(stdout), dup(stderr))
    }

    #[test]
    fn pipes_carry_each_stream_and_end_in_eof() {
        let (stdio, ends) = Stdio::pipes().unwrap();
        let (mut stdin, mut stdout, mut stderr) = child_files(&ends);
        drop(ends);
        stdout.write_all(b"out").unwrap();
        stderr.write_all(b"err").unwrap();
        assert_eq!(stdio.read(Output::Stdout, 0).unwrap(), b"out");
        assert_eq!(stdio.read(Output::Stderr, 2).unwrap(), b"er");
        assert_eq!(stdio.write_stdin(b"in").unwrap(), 2);
        stdio.close_stdin().unwrap();
        let mut got = Vec::new();
        stdin.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"in");
        assert!(stdio.write_stdin(b"x").is_err(), "stdin is closed");
        drop(stdout);
        assert!(stdio.read(Output::Stdout, 0).unwrap().is_empty(), "EOF");
        assert!(
            stdio.read(Output::Stdout, 0).unwrap().is_empty(),
            "stays EOF"
        );
        assert!(stdio.resize(1, 1).is_err(), "no terminal");
    }

    #[test]
    fn a_slow_reader_loses_nothing() {
        let (stdio, ends) = Stdio::pipes().unwrap();
        let (_, mut stdout, _) = child_files(&ends);
        drop(ends);
        // More than a pipe holds: the writer blocks until the reader drains.
        let writer = std::thread::spawn(move || {
            for i in 0..300u32 {
                stdout.write_all(&[(i % 251) as u8; 1024]).unwrap();
            }
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        let mut got = Vec::new();
        loop {
            let chunk = stdio.read(Output::Stdout, 4096).unwrap();
            if chunk.is_empty() {
                break;
            }
            got.extend(chunk);
        }
        writer.join().unwrap();
        assert_eq!(got.len(), 300 * 1024);
        assert!(got
            .chunks(1024)
            .enumerate()
            .all(|(i, c)| c.iter().all(|b| *b == (i % 251) as u8)));
    }

    #[test]
    fn tty_resizes_and_reads() {
        let Ok((stdio, ends)) = Stdio::tty() else {
            eprintln!("no /dev/ptmx here: skipped");
            return;
        };
        let ProcessIo::Tty { follower, ref path } = ends.io else {
            panic!("tty expected")
        };
        assert!(path.starts_with("/dev/pts/"));
        stdio.resize(33, 101).unwrap();
        let mut size: libc::winsize = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes a winsize to the valid pointer.
        let ret = unsafe { libc::ioctl(follower, libc::TIOCGWINSZ, &mut size) };
        assert_eq!(ret, 0);
        assert_eq!((size.ws_row, size.ws_col), (33, 101));
        // SAFETY: a duplicate of the follower, which `ends` keeps open.
        let mut f = unsafe { File::from_raw_fd(libc::dup(follower)) };
        f.write_all(b"hi").unwrap();
        drop(f);
        drop(ends);
        assert_eq!(stdio.read(Output::Stdout, 0).unwrap(), b"hi");
        assert!(
            stdio.read(Output::Stdout, 0).unwrap().is_empty(),
            "EIO is EOF"
        );
        assert!(stdio.read(Output::Stderr, 0).unwrap().is_empty());
        assert!(stdio.is_tty());
    }
}

//! A recording [`Sys`] for unit tests.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::path::Path;
use std::sync::Mutex;

use crate::sys::{Mount, Sys, WaitStatus};

/// A call the agent made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Mount(Mount),
    Mkdir(String),
    SwitchRoot(String),
    ThreadStack(usize),
    LockMemory,
    SetTime(i64, u32),
    SetHostname(String),
    AddEntropy(Vec<u8>),
    Sync,
    Reboot,
}

/// Records calls; scripted failures and children to reap.
#[derive(Default)]
pub struct FakeSys {
    calls: Mutex<Vec<Call>>,
    mount_failures: Mutex<HashMap<&'static str, i32>>,
    children: Mutex<VecDeque<(i32, WaitStatus)>>,
    cmdline: Mutex<String>,
}

impl FakeSys {
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    pub fn fail_mount_once(&self, target: &'static str, errno: i32) {
        self.mount_failures.lock().unwrap().insert(target, errno);
    }

    pub fn add_exited_child(&self, pid: i32, status: WaitStatus) {
        self.children.lock().unwrap().push_back((pid, status));
    }

    pub fn set_cmdline(&self, cmdline: &str) {
        *self.cmdline.lock().unwrap() = cmdline.to_owned();
    }

    fn record(&self, call: Call) {
        self.calls.lock().unwrap().push(call);
    }
}

impl Sys for FakeSys {
    fn mount(&self, m: &Mount) -> io::Result<()> {
        self.record(Call::Mount(*m));
        match self.mount_failures.lock().unwrap().remove(m.target) {
            Some(errno) => Err(io::Error::from_raw_os_error(errno)),
            None => Ok(()),
        }
    }

    fn mkdir(&self, path: &Path) -> io::Result<()> {
        self.record(Call::Mkdir(path.display().to_string()));
        Ok(())
    }

    fn set_thread_stack(&self, bytes: usize) {
        self.record(Call::ThreadStack(bytes));
    }

    fn lock_memory(&self) -> io::Result<()> {
        self.record(Call::LockMemory);
        Ok(())
    }

    fn switch_root(&self, new_root: &str) -> io::Result<()> {
        self.record(Call::SwitchRoot(new_root.into()));
        Ok(())
    }

    fn read_to_string(&self, _path: &Path) -> io::Result<String> {
        Ok(self.cmdline.lock().unwrap().clone())
    }

    fn ensure_console(&self) -> io::Result<()> {
        Ok(())
    }

    fn set_time(&self, seconds: i64, nanos: u32) -> io::Result<()> {
        self.record(Call::SetTime(seconds, nanos));
        Ok(())
    }

    fn set_hostname(&self, name: &str) -> io::Result<()> {
        self.record(Call::SetHostname(name.to_owned()));
        Ok(())
    }

    fn add_entropy(&self, data: &[u8]) -> io::Result<()> {
        self.record(Call::AddEntropy(data.to_vec()));
        Ok(())
    }

    fn kernel_release(&self) -> io::Result<String> {
        Ok("6.1.0-vessel".into())
    }

    fn sync(&self) {
        self.record(Call::Sync);
    }

    fn reboot(&self) -> io::Error {
        self.record(Call::Reboot);
        io::Error::other("fake reboot")
    }

    fn wait_any_nohang(&self) -> io::Result<Option<(i32, WaitStatus)>> {
        Ok(self.children.lock().unwrap().pop_front())
    }
}

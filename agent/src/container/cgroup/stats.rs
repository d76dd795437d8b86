//! A cgroup's state and statistics, and the parsers of cgroup v2's file
//! formats. Bad content is an error, never a panic.

use std::io;
use std::path::Path;

use super::{Cgroup, CgroupError, CgroupFs, Controller};

/// CPU time, from `cpu.stat` (microseconds).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuStats {
    pub usage_usec: u64,
    pub user_usec: u64,
    pub system_usec: u64,
    /// Periods in which the quota ran out (0 without the cpu controller).
    pub nr_throttled: u64,
    pub throttled_usec: u64,
}

/// Memory use, from `memory.*` (bytes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryStats {
    pub current: u64,
    /// `memory.max`; `None` = `max` (no limit).
    pub limit: Option<u64>,
    /// `memory.peak`: the highest `current` seen.
    pub peak: u64,
    /// `oom_kill` in `memory.events`.
    pub oom_kills: u64,
}

/// Tasks, from `pids.*`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PidsStats {
    pub current: u64,
    /// `pids.max`; `None` = `max` (no limit).
    pub limit: Option<u64>,
}

/// Block I/O, from `io.stat`, summed over devices.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IoStats {
    pub rbytes: u64,
    pub wbytes: u64,
    pub rios: u64,
    pub wios: u64,
}

/// A cgroup's statistics. Those of a controller the kernel lacks stay 0.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupStats {
    pub cpu: CpuStats,
    pub memory: MemoryStats,
    pub pids: PidsStats,
    pub io: IoStats,
}

impl Cgroup {
    /// The pids in the cgroup (`cgroup.procs`).
    pub fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        let (path, text) = self.read("cgroup.procs")?;
        parse_pids(&path, &text)
    }

    /// Whether any process lives in the cgroup (`populated` in
    /// `cgroup.events`).
    #[cfg(test)]
    pub fn is_populated(&self) -> Result<bool, CgroupError> {
        let (path, text) = self.read("cgroup.events")?;
        let [populated] = parse_flat_keyed(&path, &text, ["populated"])?;
        match populated {
            Some(0) => Ok(false),
            Some(1) => Ok(true),
            Some(n) => Err(CgroupError::ParseFile {
                path,
                line: format!("populated {n}"),
            }),
            None => Err(CgroupError::MissingKey {
                path,
                key: "populated",
            }),
        }
    }

    /// The OOM kills so far (`oom_kill` in `memory.events`).
    pub fn oom_kills(&self) -> Result<u64, CgroupError> {
        read_oom_kills(&*self.shared.fs, &self.memory_events_path())
    }

    /// The cgroup's statistics: one read per file, files of missing
    /// controllers skipped.
    pub fn stats(&self) -> Result<CgroupStats, CgroupError> {
        let mut stats = CgroupStats::default();
        // cpu.stat is a core file: usage is there even without the cpu
        // controller, the throttling counters only with it.
        let (path, text) = self.read("cpu.stat")?;
        let [usage, user, system, nr_throttled, throttled] = parse_flat_keyed(
            &path,
            &text,
            [
                "usage_usec",
                "user_usec",
                "system_usec",
                "nr_throttled",
                "throttled_usec",
            ],
        )?;
        stats.cpu = CpuStats {
            usage_usec: usage.unwrap_or(0),
            user_usec: user.unwrap_or(0),
            system_usec: system.unwrap_or(0),
            nr_throttled: nr_throttled.unwrap_or(0),
            throttled_usec: throttled.unwrap_or(0),
        };
        if self.controllers.contains(Controller::Memory) {
            let (path, text) = self.read("memory.current")?;
            stats.memory.current = parse_count(&path, &text)?;
            let (path, text) = self.read("memory.max")?;
            stats.memory.limit = parse_limit(&path, &text)?;
            // memory.peak came with Linux 5.19.
            let peak = self.path.join("memory.peak");
            stats.memory.peak = match self.shared.fs.read(&peak) {
                Ok(text) => parse_count(&peak, &text)?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
                Err(source) => return Err(CgroupError::ReadFile { path: peak, source }),
            };
            stats.memory.oom_kills = self.oom_kills()?;
        }
        if self.controllers.contains(Controller::Pids) {
            let (path, text) = self.read("pids.current")?;
            stats.pids.current = parse_count(&path, &text)?;
            let (path, text) = self.read("pids.max")?;
            stats.pids.limit = parse_limit(&path, &text)?;
        }
        if self.controllers.contains(Controller::Io) {
            let (path, text) = self.read("io.stat")?;
            stats.io = parse_io_stat(&path, &text)?;
        }
        Ok(stats)
    }
}

fn parse_error(path: &Path, line: &str) -> CgroupError {
    CgroupError::ParseFile {
        path: path.to_owned(),
        line: line.to_owned(),
    }
}

/// The values of `keys` in a flat-keyed file (`key value` lines, as
/// `cpu.stat`, `memory.stat`, `memory.events`); `None` for a key not there.
/// Every line must have that shape; only the values of `keys` are parsed.
pub(super) fn parse_flat_keyed<const N: usize>(
    path: &Path,
    text: &str,
    keys: [&str; N],
) -> Result<[Option<u64>; N], CgroupError> {
    let mut values = [None; N];
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut fields = line.split_ascii_whitespace();
        let (Some(key), Some(value), None) = (fields.next(), fields.next(), fields.next()) else {
            return Err(parse_error(path, line));
        };
        if let Some(i) = keys.iter().position(|k| *k == key) {
            values[i] = Some(value.parse().map_err(|_| parse_error(path, line))?);
        }
    }
    Ok(values)
}

/// The `oom_kill` count in a `memory.events` file's `text` (read from
/// `path`): the one parser of that file, for [`Cgroup`] and the OOM watcher.
pub fn parse_oom_kill(path: &Path, text: &str) -> Result<u64, CgroupError> {
    let [kills] = parse_flat_keyed(path, text, ["oom_kill"])?;
    kills.ok_or_else(|| CgroupError::MissingKey {
        path: path.to_owned(),
        key: "oom_kill",
    })
}

/// Reads the `oom_kill` count of the `memory.events` file at `path`.
pub fn read_oom_kills(fs: &dyn CgroupFs, path: &Path) -> Result<u64, CgroupError> {
    let text = fs.read(path).map_err(|source| CgroupError::ReadFile {
        path: path.to_owned(),
        source,
    })?;
    parse_oom_kill(path, &text)
}

/// A single-value file holding a number (`memory.current`).
pub(super) fn parse_count(path: &Path, text: &str) -> Result<u64, CgroupError> {
    let value = text.trim();
    value.parse().map_err(|_| parse_error(path, value))
}

/// A single-value limit file (`memory.max`): a number, or `max` (`None`).
pub(super) fn parse_limit(path: &Path, text: &str) -> Result<Option<u64>, CgroupError> {
    match text.trim() {
        "max" => Ok(None),
        _ => parse_count(path, text).map(Some),
    }
}

/// `cgroup.procs`: one pid a line.
pub(super) fn parse_pids(path: &Path, text: &str) -> Result<Vec<i32>, CgroupError> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            line.trim()
                .parse::<i32>()
                .ok()
                .filter(|pid| *pid > 0)
                .ok_or_else(|| parse_error(path, line))
        })
        .collect()
}

/// `io.stat`: `MAJ:MIN key=value ...` lines; sums `rbytes`, `wbytes`, `rios`
/// and `wios` over devices, ignoring other keys (`dbytes`, iocost's
/// `cost.*`...).
pub(super) fn parse_io_stat(path: &Path, text: &str) -> Result<IoStats, CgroupError> {
    let mut io = IoStats::default();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut fields = line.split_ascii_whitespace();
        let device = fields.next().unwrap_or_default();
        let is_device = device.split_once(':').is_some_and(|(major, minor)| {
            major.parse::<u32>().is_ok() && minor.parse::<u32>().is_ok()
        });
        if !is_device {
            return Err(parse_error(path, line));
        }
        for field in fields {
            let (key, value) = field
                .split_once('=')
                .ok_or_else(|| parse_error(path, line))?;
            let total = match key {
                "rbytes" => &mut io.rbytes,
                "wbytes" => &mut io.wbytes,
                "rios" => &mut io.rios,
                "wios" => &mut io.wios,
                _ => continue,
            };
            let value: u64 = value.parse().map_err(|_| parse_error(path, line))?;
            *total = total.saturating_add(value);
        }
    }
    Ok(io)
}

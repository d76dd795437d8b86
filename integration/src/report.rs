//! Reading what `vessel-test-init` printed on the console.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};

pub const START_MARKER: &str = "VESSEL-TEST-INIT-START";
pub const DONE_MARKER: &str = "VESSEL-TEST-INIT-DONE";
const REPORT_PREFIX: &str = "VESSEL-REPORT ";

/// The test init's `key=value` report.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub values: BTreeMap<String, String>,
}

impl Report {
    /// Parses a console transcript; it must hold both markers, in order.
    pub fn parse(console: &str) -> Result<Self> {
        let start = console
            .find(START_MARKER)
            .context("the test init's start marker is missing")?;
        let done = console[start..].find(DONE_MARKER).map(|i| i + start);
        let Some(done) = done else {
            bail!("the test init did not finish (no {DONE_MARKER})");
        };
        let mut values = BTreeMap::new();
        for line in console[start..done].lines() {
            if let Some((key, value)) = line
                .trim_end()
                .strip_prefix(REPORT_PREFIX)
                .and_then(|kv| kv.split_once('='))
            {
                values.insert(key.to_string(), value.to_string());
            }
        }
        Ok(Self { values })
    }

    /// The value of `key`, which must not be an error.
    pub fn ok(&self, key: &str) -> Result<&str> {
        match self.values.get(key) {
            None => bail!("the report has no {key:?}"),
            Some(v) if v.starts_with("error:") => bail!("{key}: {v}"),
            Some(v) => Ok(v),
        }
    }

    /// Checks what every boot test expects: no probe failed, the guest saw
    /// `vcpus` CPUs and about `memory_mib` of memory, a 6.12 kernel, the file
    /// systems and cgroup controllers Vessel needs, and the virtio-rng device.
    pub fn check_guest(&self, vcpus: u8, memory_mib: u32) -> Result<()> {
        let errors = self.errors();
        if !errors.is_empty() {
            bail!("probes failed: {errors:#?}");
        }
        let cpus = self.ok("cpus")?;
        if cpus != vcpus.to_string() {
            bail!("the guest sees {cpus} CPUs, not {vcpus}");
        }
        // The kernel keeps its image and page structures out of MemTotal.
        let mem_kib: u64 = self
            .ok("mem_kib")?
            .parse()
            .context("mem_kib is not a number")?;
        let max = u64::from(memory_mib) * 1024;
        if !(max * 8 / 10..max).contains(&mem_kib) {
            bail!("the guest's MemTotal is {mem_kib} kB for {memory_mib} MiB");
        }
        if !self.ok("kernel")?.starts_with("6.12.") {
            bail!("unexpected guest kernel {}", self.ok("kernel")?);
        }
        for fs in ["overlay", "virtiofs", "cgroup2", "fuse", "erofs", "ext4"] {
            if !self.ok("filesystems")?.split(',').any(|f| f == fs) {
                bail!("{fs} is missing from the guest");
            }
        }
        for controller in ["cpu", "memory", "pids", "io", "cpuset"] {
            if !self.ok("cgroup2")?.split(' ').any(|c| c == controller) {
                bail!("cgroup2 lacks {controller}");
            }
        }
        for (key, expect) in [
            ("vsock", "listening on port 1024"),
            ("fuse", "FUSE_INIT received"),
            ("namespaces", "pid,mnt,uts,ipc,net+pivot_root"),
        ] {
            if self.ok(key)? != expect {
                bail!("{key}: {}", self.ok(key)?);
            }
        }
        if !self.ok("hwrng")?.starts_with("virtio_rng") {
            bail!("hwrng: {}", self.ok("hwrng")?);
        }
        Ok(())
    }

    /// Every probe that reported an error, as `key: error`.
    pub fn errors(&self) -> Vec<String> {
        self.values
            .iter()
            .filter(|(_, v)| v.starts_with("error:"))
            .map(|(k, v)| format!("{k}: {v}"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_values_between_the_markers() {
        let console = "noise\nVESSEL-REPORT early=ignored\nVESSEL-TEST-INIT-START\r\nVESSEL-REPORT cpus=2\r\n\
                       VESSEL-REPORT vsock=error: bind: EADDRINUSE\nVESSEL-TEST-INIT-DONE\n";
        let report = Report::parse(console).unwrap();
        assert_eq!(report.ok("cpus").unwrap(), "2");
        assert!(report
            .ok("vsock")
            .unwrap_err()
            .to_string()
            .contains("EADDRINUSE"));
        assert!(report.ok("early").is_err());
        assert_eq!(report.errors(), ["vsock: error: bind: EADDRINUSE"]);
    }

    #[test]
    fn an_unfinished_run_is_an_error() {
        assert!(Report::parse("VESSEL-TEST-INIT-START\nVESSEL-REPORT cpus=1\n").is_err());
        assert!(Report::parse("kernel panic").is_err());
    }
}

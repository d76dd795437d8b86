//! The jail's flags (`--jail`, `--seccomp`, `--rlimit-nofile`,
//! `--rlimit-fsize`, `--debug-api`), read by `main` before anything runs:
//! they are the process's, not the VM's, so a flag only (never the config
//! file). [`super::from_args`] skips them.

use vessel_vmm_client::jail::{JailSpec, SeccompMode};

use super::ConfigError;

/// The jail's flags, each followed by its value.
pub const JAIL_FLAGS: [&str; 5] = [
    "--jail",
    "--seccomp",
    "--rlimit-nofile",
    "--rlimit-fsize",
    "--debug-api",
];

/// The fewest open files `--rlimit-nofile` allows: the VMM's own (KVM,
/// the vCPUs, event fds, sockets, files) need a few dozen.
pub const MIN_OPEN_FILES: u64 = 256;
/// The most: the kernel's default `fs.nr_open`.
pub const MAX_OPEN_FILES: u64 = 1 << 20;

/// The jail the flags in `args` ask for; the last of a repeated flag wins.
pub fn jail(args: &[String]) -> Result<JailSpec, ConfigError> {
    let mut spec = JailSpec::default();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let Some(name) = JAIL_FLAGS.iter().copied().find(|f| f == flag) else {
            continue;
        };
        let value = it
            .next()
            .ok_or_else(|| ConfigError::MissingValue(flag.clone()))?;
        let bad = |expected| ConfigError::JailValue {
            flag: name,
            value: value.clone(),
            expected,
        };
        let number = || {
            value.parse::<u64>().map_err(|_| ConfigError::NotANumber {
                flag: name,
                value: value.clone(),
            })
        };
        match name {
            "--jail" => spec.disabled = !on_off(value).ok_or_else(|| bad("on or off"))?,
            "--seccomp" => {
                spec.seccomp = SeccompMode::parse(value).ok_or_else(|| bad("kill or log"))?
            }
            "--rlimit-nofile" => {
                let n = number()?;
                if !(MIN_OPEN_FILES..=MAX_OPEN_FILES).contains(&n) {
                    return Err(ConfigError::OpenFilesLimit(n));
                }
                spec.max_open_files = Some(n);
            }
            "--rlimit-fsize" => spec.max_file_bytes = Some(number()?),
            _ => spec.debug_api = on_off(value).ok_or_else(|| bad("on or off"))?,
        }
    }
    Ok(spec)
}

fn on_off(value: &str) -> Option<bool> {
    match value {
        "on" => Some(true),
        "off" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn no_flags_is_the_whole_jail() {
        assert_eq!(
            jail(&args("--kernel k --initrd i")).unwrap(),
            JailSpec::default()
        );
    }

    #[test]
    fn every_flag_reads_back_from_the_clients_args() {
        let spec = JailSpec {
            disabled: true,
            seccomp: SeccompMode::Log,
            max_open_files: Some(4096),
            max_file_bytes: Some(1 << 30),
            debug_api: true,
        };
        let mut line = args("--kernel k");
        line.extend(spec.args());
        assert_eq!(jail(&line).unwrap(), spec);
    }

    #[test]
    fn bad_values_are_named() {
        for (line, want) in [
            ("--jail maybe", "--jail: \"maybe\" is not on or off"),
            ("--seccomp trap", "--seccomp: \"trap\" is not kill or log"),
            ("--rlimit-nofile 10", "--rlimit-nofile: 10 is out of range"),
            ("--rlimit-fsize lots", "--rlimit-fsize"),
            ("--debug-api", "--debug-api"),
        ] {
            let err = jail(&args(line)).unwrap_err().to_string();
            assert!(err.starts_with(want), "{line}: {err}");
        }
    }
}

//! A runner for a test's named cases: each runs to its end whatever the
//! others did, and every failure is reported at the end.
//!
//! **One retry for the emulated-CPL0 host's lost writes.** That host now and
//! then loses a user-mode memory write in the guest, and a process dies of
//! SIGSEGV (kernel-config/README.md, "Lost user-mode writes"). A test can
//! give [`Cases::retry_host_crashes`] a count of crashed guest processes;
//! on an emulated-CPL0 host only, a case that fails while that count grew
//! runs once more, and the retry is printed. The same holds for a case
//! that fails because the agent could not decode a request the harness
//! built well (a ttrpc INVALID_ARGUMENT with protobuf's decode message):
//! the lost write was in the agent's receive buffer; and for a case whose
//! stream came back with bytes other than it sent, which says so with
//! [`SPOILED_BYTES`] (a guest-kernel copy of a vsock receive that the host
//! spoiled, agent/README.md). A case that fails otherwise, or fails again,
//! fails. On a hardware host nothing is retried.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use anyhow::{anyhow, Result};
use vessel_vmm_client::HostProfile;

type CrashCount<'a> = Box<dyn Fn() -> usize + 'a>;

/// The words of a case's error for a stream whose bytes came back other
/// than sent, with the same length: on an emulated-CPL0 host such a case
/// runs once more.
pub const SPOILED_BYTES: &str = "the bytes came back spoiled";

/// Runs named cases one after another, each to its end whatever the others
/// did, and reports every failure at the end.
#[derive(Default)]
pub struct Cases<'a> {
    failures: Vec<(String, String)>,
    passed: usize,
    retried: Vec<String>,
    crashes: Option<CrashCount<'a>>,
}

impl<'a> Cases<'a> {
    pub fn new() -> Cases<'a> {
        Cases::default()
    }

    /// On an emulated-CPL0 host, a case that fails while `crashes` (the
    /// number of guest processes that died of a fault so far) grew runs once
    /// more. Elsewhere this does nothing.
    pub fn retry_host_crashes(self, crashes: impl Fn() -> usize + 'a) -> Cases<'a> {
        let emulated = matches!(HostProfile::detect(), Ok(HostProfile::EmulatedCpl0));
        self.retry_when_crashed(emulated, crashes)
    }

    fn retry_when_crashed(mut self, enabled: bool, crashes: impl Fn() -> usize + 'a) -> Self {
        if enabled {
            self.crashes = Some(Box::new(crashes));
        }
        self
    }

    /// Runs `case`; an error or a panic is recorded under `name`.
    /// `VESSEL_CASES=TEXT` runs only the cases whose name contains TEXT.
    pub fn run(&mut self, name: &str, mut case: impl FnMut() -> Result<()>) {
        if let Ok(only) = std::env::var("VESSEL_CASES") {
            if !name.contains(&only) {
                eprintln!("case {name}: skipped (VESSEL_CASES={only})");
                return;
            }
        }
        eprintln!("case {name}: running");
        let start = Instant::now();
        let before = self.crash_count();
        let mut outcome = attempt(&mut case);
        if let Err(msg) = &outcome {
            let crashed = self.crash_count().saturating_sub(before);
            let garbled = self.crashes.is_some() && garbled_request(msg);
            if crashed > 0 || garbled {
                let what = match garbled {
                    true => "the agent received a garbled request".to_owned(),
                    false => format!("{crashed} guest process(es) crashed"),
                };
                eprintln!(
                    "case {name}: failed while {what} (the emulated-CPL0 host loses \
                     user-mode writes; kernel-config/README.md); running it once more. \
                     It said: {msg}"
                );
                self.retried.push(name.to_owned());
                outcome = attempt(&mut case);
            }
        }
        let took = start.elapsed().as_secs_f64();
        match outcome {
            Ok(()) => {
                self.passed += 1;
                eprintln!("case {name}: ok ({took:.1} s)");
            }
            Err(msg) => {
                eprintln!("case {name}: FAILED ({took:.1} s): {msg}");
                self.failures.push((name.to_owned(), msg));
            }
        }
    }

    fn crash_count(&self) -> usize {
        self.crashes.as_ref().map_or(0, |count| count())
    }

    /// Ok if every case passed; else an error listing each failure and the
    /// tail of the guest console.
    pub fn finish(self, vm: &crate::AgentVm) -> Result<()> {
        let context = format!(
            "guest console tail:\n{}\nVMM log:\n{}",
            vm.console_tail(40),
            vm.vmm_log()
        );
        self.finish_with(&context)
    }

    /// Ok if every case passed; else an error with `context` (logs), then
    /// the list of failures (last, so that a truncated log still shows it).
    pub fn finish_with(self, context: &str) -> Result<()> {
        if !self.retried.is_empty() {
            eprintln!(
                "cases run twice after a guest crash: {}",
                self.retried.join(", ")
            );
        }
        if self.failures.is_empty() {
            return Ok(());
        }
        let list: Vec<String> = self
            .failures
            .iter()
            .map(|(name, msg)| format!("- {name}: {msg}"))
            .collect();
        Err(anyhow!(
            "{context}\n{} of {} cases failed:\n{}",
            self.failures.len(),
            self.failures.len() + self.passed,
            list.join("\n"),
        ))
    }
}

/// Whether `msg` is the agent's ttrpc server refusing a request it could
/// not decode (protobuf's messages for bytes that are not the message).
fn garbled_request(msg: &str) -> bool {
    const DECODE_ERRORS: [&str; 5] = [
        "Invalid UTF-8 sequence",
        "Unexpected EOF",
        "Incorrect tag",
        "Incorrect varint",
        "Unknown wire type",
    ];
    (msg.contains("INVALID_ARGUMENT") && DECODE_ERRORS.iter().any(|e| msg.contains(e)))
        || msg.contains(SPOILED_BYTES)
}

/// One run of a case: its error, or its panic's message.
fn attempt(case: &mut impl FnMut() -> Result<()>) -> Result<(), String> {
    match catch_unwind(AssertUnwindSafe(case)) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(err)) => Err(format!("{err:#}")),
        Err(panic) => Err(panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .map_or_else(|| "panicked".into(), |msg| format!("panicked: {msg}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::bail;
    use std::cell::Cell;

    #[test]
    fn cases_collect_failures_and_panics() {
        let mut cases = Cases::new();
        cases.run("fine", || Ok(()));
        cases.run("error", || bail!("boom"));
        cases.run("panic", || panic!("oops"));
        assert_eq!(cases.passed, 1);
        let names: Vec<&str> = cases.failures.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["error", "panic"]);
        assert!(cases.failures[1].1.contains("oops"));
    }

    #[test]
    fn a_failure_with_a_crash_runs_once_more() {
        let crashes = Cell::new(0);
        let runs = Cell::new(0);
        let mut cases = Cases::new().retry_when_crashed(true, || crashes.get());
        cases.run("crash then pass", || {
            runs.set(runs.get() + 1);
            if runs.get() == 1 {
                crashes.set(crashes.get() + 1);
                bail!("lost a write");
            }
            Ok(())
        });
        assert_eq!((runs.get(), cases.passed), (2, 1));
        assert_eq!(cases.retried, ["crash then pass"]);

        runs.set(0);
        cases.run("crash twice", || {
            runs.set(runs.get() + 1);
            crashes.set(crashes.get() + 1);
            bail!("lost a write")
        });
        assert_eq!(runs.get(), 2, "one retry only");
        assert_eq!(cases.failures.len(), 1);
    }

    #[test]
    fn a_request_the_agent_could_not_decode_runs_once_more() {
        let runs = Cell::new(0);
        let mut cases = Cases::new().retry_when_crashed(true, || 0);
        cases.run("garbled then pass", || {
            runs.set(runs.get() + 1);
            if runs.get() == 1 {
                bail!(
                    "agent call WriteStdin failed: rpc status: Status {{ code: INVALID_ARGUMENT, \
                     message: \"Invalid UTF-8 sequence\" }}"
                );
            }
            Ok(())
        });
        assert_eq!((runs.get(), cases.passed), (2, 1));
        assert!(!garbled_request(
            "code: INVALID_ARGUMENT, message: \"container id \\\"\\\" is empty\""
        ));
        let mut off = Cases::new().retry_when_crashed(false, || 0);
        off.run("hardware host", || {
            runs.set(runs.get() + 1);
            bail!("code: INVALID_ARGUMENT, message: \"Invalid UTF-8 sequence\"")
        });
        assert_eq!(runs.get(), 3, "no retry where the host keeps writes");
        let mut spoiled = Cases::new().retry_when_crashed(true, || 0);
        spoiled.run("spoiled then spoiled", || {
            runs.set(runs.get() + 1);
            bail!("cat returned 8 of 8 bytes, {SPOILED_BYTES} from byte 3")
        });
        assert_eq!(runs.get(), 5, "spoiled bytes run once more, and fail twice");
        assert_eq!(spoiled.failures.len(), 1);
    }

    #[test]
    fn a_failure_without_a_crash_is_not_retried() {
        let runs = Cell::new(0);
        let mut cases = Cases::new().retry_when_crashed(true, || 0);
        cases.run("plain failure", || {
            runs.set(runs.get() + 1);
            bail!("wrong answer")
        });
        assert_eq!(runs.get(), 1);
        let mut off = Cases::new().retry_when_crashed(false, || runs.get());
        off.run("hardware host", || {
            runs.set(runs.get() + 1);
            bail!("crashed")
        });
        assert_eq!(runs.get(), 2, "no retry where the host keeps writes");
    }
}

use super::*;
use crate::container::fake::RecordingChildSys;
use crate::container::spawn::{pipe, read_report};
use std::io::Write;
use std::os::fd::AsRawFd;

fn plan(steps: Vec<Step>, report_fd: RawFd, start_fd: RawFd) -> Plan {
    Plan {
        steps,
        command: Command {
            candidates: vec![c"/usr/bin/true".into(), c"/bin/true".into()],
            argv: vec![c"true".into()],
            envp: vec![],
        },
        report_fd,
        start_fd,
    }
}

#[test]
fn reports_encode_round_trip() {
    for r in [
        Report::READY,
        Report {
            step: 3,
            errno: libc::ENOENT,
        },
    ] {
        assert_eq!(Report::decode(r.encode()), r);
    }
}

#[test]
fn walks_steps_then_waits_for_start_then_execs_the_first_executable() {
    let (mut reports_rx, reports_tx) = pipe().unwrap();
    let (start_rx, mut start_tx) = pipe().unwrap();
    let p = plan(
        vec![
            Step::Chdir(c"/".into()),
            Step::FindExecutable,
            Step::WaitStart,
            Step::Exec,
        ],
        reports_tx.as_raw_fd(),
        start_rx.as_raw_fd(),
    );
    let sys = RecordingChildSys {
        executables: ["/bin/true".to_string()].into(),
        ..Default::default()
    };
    start_tx.write_all(&[1]).unwrap();
    let (argv, envp) = p.pointers();
    assert_eq!(argv.len(), 2, "null-terminated");
    assert!(argv[1].is_null() && envp[0].is_null());
    // The fake's exec "succeeds": like a real execve, nothing is reported
    // after it.
    p.execute(&sys, &argv, &envp);
    assert_eq!(sys.log(), ["Chdir(\"/\")", "exec /bin/true"]);
    drop(reports_tx);
    assert_eq!(read_report(&mut reports_rx).unwrap(), Some(Report::READY));
    assert_eq!(read_report(&mut reports_rx).unwrap(), None);
}

#[test]
fn a_failed_step_is_reported_and_stops_the_walk() {
    let (mut reports_rx, reports_tx) = pipe().unwrap();
    let (start_rx, _start_tx) = pipe().unwrap();
    let p = plan(
        vec![
            Step::Mkdir {
                path: c"/r/proc".into(),
                mode: 0o755,
            },
            Step::Chdir(c"/r".into()),
            Step::Exec,
        ],
        reports_tx.as_raw_fd(),
        start_rx.as_raw_fd(),
    );
    let sys = RecordingChildSys {
        fail: Some(("Chdir".into(), libc::EACCES)),
        ..Default::default()
    };
    let report = Report {
        step: 1,
        errno: libc::EACCES,
    };
    assert_eq!(p.execute(&sys, &[], &[]), Ended::Failed(report));
    assert_eq!(read_report(&mut reports_rx).unwrap(), Some(report));
    assert_eq!(p.describe(1), "changing directory to \"/r\"");
    assert_eq!(p.describe(Report::EXEC_STEP), "executing \"/usr/bin/true\"");
}

#[test]
fn a_missing_executable_fails_before_ready() {
    let (mut reports_rx, reports_tx) = pipe().unwrap();
    let (start_rx, _start_tx) = pipe().unwrap();
    let p = plan(
        vec![Step::FindExecutable, Step::WaitStart, Step::Exec],
        reports_tx.as_raw_fd(),
        start_rx.as_raw_fd(),
    );
    let sys = RecordingChildSys::default();
    let ended = p.execute(&sys, &[], &[]);
    assert_eq!(
        ended,
        Ended::Failed(Report {
            step: 0,
            errno: libc::ENOENT
        })
    );
    assert_eq!(
        read_report(&mut reports_rx).unwrap().map(|r| r.step),
        Some(0),
        "no READY first"
    );
    assert_eq!(p.describe(0), "finding executable \"true\" in $PATH");
}

#[test]
fn an_abandoned_create_exits_quietly() {
    let (_reports_rx, reports_tx) = pipe().unwrap();
    let (start_rx, start_tx) = pipe().unwrap();
    drop(start_tx);
    let p = plan(
        vec![Step::WaitStart, Step::Exec],
        reports_tx.as_raw_fd(),
        start_rx.as_raw_fd(),
    );
    let sys = RecordingChildSys::default();
    assert_eq!(p.execute(&sys, &[], &[]), Ended::Abandoned);
    assert!(sys.log().is_empty(), "nothing executed");
}

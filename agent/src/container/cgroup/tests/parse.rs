//! The file parsers, on sample kernel output.

use std::path::Path;

use super::super::stats::{
    parse_count, parse_flat_keyed, parse_io_stat, parse_limit, parse_oom_kill, parse_pids,
};
use super::super::{CgroupError, IoStats};

pub const CPU_STAT: &str = "usage_usec 1234567
user_usec 1000000
system_usec 234567
core_sched.force_idle_usec 0
nr_periods 120
nr_throttled 7
throttled_usec 89000
nr_bursts 0
burst_usec 0
";

pub const MEMORY_EVENTS: &str = "low 0
high 0
max 14
oom 3
oom_kill 2
oom_group_kill 0
";

pub const IO_STAT: &str = "254:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0
254:16 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0 cost.vrate=100.00 cost.usage=10
";

const MEMORY_STAT: &str = "anon 1183744
file 2805760
kernel 602112
kernel_stack 32768
pagetables 49152
sec_pagetables 0
percpu 0
sock 0
vmalloc 0
shmem 0
zswap 0
zswapped 0
file_mapped 1376256
file_dirty 0
file_writeback 0
swapcached 0
anon_thp 0
inactive_anon 1175552
active_anon 8192
inactive_file 1466368
active_file 1339392
unevictable 0
slab_reclaimable 344968
slab_unreclaimable 137352
slab 482320
workingset_refault_anon 0
pgfault 2451
pgmajfault 17
thp_fault_alloc 0
";

fn path() -> &'static Path {
    Path::new("/cg/x")
}

fn bad_line(result: Result<impl std::fmt::Debug, CgroupError>) -> String {
    match result {
        Err(CgroupError::ParseFile { line, .. }) => line,
        other => panic!("expected a parse error, got {other:?}"),
    }
}

#[test]
fn flat_keyed_files() {
    let [usage, throttled, absent] =
        parse_flat_keyed(path(), CPU_STAT, ["usage_usec", "nr_throttled", "absent"]).unwrap();
    assert_eq!((usage, throttled, absent), (Some(1_234_567), Some(7), None));
    let [anon, inactive_file] =
        parse_flat_keyed(path(), MEMORY_STAT, ["anon", "inactive_file"]).unwrap();
    assert_eq!((anon, inactive_file), (Some(1_183_744), Some(1_466_368)));
    assert_eq!(parse_flat_keyed(path(), "", ["a"]).unwrap(), [None]);

    // Lines of the wrong shape, or a bad value for a wanted key.
    assert_eq!(bad_line(parse_flat_keyed(path(), "a 1\nb\n", ["a"])), "b");
    assert_eq!(
        bad_line(parse_flat_keyed(path(), "a 1 2\n", ["z"])),
        "a 1 2"
    );
    assert_eq!(bad_line(parse_flat_keyed(path(), "a -1\n", ["a"])), "a -1");
    // A bad value for a key nobody wants is not an error.
    assert_eq!(
        parse_flat_keyed(path(), "a x\nb 2\n", ["b"]).unwrap(),
        [Some(2)]
    );
}

#[test]
fn oom_kill_count() {
    assert_eq!(parse_oom_kill(path(), MEMORY_EVENTS).unwrap(), 2);
    let err = parse_oom_kill(path(), "low 0\noom 1\n").unwrap_err();
    assert!(
        matches!(
            err,
            CgroupError::MissingKey {
                key: "oom_kill",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        bad_line(parse_oom_kill(path(), "oom_kill many\n")),
        "oom_kill many"
    );
}

#[test]
fn single_values() {
    assert_eq!(parse_count(path(), "4096\n").unwrap(), 4096);
    assert_eq!(parse_limit(path(), "max\n").unwrap(), None);
    assert_eq!(parse_limit(path(), "1073741824\n").unwrap(), Some(1 << 30));
    assert_eq!(bad_line(parse_count(path(), "max\n")), "max");
    assert_eq!(bad_line(parse_limit(path(), "")), "");
}

#[test]
fn pid_lists() {
    assert_eq!(parse_pids(path(), "").unwrap(), Vec::<i32>::new());
    assert_eq!(parse_pids(path(), "1\n22\n333\n").unwrap(), [1, 22, 333]);
    assert_eq!(bad_line(parse_pids(path(), "1\nx\n")), "x");
    assert_eq!(bad_line(parse_pids(path(), "0\n")), "0");
}

#[test]
fn io_stat_sums_devices() {
    assert_eq!(
        parse_io_stat(path(), IO_STAT).unwrap(),
        IoStats {
            rbytes: 4097,
            wbytes: 8194,
            rios: 4,
            wios: 6,
        }
    );
    assert_eq!(parse_io_stat(path(), "").unwrap(), IoStats::default());
    assert_eq!(
        bad_line(parse_io_stat(path(), "sda rbytes=1\n")),
        "sda rbytes=1"
    );
    assert_eq!(
        bad_line(parse_io_stat(path(), "8:0 rbytes\n")),
        "8:0 rbytes"
    );
    assert_eq!(
        bad_line(parse_io_stat(path(), "8:0 rbytes=-1\n")),
        "8:0 rbytes=-1"
    );
    // Sums saturate instead of overflowing.
    let huge = format!("8:0 rbytes={m}\n8:1 rbytes={m}\n", m = u64::MAX);
    assert_eq!(parse_io_stat(path(), &huge).unwrap().rbytes, u64::MAX);
}

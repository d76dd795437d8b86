//! OCI seccomp profiles (`linux.seccomp`) compiled to classic BPF.
//!
//! [`compile`] turns a profile into a [`SeccompProgram`]: the filter to
//! install with `seccomp(SECCOMP_SET_MODE_FILTER, flags, prog)`, or none.
//!
//! # From a profile to one filter
//!
//! seccompiler builds programs with one match action and one mismatch action.
//! For a profile whose default action is D, this module has it build:
//!
//! - for each distinct action A other than ALLOW and D, an *action part*: A
//!   for the calls A's rules match, ALLOW otherwise;
//! - unless D is ALLOW, a *default part*: ALLOW for any call that a rule with
//!   an action other than D matches, D for every other call.
//!
//! and joins them into a single filter: the action parts, most restrictive
//! first (KILL_PROCESS, KILL_THREAD, TRAP, ERRNO, TRACE, LOG), each part's
//! "ALLOW" turned into a jump to the next part; then the default part (or
//! ALLOW). The verdict is D when no rule matches, and otherwise the most
//! restrictive action among the matching rules, which is libseccomp's answer
//! whenever one action matches: an allow-list (default ERRNO or KILL, ALLOW
//! rules with or without argument conditions) and a deny-list (default ALLOW,
//! ERRNO/KILL/TRAP/... rules) both come out exactly. Rules whose action equals
//! D are skipped, as runc does; they change nothing.
//!
//! One filter rather than one per part: the kernel would combine several
//! filters the same way, but each `seccomp()` call after the first one runs
//! through the filters already installed, which an allow-list without
//! `seccomp` denies.
//!
//! The filter starts with a guard: a call from another architecture than
//! x86_64 kills the process, and a syscall number with the x32 bit (or
//! larger) gets ENOSYS. Only SCMP_ARCH_X86_64 (or SCMP_ARCH_NATIVE) matters
//! in `architectures`: the guest kernel has no IA32 emulation, and x32 calls
//! are answered as by a kernel without the x32 ABI, so they cannot bypass a
//! deny-list either. Like runc, when D is KILL, TRAP or ERRNO the guard also
//! returns ENOSYS for numbers above the highest syscall the profile names, so
//! that a libc probing a syscall newer than the profile (clone3, ...) falls
//! back instead of failing with D.
//!
//! Argument conditions compare the full 64-bit argument, as libseccomp does
//! on x86_64; SCMP_CMP_MASKED_EQ takes `value` as the mask and `valueTwo` as
//! the expected value. ERRNO without `errnoRet` returns EPERM, and TRACE
//! without it passes EPERM to the tracer, as runc does. Syscall names come
//! from the `syscalls` crate's x86_64 table; a name it does not know is
//! skipped with a debug log, as libseccomp skips names unknown to the arch.
//!
//! # Differences from runc and libseccomp
//!
//! - Rules with different actions that match the same call: the most
//!   restrictive action wins, and between two ERRNO (or two TRACE) values, the
//!   profile entry that comes first. libseccomp refuses some such profiles and
//!   settles others by rule order; notably, it lets an unconditional rule for
//!   a syscall override that syscall's conditional rules, while here a
//!   matching conditional deny beats an unconditional ALLOW.
//! - Several conditions on the same argument are ANDed like any others; runc
//!   turns such a rule into one rule per condition (ORed).
//! - x32 calls get ENOSYS and calls of other architectures kill the process;
//!   libseccomp applies its bad-architecture action (KILL_THREAD) to
//!   architectures absent from the profile and the rules to listed ones.
//! - SCMP_ACT_NOTIFY, `listenerPath` and SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
//!   are refused: the guest has no seccomp agent.

use std::collections::BTreeMap;
use std::str::FromStr;

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompFilterFlag,
    LinuxSeccompOperator, LinuxSyscall,
};
use seccompiler::{
    BackendError, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
    SeccompFilter, SeccompRule, TargetArch,
};
use syscalls::x86_64::Sysno;

#[cfg(test)]
mod tests;

/// `AUDIT_ARCH_X86_64`: `EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE`.
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
/// `__X32_SYSCALL_BIT`: x32 calls have it in their syscall number.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
/// Offsets in `struct seccomp_data`.
const NR_OFFSET: u32 = 0;
const ARCH_OFFSET: u32 = 4;
/// The kernel's limit of instructions per filter.
const BPF_MAXINSNS: usize = 4096;
/// The largest errno or trace value a return value holds.
const MAX_RET_DATA: u32 = libc::SECCOMP_RET_DATA;

const JA: u16 = (libc::BPF_JMP | libc::BPF_JA) as u16;
const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const JGT_K: u16 = (libc::BPF_JMP | libc::BPF_JGT | libc::BPF_K) as u16;
const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

/// Filters to install in order with seccomp(SECCOMP_SET_MODE_FILTER, flags, prog), plus those flags.
///
/// [`compile`] makes at most one filter.
#[derive(Debug, Clone)]
pub struct SeccompProgram {
    /// The filters, first to install first; empty when there is nothing to
    /// install (default ALLOW and no other action).
    pub filters: Vec<Vec<libc::sock_filter>>,
    /// `SECCOMP_FILTER_FLAG_*` bits for every `seccomp()` call.
    pub flags: libc::c_ulong,
}

/// Why a seccomp profile cannot be compiled.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// SCMP_ACT_NOTIFY or a listener path: there is no seccomp agent.
    #[error("seccomp user notification (SCMP_ACT_NOTIFY, listenerPath) is not supported")]
    UnsupportedNotify,
    /// The profile lists architectures, but not x86_64.
    #[error("the seccomp architectures ({}) do not include SCMP_ARCH_X86_64", arch_list(.0))]
    MissingArch(Vec<Arch>),
    /// A filter flag this runtime does not apply.
    #[error("seccomp flag {0} is not supported")]
    UnsupportedFlag(LinuxSeccompFilterFlag),
    /// A condition on an argument past the sixth.
    #[error("a seccomp rule for {syscall} tests argument {index}; syscalls have 6 (0 to 5)")]
    InvalidArgIndex {
        /// The rule's first syscall name.
        syscall: String,
        /// The argument index in the rule.
        index: usize,
    },
    /// An `errnoRet` that does not fit in a seccomp return value.
    #[error("seccomp {action} return value {value} is larger than 65535")]
    InvalidReturnValue {
        /// The action carrying the value.
        action: LinuxSeccompAction,
        /// The value.
        value: u32,
    },
    /// seccompiler refused a part of the filter.
    #[error("cannot build the seccomp filter part for {part}")]
    BuildFilter {
        /// Which part: `default`, an action, or a syscall.
        part: String,
        /// seccompiler's error.
        #[source]
        source: BackendError,
    },
    /// The filter exceeds the kernel's limit.
    #[error("the seccomp filter has {len} instructions; the limit is 4096")]
    FilterTooLarge {
        /// Its length.
        len: usize,
    },
}

/// Compiles an OCI seccomp profile for x86_64; see the module documentation
/// for the semantics.
pub fn compile(profile: &LinuxSeccomp) -> Result<SeccompProgram, SeccompError> {
    if profile.listener_path().is_some() {
        return Err(SeccompError::UnsupportedNotify);
    }
    check_architectures(profile.architectures().as_deref().unwrap_or_default())?;
    let flags = filter_flags(profile.flags().as_deref().unwrap_or_default())?;
    let default = action(profile.default_action(), profile.default_errno_ret())?;

    // Calls that escape the default action, and the rules of each other
    // non-allow action in the order the profile first uses it.
    let mut escapes = Rules::default();
    let mut by_action: Vec<(SeccompAction, Rules)> = Vec::new();
    let mut highest_nr: Option<u32> = None;
    for entry in profile.syscalls().iter().flatten() {
        let act = action(entry.action(), entry.errno_ret())?;
        let rule = rule(entry)?;
        let numbers = syscall_numbers(entry);
        highest_nr = numbers.iter().copied().chain(highest_nr).max();
        if act == default || numbers.is_empty() {
            continue;
        }
        let mut actions = None;
        if act != SeccompAction::Allow {
            let pos = match by_action.iter().position(|(a, _)| *a == act) {
                Some(pos) => pos,
                None => {
                    by_action.push((act, Rules::default()));
                    by_action.len() - 1
                }
            };
            actions = Some(&mut by_action[pos].1);
        }
        for &nr in &numbers {
            escapes.add(nr, rule.as_ref());
            if let Some(rules) = actions.as_mut() {
                rules.add(nr, rule.as_ref());
            }
        }
    }

    if default == SeccompAction::Allow && by_action.is_empty() {
        tracing::debug!("the seccomp profile allows everything; no filter");
        return Ok(SeccompProgram {
            filters: Vec::new(),
            flags,
        });
    }

    // Most restrictive first; a stable sort keeps profile order among equal
    // actions (two ERRNO values), so the earlier entry wins.
    by_action.sort_by_key(|(act, _)| precedence(act));
    let enosys_above = match default {
        SeccompAction::Allow | SeccompAction::Log | SeccompAction::Trace(_) => None,
        _ => highest_nr,
    };
    let mut filter = guard(enosys_above);
    for (act, rules) in by_action {
        let bpf = part(&format!("{act:?}"), rules, SeccompAction::Allow, act)?;
        append_falling_through(&mut filter, bpf);
    }
    if default == SeccompAction::Allow {
        filter.push(stmt(RET_K, libc::SECCOMP_RET_ALLOW));
    } else {
        filter.extend(part(
            "default",
            escapes,
            default.clone(),
            SeccompAction::Allow,
        )?);
    }
    if filter.len() > BPF_MAXINSNS {
        return Err(SeccompError::FilterTooLarge { len: filter.len() });
    }
    tracing::debug!(
        instructions = filter.len(),
        flags,
        default = ?default,
        "compiled the seccomp profile"
    );
    Ok(SeccompProgram {
        filters: vec![filter],
        flags,
    })
}

/// Orders actions as the kernel does, most restrictive first.
fn precedence(act: &SeccompAction) -> i32 {
    (u32::from(act.clone()) & libc::SECCOMP_RET_ACTION_FULL) as i32
}

/// The architectures as the profile spells them.
fn arch_list(archs: &[Arch]) -> String {
    let names: Vec<String> = archs.iter().map(Arch::to_string).collect();
    names.join(", ")
}

/// Accepts no list, or one with x86_64; the others are ignored.
fn check_architectures(archs: &[Arch]) -> Result<(), SeccompError> {
    if archs.is_empty() {
        return Ok(());
    }
    if !archs
        .iter()
        .any(|a| matches!(a, Arch::ScmpArchX86_64 | Arch::ScmpArchNative))
    {
        return Err(SeccompError::MissingArch(archs.to_vec()));
    }
    for arch in archs {
        if !matches!(arch, Arch::ScmpArchX86_64 | Arch::ScmpArchNative) {
            tracing::debug!(%arch, "seccomp architecture ignored (x86_64 guest)");
        }
    }
    Ok(())
}

/// The `SECCOMP_FILTER_FLAG_*` bits of the profile's flags.
fn filter_flags(flags: &[LinuxSeccompFilterFlag]) -> Result<libc::c_ulong, SeccompError> {
    flags.iter().try_fold(0, |bits, flag| {
        let bit = match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => libc::SECCOMP_FILTER_FLAG_TSYNC,
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => libc::SECCOMP_FILTER_FLAG_LOG,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => {
                libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW
            }
            // Only meaningful with a notify listener.
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => {
                return Err(SeccompError::UnsupportedFlag(*flag));
            }
        };
        Ok(bits | bit)
    })
}

/// The seccompiler action of an OCI action.
fn action(act: LinuxSeccompAction, errno_ret: Option<u32>) -> Result<SeccompAction, SeccompError> {
    let data = || {
        let value = errno_ret.unwrap_or(libc::EPERM as u32);
        if value > MAX_RET_DATA {
            return Err(SeccompError::InvalidReturnValue { action: act, value });
        }
        Ok(value)
    };
    Ok(match act {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            SeccompAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => SeccompAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => SeccompAction::Trap,
        LinuxSeccompAction::ScmpActErrno => SeccompAction::Errno(data()?),
        LinuxSeccompAction::ScmpActTrace => SeccompAction::Trace(data()?),
        LinuxSeccompAction::ScmpActLog => SeccompAction::Log,
        LinuxSeccompAction::ScmpActAllow => SeccompAction::Allow,
        LinuxSeccompAction::ScmpActNotify => return Err(SeccompError::UnsupportedNotify),
    })
}

/// The entry's conditions as one rule; `None` when it has none (it matches
/// every call of its syscalls).
fn rule(entry: &LinuxSyscall) -> Result<Option<SeccompRule>, SeccompError> {
    let args = entry.args().as_deref().unwrap_or_default();
    if args.is_empty() {
        return Ok(None);
    }
    let first_name = || entry.names().first().cloned().unwrap_or_default();
    let mut conditions = Vec::with_capacity(args.len());
    for arg in args {
        let condition = condition(arg).ok_or_else(|| SeccompError::InvalidArgIndex {
            syscall: first_name(),
            index: arg.index(),
        })?;
        conditions.push(condition);
    }
    // Not empty, so seccompiler accepts it.
    let rule = SeccompRule::new(conditions).map_err(|source| SeccompError::BuildFilter {
        part: first_name(),
        source,
    })?;
    Ok(Some(rule))
}

/// One condition over the full 64-bit argument; `None` if the index is past
/// the sixth argument.
fn condition(arg: &LinuxSeccompArg) -> Option<SeccompCondition> {
    let index = u8::try_from(arg.index()).ok()?;
    let (op, value) = match arg.op() {
        LinuxSeccompOperator::ScmpCmpNe => (SeccompCmpOp::Ne, arg.value()),
        LinuxSeccompOperator::ScmpCmpLt => (SeccompCmpOp::Lt, arg.value()),
        LinuxSeccompOperator::ScmpCmpLe => (SeccompCmpOp::Le, arg.value()),
        LinuxSeccompOperator::ScmpCmpEq => (SeccompCmpOp::Eq, arg.value()),
        LinuxSeccompOperator::ScmpCmpGe => (SeccompCmpOp::Ge, arg.value()),
        LinuxSeccompOperator::ScmpCmpGt => (SeccompCmpOp::Gt, arg.value()),
        LinuxSeccompOperator::ScmpCmpMaskedEq => (
            SeccompCmpOp::MaskedEq(arg.value()),
            arg.value_two().unwrap_or(0),
        ),
    };
    SeccompCondition::new(index, SeccompCmpArgLen::Qword, op, value).ok()
}

/// The x86_64 numbers of the entry's syscalls; unknown names are skipped.
fn syscall_numbers(entry: &LinuxSyscall) -> Vec<u32> {
    entry
        .names()
        .iter()
        .filter_map(|name| match Sysno::from_str(name) {
            Ok(sysno) => u32::try_from(sysno.id()).ok(),
            Err(()) => {
                tracing::debug!(syscall = %name, "unknown syscall in the seccomp profile; skipped");
                None
            }
        })
        .collect()
}

/// One part's rules: syscall number to `None` when a rule matches every
/// call of it, or else to the alternative condition sets (ORed).
#[derive(Default)]
struct Rules(BTreeMap<u32, Option<Vec<SeccompRule>>>);

impl Rules {
    /// Adds a rule for `nr`; `None` matches every call.
    fn add(&mut self, nr: u32, rule: Option<&SeccompRule>) {
        let slot = self.0.entry(nr).or_insert_with(|| Some(Vec::new()));
        match (slot.as_mut(), rule) {
            (Some(rules), Some(rule)) => rules.push(rule.clone()),
            (Some(_), None) => *slot = None,
            (None, _) => {}
        }
    }

    /// seccompiler's form, where an empty list matches every call.
    fn into_map(self) -> BTreeMap<i64, Vec<SeccompRule>> {
        self.0
            .into_iter()
            .map(|(nr, rules)| (i64::from(nr), rules.unwrap_or_default()))
            .collect()
    }
}

/// seccompiler's program for one part of the filter.
fn part(
    name: &str,
    rules: Rules,
    mismatch: SeccompAction,
    matched: SeccompAction,
) -> Result<Vec<libc::sock_filter>, SeccompError> {
    let build_error = |source| SeccompError::BuildFilter {
        part: name.to_owned(),
        source,
    };
    let filter = SeccompFilter::new(rules.into_map(), mismatch, matched, TargetArch::x86_64)
        .map_err(build_error)?;
    let bpf = BpfProgram::try_from(filter).map_err(build_error)?;
    Ok(bpf
        .into_iter()
        .map(|i| libc::sock_filter {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect())
}

/// Appends `part` with each of its `ret ALLOW` turned into a jump to what
/// follows it. Jumps are relative and the part keeps its length, so its own
/// jumps still land where they did.
fn append_falling_through(filter: &mut Vec<libc::sock_filter>, part: Vec<libc::sock_filter>) {
    let len = part.len();
    filter.extend(part.into_iter().enumerate().map(|(i, ins)| {
        if ins.code == RET_K && ins.k == libc::SECCOMP_RET_ALLOW {
            // Lands on index `len`: just after the part.
            stmt(JA, (len - i - 1) as u32)
        } else {
            ins
        }
    }));
}

/// Kills calls of another architecture, and returns ENOSYS for x32 (and
/// larger) syscall numbers and for numbers above `enosys_above`. Falls
/// through to what follows otherwise.
fn guard(enosys_above: Option<u32>) -> Vec<libc::sock_filter> {
    let enosys = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
    let mut prog = vec![
        stmt(LD_W_ABS, ARCH_OFFSET),
        jump(JEQ_K, AUDIT_ARCH_X86_64, 1, 0),
        stmt(RET_K, libc::SECCOMP_RET_KILL_PROCESS),
        stmt(LD_W_ABS, NR_OFFSET),
        jump(JGE_K, X32_SYSCALL_BIT, 0, 1),
        stmt(RET_K, enosys),
    ];
    if let Some(highest) = enosys_above {
        prog.push(jump(JGT_K, highest, 0, 1));
        prog.push(stmt(RET_K, enosys));
    }
    prog
}

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    jump(code, k, 0, 0)
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

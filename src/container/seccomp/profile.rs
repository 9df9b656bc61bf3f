//! Seccomp profiles in docker's JSON format, compiled to a BPF filter for
//! one architecture and one set of capabilities.
//!
//! What a profile means here is what it means to docker (moby's
//! profiles/seccomp, which resolves `includes`/`excludes` before runc
//! loads the rest with libseccomp):
//!
//! - an entry applies when its `includes` all hold (every listed
//!   capability is in the job's set, the architecture is listed, the
//!   kernel is at least `minKernel`) and none of its `excludes` does;
//! - a syscall's applying entries are tried in profile order and the first
//!   whose `args` conditions all hold decides; otherwise `defaultAction`;
//! - names the architecture does not have (i386's `chown32`, arm's
//!   `cacheflush`...) are skipped, as libseccomp skips them;
//! - a syscall numbered above every syscall the profile names gets ENOSYS
//!   instead of a denying default, as runc does, so a program on a newer
//!   kernel falls back from a call the profile never heard of.
//!
//! Unlike docker, which also filters the architecture's compat ABIs (i386
//! and x32 on x86_64, arm on aarch64), the filter only admits the native
//! ABI and kills the process on any other: they are attack surface that a
//! job of 64-bit programs never needs. `architectures` and `archMap` are
//! read for their syntax only.
//!
//! Built into the runner and into build.rs: std, serde and serde_json only.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

use super::bpf::{self, Emitter, Insn, Label};
use super::syscalls::{Arch, X32_SYSCALL_BIT};

/// The kernel a filter is for: the running one (a profile file, compiled
/// on the host before the job starts), or any from a version on (the
/// default profile, compiled at build time for every kernel the runner
/// supports). `minKernel` must be decidable for it.
#[derive(Clone, Copy, Debug)]
pub enum Kernel {
    Running(u32, u32),
    // Made by build.rs (and the tests), never by the runner itself.
    #[cfg_attr(not(test), allow(dead_code))]
    AtLeast(u32, u32),
}

/// The oldest kernel repeatr runs on (mount_setattr is 5.12): build.rs
/// decides the default profile's `minKernel` conditions for it and every
/// later one.
#[cfg_attr(not(test), allow(dead_code))]
pub const OLDEST_KERNEL: Kernel = Kernel::AtLeast(5, 12);

/// What a profile is compiled for.
pub struct Target<'a> {
    pub arch: &'a Arch,
    /// The capabilities in the job's bounding set, by name (`CAP_SYS_ADMIN`).
    pub caps: &'a [String],
    pub kernel: Kernel,
}

/// A compiled profile.
#[derive(Debug)]
pub struct Compiled {
    pub program: Vec<Insn>,
    /// Names the profile gives that the architecture has no syscall for.
    pub skipped: Vec<String>,
}

/// Why a profile cannot be compiled. Each says where, and what to change.
#[derive(Debug)]
pub enum ProfileError {
    /// Not JSON, or not a profile: serde's message names the field, line and column.
    Json(serde_json::Error),
    /// A valid field repeatr does not do, or a value out of range.
    Unsupported(String),
    /// More instructions than the kernel takes.
    TooLong(usize),
}

impl fmt::Display for ProfileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProfileError::Json(e) => write!(f, "not a seccomp profile: {e}"),
            ProfileError::Unsupported(what) => f.write_str(what),
            ProfileError::TooLong(n) => {
                write!(f, "the filter would be {n} instructions, more than the kernel's {}", bpf::MAX_INSNS)
            }
        }
    }
}

impl std::error::Error for ProfileError {}

fn unsupported(what: String) -> ProfileError {
    ProfileError::Unsupported(what)
}

// Docker's format (moby profiles/seccomp `Seccomp`, with the OCI
// `LinuxSeccomp` fields it embeds). Every field docker reads is known
// here, so that an unknown one (a typo) is refused rather than ignored.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Profile {
    default_action: Action,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    #[serde(default)]
    architectures: Option<Vec<String>>,
    #[serde(default)]
    arch_map: Option<Vec<ArchMap>>,
    #[serde(default)]
    syscalls: Option<Vec<Entry>>,
    #[serde(default)]
    flags: Option<Vec<String>>,
    #[serde(default)]
    listener_path: Option<String>,
    #[serde(default)]
    listener_metadata: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ArchMap {
    #[serde(rename = "architecture")]
    _architecture: String,
    #[serde(default, rename = "subArchitectures")]
    _sub_architectures: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Entry {
    #[serde(default)]
    names: Option<Vec<String>>,
    #[serde(default)]
    name: Option<String>,
    action: Action,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Option<Vec<Arg>>,
    #[serde(default, rename = "comment")]
    _comment: Option<String>,
    #[serde(default)]
    includes: Option<Filter>,
    #[serde(default)]
    excludes: Option<Filter>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Arg {
    index: u32,
    value: u64,
    #[serde(default)]
    value_two: u64,
    op: Op,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Filter {
    #[serde(default)]
    caps: Option<Vec<String>>,
    #[serde(default)]
    arches: Option<Vec<String>>,
    #[serde(default)]
    min_kernel: Option<String>,
}

#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    #[serde(rename = "SCMP_ACT_ALLOW")]
    Allow,
    #[serde(rename = "SCMP_ACT_ERRNO")]
    Errno,
    /// libseccomp's SCMP_ACT_KILL is the thread's death.
    #[serde(rename = "SCMP_ACT_KILL", alias = "SCMP_ACT_KILL_THREAD")]
    KillThread,
    #[serde(rename = "SCMP_ACT_KILL_PROCESS")]
    KillProcess,
    #[serde(rename = "SCMP_ACT_TRAP")]
    Trap,
    #[serde(rename = "SCMP_ACT_LOG")]
    Log,
    #[serde(rename = "SCMP_ACT_TRACE")]
    Trace,
    #[serde(rename = "SCMP_ACT_NOTIFY")]
    Notify,
}

#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    #[serde(rename = "SCMP_CMP_NE")]
    Ne,
    #[serde(rename = "SCMP_CMP_LT")]
    Lt,
    #[serde(rename = "SCMP_CMP_LE")]
    Le,
    #[serde(rename = "SCMP_CMP_EQ")]
    Eq,
    #[serde(rename = "SCMP_CMP_GE")]
    Ge,
    #[serde(rename = "SCMP_CMP_GT")]
    Gt,
    #[serde(rename = "SCMP_CMP_MASKED_EQ")]
    MaskedEq,
}

/// One argument test: `args[index] op value` on all 64 bits, or for
/// MASKED_EQ `args[index] & value == value_two` (libseccomp's operands).
#[derive(Clone, Copy, Debug)]
struct Cond {
    index: u8,
    op: Op,
    value: u64,
    value_two: u64,
}

/// A syscall's rule: when every condition holds, `action` (a seccomp
/// return value).
#[derive(Clone, Debug)]
struct Rule {
    conds: Vec<Cond>,
    action: u32,
}

/// The largest errno a filter can return (MAX_ERRNO).
const MAX_ERRNO: u32 = 4095;
const EPERM: u32 = 1;
const ENOSYS: u32 = 38;

/// The seccomp return value of an action; `errno` defaults to EPERM, as
/// runc's does.
fn ret_value(action: Action, errno: Option<u32>, what: &str) -> Result<u32, ProfileError> {
    if errno.is_some() && action != Action::Errno {
        return Err(unsupported(format!("{what}: an errno is only for SCMP_ACT_ERRNO")));
    }
    Ok(match action {
        Action::Allow => bpf::RET_ALLOW,
        Action::Errno => match errno.unwrap_or(EPERM) {
            e if e <= MAX_ERRNO => bpf::RET_ERRNO | e,
            e => return Err(unsupported(format!("{what}: errno {e} is above {MAX_ERRNO}"))),
        },
        Action::KillThread => bpf::RET_KILL_THREAD,
        Action::KillProcess => bpf::RET_KILL_PROCESS,
        Action::Trap => bpf::RET_TRAP,
        Action::Log => bpf::RET_LOG,
        Action::Trace | Action::Notify => {
            return Err(unsupported(format!(
                "{what}: SCMP_ACT_TRACE and SCMP_ACT_NOTIFY need a tracer or a listener, which a job has not; \
                 use SCMP_ACT_ERRNO, SCMP_ACT_KILL_PROCESS, SCMP_ACT_TRAP or SCMP_ACT_LOG"
            )));
        }
    })
}

/// `"4.8"` (or `"5"`) as (major, minor).
fn parse_version(s: &str) -> Option<(u32, u32)> {
    let mut parts = s.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = match parts.next() {
        Some(m) => m.parse().ok()?,
        None => 0,
    };
    parts.next().is_none().then_some((major, minor))
}

impl Kernel {
    /// Whether the kernel is at least `min`; an error if that depends on
    /// which kernel of an `AtLeast` range runs the job.
    fn at_least(self, min: &str, what: &str) -> Result<bool, ProfileError> {
        let want =
            parse_version(min).ok_or_else(|| unsupported(format!("{what}: minKernel {min:?} is not like \"5.10\"")))?;
        match self {
            Kernel::Running(a, b) => Ok((a, b) >= want),
            Kernel::AtLeast(a, b) if (a, b) >= want => Ok(true),
            Kernel::AtLeast(a, b) => Err(unsupported(format!(
                "{what}: minKernel {min} is above {a}.{b}, the oldest kernel this filter is compiled for"
            ))),
        }
    }
}

/// Whether an entry applies to `target`: its `includes` all hold and none
/// of its `excludes` does (docker's `setupSeccomp`).
fn applies(e: &Entry, target: &Target, what: &str) -> Result<bool, ProfileError> {
    let has_cap = |c: &String| target.caps.contains(c);
    let arch = target.arch.name;
    if let Some(x) = &e.excludes {
        if x.arches.as_ref().is_some_and(|a| a.iter().any(|a| a == arch))
            || x.caps.as_ref().is_some_and(|c| c.iter().any(has_cap))
        {
            return Ok(false);
        }
        if let Some(min) = &x.min_kernel
            && target.kernel.at_least(min, what)?
        {
            return Ok(false);
        }
    }
    if let Some(i) = &e.includes {
        if i.arches.as_ref().is_some_and(|a| !a.is_empty() && !a.iter().any(|a| a == arch))
            || i.caps.as_ref().is_some_and(|c| !c.iter().all(has_cap))
        {
            return Ok(false);
        }
        if let Some(min) = &i.min_kernel
            && !target.kernel.at_least(min, what)?
        {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Parses `json` and compiles it for `target`.
pub fn compile(json: &str, target: &Target) -> Result<Compiled, ProfileError> {
    let (rules, default, skipped) = resolve(json, target)?;
    let program = emit(target.arch, &rules, default)?;
    Ok(Compiled { program, skipped })
}

/// The capabilities a profile's `includes` and `excludes` name, sorted:
/// the only ones of a job's a filter compiled from it depends on.
// Called by build.rs (and the tests), not by the runner.
#[cfg_attr(not(test), allow(dead_code))]
pub fn caps_named(json: &str) -> Result<Vec<String>, ProfileError> {
    let profile: Profile = serde_json::from_str(json).map_err(ProfileError::Json)?;
    let mut caps: Vec<String> = profile
        .syscalls
        .iter()
        .flatten()
        .flat_map(|e| [&e.includes, &e.excludes])
        .flatten()
        .flat_map(|f| f.caps.iter().flatten().cloned())
        .collect();
    caps.sort();
    caps.dedup();
    Ok(caps)
}

/// A syscall's rules, by number; the default action; the names skipped.
type Resolved = (BTreeMap<u32, Vec<Rule>>, u32, Vec<String>);

/// The profile's entries that apply to `target`, as rules by syscall number.
fn resolve(json: &str, target: &Target) -> Result<Resolved, ProfileError> {
    let profile: Profile = serde_json::from_str(json).map_err(ProfileError::Json)?;
    if profile.flags.as_ref().is_some_and(|f| !f.is_empty()) {
        return Err(unsupported("\"flags\" are not supported; leave them out".into()));
    }
    if profile.listener_path.is_some() || profile.listener_metadata.is_some() {
        return Err(unsupported(
            "\"listenerPath\" is not supported: a job has no seccomp notify listener; leave it out".into(),
        ));
    }
    if profile.architectures.as_ref().is_some_and(|a| !a.is_empty())
        && profile.arch_map.as_ref().is_some_and(|a| !a.is_empty())
    {
        return Err(unsupported("give \"architectures\" or \"archMap\", not both".into()));
    }
    let default = ret_value(profile.default_action, profile.default_errno_ret, "defaultAction")?;

    let numbers = target.arch.numbers();
    let mut rules: BTreeMap<u32, Vec<Rule>> = BTreeMap::new();
    let mut skipped = Vec::new();
    for (i, e) in profile.syscalls.iter().flatten().enumerate() {
        let what = format!("syscalls[{i}]");
        let names: Vec<&String> = match (&e.names, &e.name) {
            (Some(_), Some(_)) => return Err(unsupported(format!("{what}: give \"names\" or \"name\", not both"))),
            (Some(n), None) => n.iter().collect(),
            (None, Some(n)) => vec![n],
            (None, None) => return Err(unsupported(format!("{what}: no \"names\""))),
        };
        let action = ret_value(e.action, e.errno_ret, &what)?;
        let mut conds = Vec::new();
        for a in e.args.iter().flatten() {
            let index = u8::try_from(a.index)
                .ok()
                .filter(|i| *i < 6)
                .ok_or_else(|| unsupported(format!("{what}: argument index {} is not 0 to 5", a.index)))?;
            conds.push(Cond { index, op: a.op, value: a.value, value_two: a.value_two });
        }
        // Checked whether or not it applies here: a profile is valid or
        // not whatever the machine.
        if !applies(e, target, &what)? {
            continue;
        }
        for name in names {
            match numbers.get(name) {
                Some(nr) => rules.entry(nr).or_default().push(Rule { conds: conds.clone(), action }),
                None => skipped.push(name.clone()),
            }
        }
    }
    skipped.sort();
    skipped.dedup();
    Ok((rules, default, skipped))
}

/// What a range of syscall numbers gets: a return value, or one syscall's
/// rules (their conditions first, then the default).
enum Outcome<'a> {
    Ret(u32),
    Rules(&'a [Rule]),
}

/// The filter: the architecture checked (any other ABI kills the process),
/// then a binary search over ranges of syscall numbers that share an
/// outcome, so a syscall costs a dozen instructions however long the
/// allowlist is.
fn emit(arch: &Arch, rules: &BTreeMap<u32, Vec<Rule>>, default: u32) -> Result<Vec<Insn>, ProfileError> {
    // Numbers above every one the profile names: ENOSYS unless the default
    // allows anyway.
    let above = match default {
        _ if rules.is_empty() => default,
        bpf::RET_ALLOW | bpf::RET_LOG => default,
        _ => bpf::RET_ERRNO | ENOSYS,
    };
    let mut ranges: Vec<(u32, Outcome)> = Vec::new();
    let mut next = 0u32;
    for (&nr, chain) in rules {
        if nr > next {
            ranges.push((next, Outcome::Ret(default)));
        }
        let outcome = match chain.first() {
            Some(r) if r.conds.is_empty() => Outcome::Ret(r.action),
            _ => Outcome::Rules(chain),
        };
        ranges.push((nr, outcome));
        next = nr + 1;
    }
    ranges.push((next, Outcome::Ret(above)));
    // Neighbours with the same return value become one range.
    ranges.dedup_by(|b, a| matches!((&a.1, &b.1), (Outcome::Ret(x), Outcome::Ret(y)) if x == y));

    let mut e = Emitter::default();
    let search = emit_search(&mut e, &ranges, default);
    let start = if arch.x32_bit {
        let kill = e.ret(bpf::RET_KILL_PROCESS);
        e.jump(bpf::JMP_JGE_K, X32_SYSCALL_BIT, kill, search)
    } else {
        search
    };
    e.fall_through_to(start);
    let load_nr = e.stmt(bpf::LD_W_ABS, bpf::OFFSET_NR);
    let kill = e.ret(bpf::RET_KILL_PROCESS);
    e.jump(bpf::JMP_JEQ_K, arch.audit, load_nr, kill);
    e.stmt(bpf::LD_W_ABS, bpf::OFFSET_ARCH);
    if e.len() > bpf::MAX_INSNS {
        return Err(ProfileError::TooLong(e.len()));
    }
    Ok(e.finish())
}

/// The search over `ranges` (sorted by start, the first starting at 0),
/// with the syscall number in A. Returns its entry.
fn emit_search(e: &mut Emitter, ranges: &[(u32, Outcome)], default: u32) -> Label {
    if let [(_, outcome)] = ranges {
        return match outcome {
            Outcome::Ret(v) => e.ret(*v),
            Outcome::Rules(rules) => emit_rules(e, rules, default),
        };
    }
    let mid = ranges.len() / 2;
    let upper = emit_search(e, &ranges[mid..], default);
    let lower = emit_search(e, &ranges[..mid], default);
    e.jump(bpf::JMP_JGE_K, ranges[mid].0, upper, lower)
}

/// One syscall's rules in order, the first that holds deciding; the
/// default if none does. Rules after an unconditional one never run.
fn emit_rules(e: &mut Emitter, rules: &[Rule], default: u32) -> Label {
    let upto = rules.iter().position(|r| r.conds.is_empty()).map_or(rules.len(), |p| p + 1);
    let mut next = e.ret(default);
    for rule in rules[..upto].iter().rev() {
        let pass = e.ret(rule.action);
        next = rule.conds.iter().rev().fold(pass, |pass, c| emit_cond(e, c, pass, next));
    }
    next
}

/// One 64-bit argument test, as two 32-bit ones: the high words decide
/// unless they are equal, then the low words do.
fn emit_cond(e: &mut Emitter, c: &Cond, pass: Label, fail: Label) -> Label {
    let (hi, lo) = ((c.value >> 32) as u32, c.value as u32);
    let (hi_off, lo_off) = (bpf::arg_offset(c.index, true), bpf::arg_offset(c.index, false));
    match c.op {
        Op::Eq | Op::Ne => {
            let (pass, fail) = if c.op == Op::Eq { (pass, fail) } else { (fail, pass) };
            e.jump(bpf::JMP_JEQ_K, lo, pass, fail);
            let load_lo = e.stmt(bpf::LD_W_ABS, lo_off);
            e.jump(bpf::JMP_JEQ_K, hi, load_lo, fail);
            e.stmt(bpf::LD_W_ABS, hi_off)
        }
        Op::MaskedEq => {
            let (mhi, mlo) = ((c.value >> 32) as u32, c.value as u32);
            let (dhi, dlo) = ((c.value_two >> 32) as u32, c.value_two as u32);
            e.jump(bpf::JMP_JEQ_K, dlo, pass, fail);
            e.stmt(bpf::ALU_AND_K, mlo);
            let load_lo = e.stmt(bpf::LD_W_ABS, lo_off);
            e.jump(bpf::JMP_JEQ_K, dhi, load_lo, fail);
            e.stmt(bpf::ALU_AND_K, mhi);
            e.stmt(bpf::LD_W_ABS, hi_off)
        }
        // LT is "not GE", LE "not GT": the same code, the outcomes swapped.
        Op::Gt | Op::Ge | Op::Lt | Op::Le => {
            let (pass, fail) = if matches!(c.op, Op::Gt | Op::Ge) { (pass, fail) } else { (fail, pass) };
            let low_op = if matches!(c.op, Op::Gt | Op::Le) { bpf::JMP_JGT_K } else { bpf::JMP_JGE_K };
            e.jump(low_op, lo, pass, fail);
            let load_lo = e.stmt(bpf::LD_W_ABS, lo_off);
            let equal = e.jump(bpf::JMP_JEQ_K, hi, load_lo, fail);
            e.jump(bpf::JMP_JGT_K, hi, pass, equal);
            e.stmt(bpf::LD_W_ABS, hi_off)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::syscalls::{ARCH_AARCH64, ARCH_X86_64};
    use super::*;

    fn target<'a>(arch: &'a Arch, caps: &'a [String]) -> Target<'a> {
        Target { arch, caps, kernel: Kernel::Running(6, 1) }
    }

    /// What the rules say, read directly: the model the filter must match.
    fn reference(rules: &BTreeMap<u32, Vec<Rule>>, default: u32, arch: &Arch, nr: u32, args: [u64; 6]) -> u32 {
        if arch.x32_bit && nr >= X32_SYSCALL_BIT {
            return bpf::RET_KILL_PROCESS;
        }
        let max = rules.keys().max().copied();
        let holds = |c: &Cond| {
            let a = args[usize::from(c.index)];
            match c.op {
                Op::Eq => a == c.value,
                Op::Ne => a != c.value,
                Op::Lt => a < c.value,
                Op::Le => a <= c.value,
                Op::Gt => a > c.value,
                Op::Ge => a >= c.value,
                Op::MaskedEq => a & c.value == c.value_two,
            }
        };
        match rules.get(&nr) {
            Some(chain) => chain.iter().find(|r| r.conds.iter().all(holds)).map_or(default, |r| r.action),
            None if max.is_some_and(|m| nr > m) && !matches!(default, bpf::RET_ALLOW | bpf::RET_LOG) => {
                bpf::RET_ERRNO | ENOSYS
            }
            None => default,
        }
    }

    /// Runs the compiled filter against the reference on every syscall
    /// number the profile names (and its neighbours), with argument values
    /// around each one a condition tests.
    fn check_against_reference(json: &str, arch: &Arch) {
        let t = target(arch, &[]);
        let (rules, default, _) = resolve(json, &t).unwrap();
        let prog = emit(arch, &rules, default).unwrap();
        let mut values = vec![0u64, 1, u64::MAX, 1 << 32, (1 << 32) - 1, 0xffff_ffff_0000_0000];
        for chain in rules.values() {
            for c in chain.iter().flat_map(|r| &r.conds) {
                for v in [c.value, c.value_two] {
                    values.extend([v, v.wrapping_sub(1), v.wrapping_add(1), v ^ (1 << 40), v | (1 << 63)]);
                }
            }
        }
        let mut numbers: Vec<u32> = (0..600).collect();
        numbers.extend([X32_SYSCALL_BIT, X32_SYSCALL_BIT + 1, u32::MAX]);
        for &nr in &numbers {
            let arg_sets: Vec<[u64; 6]> = if rules.get(&nr).is_some_and(|c| c.iter().any(|r| !r.conds.is_empty())) {
                values
                    .iter()
                    .flat_map(|&v| {
                        (0..6).map(move |i| {
                            let mut a = [0; 6];
                            a[i] = v;
                            a
                        })
                    })
                    .collect()
            } else {
                vec![[0; 6]]
            };
            for args in arg_sets {
                assert_eq!(
                    bpf::run(&prog, arch.audit, nr, args),
                    reference(&rules, default, arch, nr, args),
                    "nr {nr} args {args:x?}"
                );
            }
        }
        // Any other ABI dies.
        assert_eq!(bpf::run(&prog, 0x4000_0003, 0, [0; 6]), bpf::RET_KILL_PROCESS);
    }

    #[test]
    fn every_comparison_on_64_bits() {
        let json = r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
            {"names": ["read"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 4294967301, "op": "SCMP_CMP_EQ"}]},
            {"names": ["read"], "action": "SCMP_ACT_LOG", "args": [{"index": 1, "value": 7, "op": "SCMP_CMP_NE"},
                                                                   {"index": 2, "value": 8589934592, "op": "SCMP_CMP_LT"}]},
            {"names": ["write"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 5, "value": 4294967296, "op": "SCMP_CMP_LE"}]},
            {"names": ["write"], "action": "SCMP_ACT_TRAP", "args": [{"index": 3, "value": 100, "op": "SCMP_CMP_GT"}]},
            {"names": ["close"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 4, "value": 12884901890, "op": "SCMP_CMP_GE"}]},
            {"names": ["clone"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 18446744069414649856, "valueTwo": 4294967296, "op": "SCMP_CMP_MASKED_EQ"}]},
            {"names": ["clone"], "action": "SCMP_ACT_KILL", "args": [{"index": 0, "value": 2114060288, "op": "SCMP_CMP_MASKED_EQ"}]},
            {"names": ["getpid", "gettid", "mkdir"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["mkdir"], "action": "SCMP_ACT_KILL_PROCESS"},
            {"names": ["openat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}
        ]}"#;
        check_against_reference(json, &ARCH_X86_64);
        check_against_reference(json, &ARCH_AARCH64);
    }

    #[test]
    fn docker_default_matches_the_reference() {
        let json = include_str!("docker-default.json");
        check_against_reference(json, &ARCH_X86_64);
        check_against_reference(json, &ARCH_AARCH64);
    }

    #[test]
    fn a_denylist_allows_the_rest() {
        let json = r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]}"#;
        let prog = compile(json, &target(&ARCH_X86_64, &[])).unwrap().program;
        let run = |name: &str| bpf::run(&prog, ARCH_X86_64.audit, ARCH_X86_64.number(name).unwrap(), [0; 6]);
        assert_eq!(run("mkdir"), bpf::RET_ERRNO | EPERM);
        assert_eq!(run("mkdirat"), bpf::RET_ERRNO | EPERM);
        assert_eq!(run("read"), bpf::RET_ALLOW);
        assert_eq!(run("mseal"), bpf::RET_ALLOW);
        check_against_reference(json, &ARCH_X86_64);
    }

    #[test]
    fn a_syscall_above_every_named_one_gets_enosys() {
        let json = r#"{"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 13,
            "syscalls": [{"names": ["read", "clone3"], "action": "SCMP_ACT_ALLOW"}]}"#;
        let prog = compile(json, &target(&ARCH_X86_64, &[])).unwrap().program;
        assert_eq!(bpf::run(&prog, ARCH_X86_64.audit, 1, [0; 6]), bpf::RET_ERRNO | 13);
        assert_eq!(bpf::run(&prog, ARCH_X86_64.audit, 435, [0; 6]), bpf::RET_ALLOW);
        assert_eq!(bpf::run(&prog, ARCH_X86_64.audit, 436, [0; 6]), bpf::RET_ERRNO | ENOSYS);
        let empty = compile(r#"{"defaultAction": "SCMP_ACT_ERRNO"}"#, &target(&ARCH_X86_64, &[])).unwrap();
        assert_eq!(bpf::run(&empty.program, ARCH_X86_64.audit, 500, [0; 6]), bpf::RET_ERRNO | EPERM);
    }

    #[test]
    fn includes_and_excludes_follow_docker() {
        let json = r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
            {"names": ["mount"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN", "CAP_CHOWN"]}},
            {"names": ["chroot"], "action": "SCMP_ACT_ALLOW", "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
            {"names": ["arch_prctl"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["amd64", "x32"]}},
            {"names": ["ptrace"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "6.2"}},
            {"names": ["chown32", "chown"], "action": "SCMP_ACT_ALLOW"}
        ]}"#;
        let allowed = |arch: &Arch, caps: &[&str], name: &str| {
            let caps: Vec<String> = caps.iter().map(|c| c.to_string()).collect();
            let c = compile(json, &target(arch, &caps)).unwrap();
            bpf::run(&c.program, arch.audit, arch.number(name).unwrap(), [0; 6]) == bpf::RET_ALLOW
        };
        let x86 = &ARCH_X86_64;
        assert!(allowed(x86, &["CAP_SYS_ADMIN", "CAP_CHOWN"], "mount"));
        assert!(!allowed(x86, &["CAP_SYS_ADMIN"], "mount"));
        assert!(allowed(x86, &[], "chroot") && !allowed(x86, &["CAP_SYS_ADMIN"], "chroot"));
        assert!(allowed(x86, &[], "arch_prctl"));
        // Running(6, 1) is below 6.2.
        assert!(!allowed(x86, &[], "ptrace"));
        let c = compile(json, &target(x86, &[])).unwrap();
        assert_eq!(c.skipped, vec!["chown32".to_string()]);
        assert_eq!(caps_named(json).unwrap(), ["CAP_CHOWN", "CAP_SYS_ADMIN"]);
        // At build time a minKernel the oldest kernel may not meet is an error.
        let t = Target { arch: x86, caps: &[], kernel: OLDEST_KERNEL };
        assert!(matches!(compile(json, &t), Err(ProfileError::Unsupported(m)) if m.contains("minKernel 6.2")));
    }

    #[test]
    fn bad_profiles_say_what_is_wrong() {
        let t = target(&ARCH_X86_64, &[]);
        let err = |json: &str| compile(json, &t).expect_err(json).to_string();
        let e = err(r#"{"defaultAction": "SCMP_ACT_ERRNO", "sycalls": []}"#);
        assert!(e.contains("unknown field `sycalls`") && e.contains("line 1"), "{e}");
        let e =
            err(r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALOW"}]}"#);
        assert!(e.contains("SCMP_ACT_ALOW"), "{e}");
        let e = err(
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_NOTIFY"}]}"#,
        );
        assert!(e.contains("syscalls[0]") && e.contains("listener"), "{e}");
        let e = err(
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW", "errnoRet": 1}]}"#,
        );
        assert!(e.contains("only for SCMP_ACT_ERRNO"), "{e}");
        let e =
            err(r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO",
                "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]}"#);
        assert!(e.contains("index 6"), "{e}");
        let e = err(r#"{"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_LOG"]}"#);
        assert!(e.contains("flags"), "{e}");
        let e = err(r#"{"syscalls": []}"#);
        assert!(e.contains("defaultAction"), "{e}");
        let e = err("not json");
        assert!(e.starts_with("not a seccomp profile"), "{e}");
    }
}

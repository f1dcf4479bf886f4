//! Compiling a policy: seccompiler compiles the rules of each syscall that
//! has conditions, `dispatch` lays all syscalls out as a search tree over
//! their numbers, and every "no rule matched" becomes the return the
//! delivery asks for, so the supervisor learns which call it was.
//!
//! seccompiler is given each syscall's rules with the mismatch action
//! replaced by a sentinel errno no rule produces, so the returns to rewrite
//! are exactly those returning the sentinel. The program starts with
//! seccompiler's own architecture check, which kills 32-bit (`int 0x80`)
//! entries outright: the rest of the program compares x86_64 numbers, which
//! mean other calls there, and no tier allows a 32-bit call. x32 calls pass
//! that check (they carry the x86_64 token), fall outside every number the
//! tree knows because of their number bit, and so are notified and named
//! like any other violation.

use std::collections::BTreeMap;

use serde_json::json;

use super::arch::{self, AUDIT_ARCH_X86_64};
use super::bpf::{BPF_CLASS_MASK, BPF_JA, BPF_JEQ_K, BPF_LD_W_ABS, BPF_RET_K, insn, same};
use super::dispatch::{self, Leaf};
use super::error::TierError;
use super::filter::CompiledFilter;
use super::policy::SeccompPolicy;

/// How a violation reaches its end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// `SECCOMP_RET_USER_NOTIF`: the supervisor, holding the listener,
    /// names the call and then kills or denies as the policy says. Install
    /// with `SECCOMP_FILTER_FLAG_NEW_LISTENER`.
    Notify,
    /// The policy's own action, in the kernel, without a listener; the
    /// call cannot be named (a kill shows only as SIGSYS). For hosts
    /// without user notification, and for tests.
    Direct,
}

/// The sentinel's errno. Any value would do: tiers match only with `allow`
/// and the architecture check returns a kill, so a return of the sentinel
/// can only be a mismatch. The largest errno stands out in a dump.
const SENTINEL_ERRNO: u32 = 4095;
const SENTINEL: u32 = libc::SECCOMP_RET_ERRNO | SENTINEL_ERRNO;

const SECCOMP_DATA_NR_OFFSET: u32 = 0;
const SECCOMP_DATA_ARCH_OFFSET: u32 = 4;

/// seccompiler's architecture check and syscall number load, which every
/// program it builds starts with; ours too.
const HEAD: [libc::sock_filter; 4] = [
    insn(BPF_LD_W_ABS, 0, 0, SECCOMP_DATA_ARCH_OFFSET),
    insn(BPF_JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
    insn(BPF_RET_K, 0, 0, libc::SECCOMP_RET_KILL_PROCESS),
    insn(BPF_LD_W_ABS, 0, 0, SECCOMP_DATA_NR_OFFSET),
];

/// clone3 passes its flags in memory a filter cannot read, so it could
/// create namespaces unseen. Every tier answers it ENOSYS in the kernel,
/// which makes glibc fall back to clone, whose flags the policies check;
/// an ENOSYS is no violation and costs no round trip to the supervisor.
const CLONE3_NR: u32 = libc::SYS_clone3 as u32;
const ENOSYS: u32 = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;

/// Compiles `policy` for the host, delivering violations as `delivery`
/// says.
pub fn compile(policy: &SeccompPolicy, delivery: Delivery) -> Result<CompiledFilter, TierError> {
    let mismatch = match delivery {
        Delivery::Notify => libc::SECCOMP_RET_USER_NOTIF,
        Delivery::Direct => policy.violation().seccomp_ret(),
    };
    // seccompiler checks the whole document first, so a policy is accepted
    // exactly when seccompiler accepts it (its syscall table, its limits),
    // even where the tree below would not need it to.
    seccompiler::compile_from_json(
        policy.json_with_mismatch(json!({ "errno": SENTINEL_ERRNO })).as_slice(),
        arch::target()?,
    )
    .map_err(|source| TierError::Seccompiler { path: policy.path().to_owned(), source })?;
    let mut leaves: BTreeMap<u32, Leaf> = BTreeMap::new();
    let mut conditional: BTreeMap<i32, Vec<usize>> = BTreeMap::new();
    for rule in policy.rules() {
        if rule.conditions.is_empty() {
            leaves.insert(number(policy, rule.nr)?, Leaf::Return(libc::SECCOMP_RET_ALLOW));
        } else {
            conditional.entry(rule.nr).or_default().push(rule.number);
        }
    }
    for (nr, rules) in conditional {
        leaves.insert(number(policy, nr)?, Leaf::Chain(chain(policy, nr, &rules, mismatch)?));
    }
    // The policy cannot list clone3 (the loader refuses it); ENOSYS wins
    // regardless.
    leaves.insert(CLONE3_NR, Leaf::Return(ENOSYS));

    let mut program = HEAD.to_vec();
    program.extend(dispatch::layout(&leaves, mismatch));
    if program.len() > CompiledFilter::MAX_LEN {
        return Err(TierError::Seccompiler {
            path: policy.path().to_owned(),
            source: seccompiler::Error::Backend(seccompiler::BackendError::FilterTooLarge(program.len())),
        });
    }
    Ok(CompiledFilter::new(program))
}

fn number(policy: &SeccompPolicy, nr: i32) -> Result<u32, TierError> {
    u32::try_from(nr).map_err(|_| unexpected(policy, format!("syscall number {nr} is negative")))
}

/// seccompiler's program for syscall `nr` with only `rules` (their numbers
/// in the file), without the head the whole program already ran: a
/// fragment entered with the number loaded, ending every path in a return.
fn chain(policy: &SeccompPolicy, nr: i32, rules: &[usize], mismatch: u32) -> Result<Vec<libc::sock_filter>, TierError> {
    let json = policy.json_of_rules(|n| rules.contains(&n), json!({ "errno": SENTINEL_ERRNO }));
    let program = seccompiler::compile_from_json(json.as_slice(), arch::target()?)
        .map_err(|source| TierError::Seccompiler { path: policy.path().to_owned(), source })?
        .into_values()
        .next()
        .ok_or_else(|| unexpected(policy, "seccompiler returned no program".to_owned()))?;
    let program: Vec<libc::sock_filter> = program.iter().map(|i| insn(i.code, i.jt, i.jf, i.k)).collect();
    let at = |message: String| unexpected(policy, format!("syscall {nr}: {message}"));

    if program.len() <= HEAD.len() || !program.iter().zip(&HEAD).all(|(a, b)| same(a, b)) {
        return Err(at("the program does not start with the x86_64 check and the number load".to_owned()));
    }
    let mut body = program[HEAD.len()..].to_vec();
    for (pc, instruction) in body.iter_mut().enumerate() {
        if instruction.code & BPF_CLASS_MASK == libc::BPF_RET as u16 {
            match (instruction.code, instruction.k) {
                (BPF_RET_K, libc::SECCOMP_RET_ALLOW) => {}
                (BPF_RET_K, SENTINEL) => instruction.k = mismatch,
                (code, k) => {
                    return Err(at(format!(
                        "instruction {pc} returns {k:#x} (code {code:#x}), which is neither allow nor the mismatch"
                    )));
                }
            }
        }
    }
    check_contained(&body).map_err(at)?;
    Ok(body)
}

/// Every jump lands inside `code` and its last instruction returns, so the
/// fragment can sit anywhere in a program.
fn check_contained(code: &[libc::sock_filter]) -> Result<(), String> {
    for (pc, i) in code.iter().enumerate() {
        if i.code & BPF_CLASS_MASK != libc::BPF_JMP as u16 {
            continue;
        }
        let targets = if i.code == BPF_JA { vec![u64::from(i.k)] } else { vec![u64::from(i.jt), u64::from(i.jf)] };
        for offset in targets {
            if pc as u64 + 1 + offset >= code.len() as u64 {
                return Err(format!("the jump at {pc} leaves the syscall's rules"));
            }
        }
    }
    match code.last() {
        Some(last) if last.code & BPF_CLASS_MASK == libc::BPF_RET as u16 => Ok(()),
        _ => Err("the rules do not end in a return".to_owned()),
    }
}

fn unexpected(policy: &SeccompPolicy, message: String) -> TierError {
    TierError::UnexpectedProgram { path: policy.path().to_owned(), message }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fragment_jumping_out_or_falling_off_is_refused() {
        let ret = insn(BPF_RET_K, 0, 0, 0);
        assert!(check_contained(&[insn(BPF_JEQ_K, 0, 1, 5), ret, ret]).is_ok());
        assert!(check_contained(&[insn(BPF_JEQ_K, 0, 2, 5), ret, ret]).is_err());
        assert!(check_contained(&[insn(BPF_JA, 0, 0, 1), ret]).is_err());
        assert!(check_contained(&[ret, insn(BPF_LD_W_ABS, 0, 0, 0)]).is_err());
        assert!(check_contained(&[]).is_err());
    }
}

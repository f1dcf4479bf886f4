//! Compiling a policy: seccompiler builds the program, then every "no rule
//! matched" return is rewritten so the supervisor learns which call it was.
//!
//! seccompiler is given the policy with its mismatch action replaced by a
//! sentinel errno no rule produces, so the returns to rewrite are exactly
//! those returning the sentinel. Its architecture check stays as it is and
//! still kills 32-bit (`int 0x80`) entries outright: the rest of the
//! program compares x86_64 numbers, which mean other calls there, and no
//! tier allows a 32-bit call. x32 calls pass that check (they carry the
//! x86_64 token), match no rule because of their number bit, and so are
//! notified and named like any other violation.

use serde_json::json;

use super::arch::{self, AUDIT_ARCH_X86_64};
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

const BPF_RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
const BPF_LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const BPF_JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const BPF_CLASS_MASK: u16 = 0x07;
const SECCOMP_DATA_ARCH_OFFSET: u32 = 4;

/// clone3 passes its flags in memory a filter cannot read, so it could
/// create namespaces unseen. Every tier answers it ENOSYS in the kernel,
/// which makes glibc fall back to clone, whose flags the policies check;
/// an ENOSYS is no violation and costs no round trip to the supervisor.
const CLONE3_NR: u32 = libc::SYS_clone3 as u32;

/// Compiles `policy` for the host, delivering violations as `delivery`
/// says.
pub fn compile(policy: &SeccompPolicy, delivery: Delivery) -> Result<CompiledFilter, TierError> {
    let path = policy.path();
    let target = arch::target()?;
    let json = policy.json_with_mismatch(json!({ "errno": SENTINEL_ERRNO }));
    let programs = seccompiler::compile_from_json(json.as_slice(), target)
        .map_err(|source| TierError::Seccompiler { path: path.to_owned(), source })?;
    let program = programs
        .into_values()
        .next()
        .ok_or_else(|| unexpected(policy, "seccompiler returned no program".to_owned()))?;
    let mismatch = match delivery {
        Delivery::Notify => libc::SECCOMP_RET_USER_NOTIF,
        Delivery::Direct => policy.violation().seccomp_ret(),
    };
    let instructions = rewrite(policy, &program, mismatch)?;
    if instructions.len() > CompiledFilter::MAX_LEN {
        return Err(TierError::Seccompiler {
            path: path.to_owned(),
            source: seccompiler::Error::Backend(seccompiler::BackendError::FilterTooLarge(instructions.len())),
        });
    }
    Ok(CompiledFilter::new(instructions))
}

fn rewrite(
    policy: &SeccompPolicy,
    program: &[seccompiler::sock_filter],
    mismatch: u32,
) -> Result<Vec<libc::sock_filter>, TierError> {
    let mut out: Vec<libc::sock_filter> = program.iter().map(|i| insn(i.code, i.jt, i.jf, i.k)).collect();

    let prologue = [
        insn(BPF_LD_W_ABS, 0, 0, SECCOMP_DATA_ARCH_OFFSET),
        insn(BPF_JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
        insn(BPF_RET_K, 0, 0, libc::SECCOMP_RET_KILL_PROCESS),
    ];
    if out.len() < prologue.len() || !out.iter().zip(&prologue).all(|(a, b)| same(a, b)) {
        return Err(unexpected(policy, "the program does not start with the x86_64 architecture check".to_owned()));
    }

    // The last instruction is reached only by falling through every
    // syscall comparison, with the syscall number still loaded; that is
    // where the clone3 answer goes.
    match out.pop() {
        Some(last) if same(&last, &insn(BPF_RET_K, 0, 0, SENTINEL)) => {}
        _ => {
            return Err(unexpected(policy, "the program does not end with the mismatch return".to_owned()));
        }
    }

    for (pc, instruction) in out.iter_mut().enumerate() {
        if instruction.code & BPF_CLASS_MASK != libc::BPF_RET as u16 {
            continue;
        }
        match (instruction.code, instruction.k) {
            (BPF_RET_K, libc::SECCOMP_RET_ALLOW) => {}
            (BPF_RET_K, libc::SECCOMP_RET_KILL_PROCESS) if pc == 2 => {}
            (BPF_RET_K, SENTINEL) => instruction.k = mismatch,
            (code, k) => {
                return Err(unexpected(
                    policy,
                    format!(
                        "instruction {pc} returns {k:#x} (code {code:#x}), which is neither allow nor the mismatch"
                    ),
                ));
            }
        }
    }

    out.extend([
        insn(BPF_JEQ_K, 0, 1, CLONE3_NR),
        insn(BPF_RET_K, 0, 0, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
        insn(BPF_RET_K, 0, 0, mismatch),
    ]);
    Ok(out)
}

fn insn(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

fn same(a: &libc::sock_filter, b: &libc::sock_filter) -> bool {
    (a.code, a.jt, a.jf, a.k) == (b.code, b.jt, b.jf, b.k)
}

fn unexpected(policy: &SeccompPolicy, message: String) -> TierError {
    TierError::UnexpectedProgram { path: policy.path().to_owned(), message }
}

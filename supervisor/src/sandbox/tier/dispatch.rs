//! Syscall dispatch laid out as a binary search over syscall numbers.
//!
//! seccompiler compares the loaded number with each syscall in turn, five
//! instructions per allowed call. The kernel pays for that length twice:
//! once per call not in its cache, and at install, when it emulates the
//! program for every syscall number to build that cache
//! (`seccomp_cache_prepare`). A 1188-instruction L1 program took 465 µs to
//! install on the reference host, half the sandbox's whole spawn cost. A
//! search tree reaches any number in about eight comparisons, and runs of
//! numbers with the same answer collapse into one range.
//!
//! The tree only compares the syscall number (`JGE K`), so the kernel can
//! still prove each unconditionally allowed call constant and cache it.

use std::collections::BTreeMap;

use super::bpf::{BPF_JA, BPF_JGE_K, BPF_RET_K, insn};

/// What the program does for one syscall number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Leaf {
    /// Return this value.
    Return(u32),
    /// Run this self-contained fragment, entered with the syscall number in
    /// the accumulator; each of its paths ends in a return and none jumps
    /// out of it.
    Chain(Vec<libc::sock_filter>),
}

/// A run of numbers from `start` up to the next segment's start.
#[derive(Debug)]
struct Segment<'a> {
    start: u32,
    leaf: LeafRef<'a>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LeafRef<'a> {
    Return(u32),
    Chain(&'a [libc::sock_filter]),
}

/// The dispatch code for `leaves` (syscall number to what it does), every
/// other number returning `otherwise`. It expects the syscall number in the
/// accumulator and ends every path in a return.
pub(super) fn layout(leaves: &BTreeMap<u32, Leaf>, otherwise: u32) -> Vec<libc::sock_filter> {
    emit(&segments(leaves, otherwise))
}

/// Cuts the whole `u32` range into segments, merging neighbours that
/// return the same value.
fn segments(leaves: &BTreeMap<u32, Leaf>, otherwise: u32) -> Vec<Segment<'_>> {
    fn push<'a>(out: &mut Vec<Segment<'a>>, start: u32, leaf: LeafRef<'a>) {
        match out.last() {
            Some(last) if matches!(leaf, LeafRef::Return(_)) && last.leaf == leaf => {}
            _ => out.push(Segment { start, leaf }),
        }
    }
    let mut out: Vec<Segment<'_>> = Vec::new();
    let mut next = 0u32;
    for (nr, leaf) in leaves {
        if *nr > next {
            push(&mut out, next, LeafRef::Return(otherwise));
        }
        let leaf = match leaf {
            Leaf::Return(k) => LeafRef::Return(*k),
            Leaf::Chain(code) => LeafRef::Chain(code),
        };
        push(&mut out, *nr, leaf);
        match nr.checked_add(1) {
            Some(n) => next = n,
            None => return out,
        }
    }
    push(&mut out, next, LeafRef::Return(otherwise));
    out
}

fn emit(segments: &[Segment<'_>]) -> Vec<libc::sock_filter> {
    match segments {
        // Not reached: segments cover the whole range and a split leaves
        // both halves non-empty. Killing is the safe answer regardless.
        [] => vec![insn(BPF_RET_K, 0, 0, libc::SECCOMP_RET_KILL_PROCESS)],
        [only] => match only.leaf {
            LeafRef::Return(k) => vec![insn(BPF_RET_K, 0, 0, k)],
            LeafRef::Chain(code) => code.to_vec(),
        },
        _ => {
            let mid = segments.len() / 2;
            let below = emit(&segments[..mid]);
            let above = emit(&segments[mid..]);
            let pivot = segments[mid].start;
            let mut out = Vec::with_capacity(below.len() + above.len() + 2);
            match u8::try_from(below.len()) {
                Ok(skip) => out.push(insn(BPF_JGE_K, skip, 0, pivot)),
                Err(_) => {
                    // Too far for the 8-bit offset: jump over an unconditional
                    // jump, whose offset is 32 bits.
                    out.push(insn(BPF_JGE_K, 0, 1, pivot));
                    out.push(insn(BPF_JA, 0, 0, u32::try_from(below.len()).unwrap_or(u32::MAX)));
                }
            }
            out.extend(below);
            out.extend(above);
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::bpf::{BPF_JEQ_K, BPF_LD_W_ABS};
    use super::super::sim::{SeccompData, SimError, run};
    use super::*;

    const LD_NR: libc::sock_filter = insn(BPF_LD_W_ABS, 0, 0, 0);
    const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
    const DENY: u32 = libc::SECCOMP_RET_ERRNO | 1;

    fn program(leaves: &BTreeMap<u32, Leaf>, otherwise: u32) -> Vec<libc::sock_filter> {
        let mut p = vec![LD_NR];
        p.extend(layout(leaves, otherwise));
        p
    }

    fn answer(p: &[libc::sock_filter], nr: u32) -> Result<u32, SimError> {
        run(p, &SeccompData::new(0, nr as i32, [0; 6]))
    }

    #[test]
    fn every_number_gets_its_leaf_and_all_others_the_default() {
        let leaves: BTreeMap<u32, Leaf> = [0u32, 1, 2, 7, 9, 10, 200, 201, 450]
            .iter()
            .enumerate()
            .map(|(i, &nr)| (nr, Leaf::Return(if i % 3 == 2 { DENY + 1 } else { ALLOW })))
            .collect();
        let p = program(&leaves, DENY);
        for nr in (0..1000).chain([0x4000_0000, 0x4000_0001, u32::MAX - 1, u32::MAX]) {
            let want = leaves.get(&nr).map_or(DENY, |l| match l {
                Leaf::Return(k) => *k,
                Leaf::Chain(_) => unreachable!(),
            });
            assert_eq!(answer(&p, nr), Ok(want), "nr {nr}");
        }
    }

    #[test]
    fn runs_of_the_same_answer_cost_one_segment() {
        let leaves: BTreeMap<u32, Leaf> = (10..60).map(|nr| (nr, Leaf::Return(ALLOW))).collect();
        // [0,10) deny, [10,60) allow, [60,∞) deny: two comparisons, three returns.
        assert_eq!(layout(&leaves, DENY).len(), 5);
    }

    #[test]
    fn chains_are_entered_with_the_number_loaded() {
        // A chain that allows only when the number is 5, else returns 77.
        let chain = vec![insn(BPF_JEQ_K, 0, 1, 5), insn(BPF_RET_K, 0, 0, ALLOW), insn(BPF_RET_K, 0, 0, 77)];
        let p = program(&BTreeMap::from([(5, Leaf::Chain(chain.clone())), (6, Leaf::Chain(chain))]), DENY);
        assert_eq!(answer(&p, 5), Ok(ALLOW));
        assert_eq!(answer(&p, 6), Ok(77));
        assert_eq!(answer(&p, 4), Ok(DENY));
        assert_eq!(answer(&p, 7), Ok(DENY));
    }

    #[test]
    fn far_subtrees_are_reached_through_long_jumps() {
        // Chains long enough that a left subtree exceeds 255 instructions.
        let filler = |k: u32| {
            let mut c = vec![insn(BPF_JA, 0, 0, 0); 120];
            c.push(insn(BPF_RET_K, 0, 0, k));
            c
        };
        let leaves: BTreeMap<u32, Leaf> = (0..16).map(|i| (i * 2, Leaf::Chain(filler(1000 + i)))).collect();
        let p = program(&leaves, DENY);
        assert!(p.iter().any(|i| i.code == BPF_JA && i.k > 255), "a long jump is needed");
        for i in 0..16 {
            assert_eq!(answer(&p, i * 2), Ok(1000 + i));
            assert_eq!(answer(&p, i * 2 + 1), Ok(DENY));
        }
    }

    #[test]
    fn the_search_is_shallow() {
        // 300 scattered allowed numbers: any number is decided within
        // ceil(log2(segments)) comparisons.
        let leaves: BTreeMap<u32, Leaf> = (0..300).map(|i| (i * 3, Leaf::Return(ALLOW))).collect();
        let p = program(&leaves, DENY);
        let segments = segments(&leaves, DENY).len();
        let depth = usize::BITS - (segments - 1).leading_zeros();
        for nr in 0..1000 {
            let mut pc = 1;
            let mut steps = 0;
            while p[pc].code != BPF_RET_K {
                let i = p[pc];
                pc = match i.code {
                    BPF_JA => pc + 1 + i.k as usize,
                    _ => {
                        steps += 1;
                        pc + 1 + usize::from(if nr >= i.k { i.jt } else { i.jf })
                    }
                };
            }
            assert!(steps <= depth, "nr {nr}: {steps} comparisons, bound {depth}");
        }
        assert_eq!(answer(&p, 299 * 3), Ok(ALLOW));
    }

    #[test]
    fn the_last_number_is_a_leaf_like_any_other() {
        let p = program(&BTreeMap::from([(u32::MAX, Leaf::Return(ALLOW)), (0, Leaf::Return(ALLOW))]), DENY);
        assert_eq!(answer(&p, u32::MAX), Ok(ALLOW));
        assert_eq!(answer(&p, 0), Ok(ALLOW));
        assert_eq!(answer(&p, 1), Ok(DENY));
        assert_eq!(answer(&p, u32::MAX - 1), Ok(DENY));
    }
}

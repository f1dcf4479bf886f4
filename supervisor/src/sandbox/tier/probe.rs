//! Representative argument vectors for comparing filters on one syscall.
//!
//! A compiled filter only ever tests 32-bit words of an argument, against
//! constants taken from the policies' conditions: equal, greater (or
//! equal), or equal under a mask. So the arguments that matter are those
//! constants and their neighbours, and for masked tests the combinations of
//! mask bits. Per word this module builds values that realise every
//! outcome of that word's tests when a word is tested by equality and
//! order, or by equality and masks of at most [`MAX_ENUMERATED_BITS`] bits;
//! words are tested independently, so their product realises every
//! combination. Comparing two filters on these vectors is then exhaustive
//! for such policies (the shipped tiers are), not a sample.

use std::collections::{BTreeMap, BTreeSet};

use super::policy::{ArgLen, CmpOp, SeccompPolicy};

/// Masks with more bits than this get single-bit flips instead of every
/// combination.
pub const MAX_ENUMERATED_BITS: u32 = 12;

/// More vectors than this for one syscall means a policy too intricate to
/// compare at load time.
pub const MAX_VECTORS: usize = 1 << 20;

/// One 32-bit half of an argument: (argument index, high half).
type Word = (u8, bool);

#[derive(Default)]
struct WordTests {
    equal: BTreeSet<u32>,
    ordered: BTreeSet<u32>,
    masked: BTreeSet<(u32, u32)>,
}

/// The argument vectors on which filters built from `policies` must be
/// compared for syscall `nr`, or the count when it exceeds
/// [`MAX_VECTORS`].
pub fn argument_vectors(nr: i32, policies: &[&SeccompPolicy]) -> Result<Vec<[u64; 6]>, usize> {
    let mut tests: BTreeMap<Word, WordTests> = BTreeMap::new();
    let conditions = policies.iter().flat_map(|p| p.rules()).filter(|r| r.nr == nr).flat_map(|r| &r.conditions);
    for condition in conditions {
        let halves: &[bool] = match condition.len {
            ArgLen::Dword => &[false],
            ArgLen::Qword => &[false, true],
        };
        for &high in halves {
            let word = |v: u64| if high { (v >> 32) as u32 } else { v as u32 };
            let entry = tests.entry((condition.index, high)).or_default();
            match condition.op {
                CmpOp::Eq | CmpOp::Ne => {
                    entry.equal.insert(word(condition.value));
                }
                CmpOp::Ge | CmpOp::Gt | CmpOp::Le | CmpOp::Lt => {
                    entry.ordered.insert(word(condition.value));
                }
                CmpOp::MaskedEq(mask) => {
                    entry.masked.insert((word(mask), word(condition.value & mask)));
                }
            }
        }
    }

    let choices: Vec<(Word, Vec<u32>)> =
        tests.into_iter().map(|(word, t)| (word, representatives(&t).into_iter().collect())).collect();
    let count = choices.iter().try_fold(1usize, |n, (_, values)| n.checked_mul(values.len())).unwrap_or(usize::MAX);
    if count > MAX_VECTORS {
        return Err(count);
    }

    let mut vectors = vec![[0u64; 6]];
    if choices.is_empty() {
        // Nothing tests the arguments; still vary them, so a filter that
        // did test them would show up.
        vectors.push([u64::MAX; 6]);
    }
    for ((index, high), values) in &choices {
        let shift = if *high { 32 } else { 0 };
        vectors = vectors
            .iter()
            .flat_map(|base| {
                values.iter().map(move |&v| {
                    let mut args = *base;
                    // Parsing keeps indices within 0-5; `get_mut` keeps that
                    // assumption from ever turning into a panic.
                    if let Some(slot) = args.get_mut(usize::from(*index)) {
                        *slot = (*slot & !(u64::from(u32::MAX) << shift)) | (u64::from(v) << shift);
                    }
                    args
                })
            })
            .collect();
    }
    Ok(vectors)
}

fn representatives(tests: &WordTests) -> BTreeSet<u32> {
    let mut values: BTreeSet<u32> = [0, 1, u32::MAX].into();
    let constants: Vec<u32> = tests.equal.iter().chain(&tests.ordered).copied().collect();
    for &c in &constants {
        values.extend([c.wrapping_sub(1), c, c.wrapping_add(1)]);
    }
    let bits = tests.masked.iter().fold(0u32, |all, (mask, _)| all | mask);
    if bits == 0 {
        return values;
    }
    if bits.count_ones() <= MAX_ENUMERATED_BITS {
        // Other bits: none, all, and the lowest and highest alone, so a
        // combination also appears once not equal to any constant.
        let free = !bits;
        let fillers = [0, free, free & free.wrapping_neg(), highest_bit(free)];
        let mut subset = 0u32;
        loop {
            values.extend(fillers.iter().map(|f| subset | f));
            values.extend(constants.iter().map(|c| (c & free) | subset));
            if subset == bits {
                break;
            }
            subset = subset.wrapping_sub(bits) & bits;
        }
    } else {
        for &(mask, value) in &tests.masked {
            values.extend([value, value | !mask, mask]);
            values.extend((0..32).map(|b| 1u32 << b).filter(|b| mask & b != 0).map(|b| value ^ b));
        }
    }
    values
}

fn highest_bit(v: u32) -> u32 {
    match v {
        0 => 0,
        _ => 1 << (31 - v.leading_zeros()),
    }
}

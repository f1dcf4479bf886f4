//! Tier fit: from the calls a learning pass recorded (and the binary's
//! memory writable and executable from exec), the tightest tier that lets
//! the plugin run, and for each tighter tier what it would deny. Pure: tiers,
//! calls and the binary's one fact in, verdict out.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::sandbox::tier::sim::{self, SeccompData};
use crate::sandbox::tier::{CompiledFilter, TierSet, syscall_name};

/// The tiers, tightest first, each with the program it installs and whether it
/// refuses a binary with memory writable and executable from exec.
#[derive(Clone, Debug)]
pub struct TierOrder {
    tiers: Vec<(String, CompiledFilter, bool)>,
    /// Each tier's `tighter_than`: the tier it was proven tighter than.
    looser: BTreeMap<String, String>,
}

impl TierOrder {
    /// Orders `set` by its `tighter_than` chain: a tier is tighter the more
    /// tiers it was proven tighter than, transitively (L3, L2, L1); tiers
    /// as deep as each other come by name.
    pub fn of(set: &TierSet) -> Self {
        let looser: BTreeMap<String, String> =
            set.iter().filter_map(|t| Some((t.name.clone(), t.tighter_than.clone()?))).collect();
        let depth = |name: &str| chain(name, |t| looser.get(t).map(String::as_str)).len() - 1;
        let mut tiers: Vec<(usize, String, CompiledFilter, bool)> = set
            .iter()
            .map(|t| (depth(&t.name), t.name.clone(), t.program.clone(), t.forbids_writable_exec()))
            .collect();
        tiers.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        Self { tiers: tiers.into_iter().map(|(_, name, program, wx)| (name, program, wx)).collect(), looser }
    }

    /// The tier names, tightest first.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tiers.iter().map(|(n, ..)| n.as_str())
    }

    /// Whether `tier` refuses a binary whose memory from exec is writable and executable.
    pub fn forbids_writable_exec(&self, tier: &str) -> bool {
        self.tiers.iter().any(|(name, _, forbids)| name == tier && *forbids)
    }

    /// The tightest tier that takes a binary whose memory from exec is writable and
    /// executable.
    pub fn tightest_allowing_writable_exec(&self) -> Option<&str> {
        self.tiers.iter().find(|(.., forbids)| !forbids).map(|(name, ..)| name.as_str())
    }

    /// The loosest tier proven looser than `fits` (up its `tighter_than` chain), which
    /// therefore allows every call `fits` does; with `writable_exec`, the loosest there that
    /// takes a binary with memory writable and executable from exec. `fits` itself when
    /// none is. A tier off the chain (another root of an operator's set) is never proven
    /// to allow anything `fits` does, so it is never picked.
    pub fn loosest_above(&self, fits: &str, writable_exec: bool) -> String {
        loosest_on_chain(
            fits,
            |tier| self.looser.get(tier).map(String::as_str),
            |tier| !writable_exec || !self.forbids_writable_exec(tier),
        )
        .to_owned()
    }

    /// For each tier (tightest first), whether it denies `call`: its
    /// program would not let it through (a notification, a kill, an errno
    /// other than the ENOSYS every tier answers clone3 with and the
    /// learning filter answers itself).
    pub fn denials(&self, call: &SeccompData) -> Vec<bool> {
        self.tiers
            .iter()
            .map(|(_, program, _)| {
                !matches!(sim::run(program.instructions(), call), Ok(ret) if sim::action(ret) == libc::SECCOMP_RET_ALLOW)
            })
            .collect()
    }
}

/// One distinct call a learning pass saw, and how often.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordedCall {
    pub data: SeccompData,
    pub count: u64,
}

/// A syscall the plugin made, with how many times.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SyscallCount {
    pub name: String,
    pub count: u64,
}

/// What a tighter tier than the fit would deny.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TierDenial {
    pub tier: String,
    /// The recorded syscalls it denies (for some or all of the arguments
    /// they were made with), by name; and, when it refuses the binary at start
    /// for its memory writable and executable from exec, that ([`writable_exec`]).
    pub denied: Vec<String>,
}

/// How a tier's refusal of a binary with memory writable and executable from exec
/// (`what`: an executable stack, an RWX segment) is listed among what it denies.
pub fn writable_exec(what: &str) -> String {
    format!("memory writable and executable from exec ({what})")
}

/// The verdict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TierFit {
    /// Every syscall recorded, by name.
    pub recorded: Vec<SyscallCount>,
    /// The tightest tier allowing every recorded call; `None` when not even
    /// the loosest does (the plugin fits only `tier = "none"`).
    pub tightest: Option<String>,
    /// Each tier tighter than `tightest`, tightest first.
    pub tighter: Vec<TierDenial>,
}

impl TierFit {
    /// The recorded syscalls `tier` would deny; empty when it covers them,
    /// `None` when the tier is unknown.
    pub fn denied_by(&self, tier: &str) -> Option<&[String]> {
        if self.tightest.as_deref() == Some(tier) {
            return Some(&[]);
        }
        match self.tighter.iter().find(|d| d.tier == tier) {
            Some(d) => Some(&d.denied),
            // Looser than the fit: it covers them too.
            None => Some(&[]),
        }
    }
}

/// Why no verdict can be given.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FitError {
    #[error(
        "the learning pass recorded nothing: no syscall of the plugin was seen, so no tier can be judged (was the \
         learning filter installed?)"
    )]
    NothingRecorded,
    #[error("no tier is loaded to judge the recorded calls against")]
    NoTiers,
}

/// Judges `calls`, made by a binary whose memory from exec is writable and executable
/// when `wx` says how, against `order`. A tier refusing such a binary at start fits
/// no better than one that would kill it.
pub fn fit(order: &TierOrder, calls: &[RecordedCall], wx: Option<&str>) -> Result<TierFit, FitError> {
    if calls.is_empty() {
        return Err(FitError::NothingRecorded);
    }
    if order.tiers.is_empty() {
        return Err(FitError::NoTiers);
    }
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut denied: Vec<BTreeSet<String>> = vec![BTreeSet::new(); order.tiers.len()];
    for call in calls {
        let name = syscall_name(call.data.arch, call.data.nr);
        *counts.entry(name.clone()).or_default() += call.count;
        for (i, denies) in order.denials(&call.data).into_iter().enumerate() {
            if denies {
                denied[i].insert(name.clone());
            }
        }
    }
    if let Some(what) = wx {
        for (d, (_, _, forbids)) in denied.iter_mut().zip(&order.tiers) {
            if *forbids {
                d.insert(writable_exec(what));
            }
        }
    }
    // Tighter tiers allow less (the loader proves it), so the fit is the
    // first that denies nothing; looking from the loosest keeps a tier
    // that denies nothing below one that denies something from counting.
    let fits_from = denied.iter().rposition(|d| !d.is_empty()).map_or(0, |i| i + 1);
    let tightest = order.tiers.get(fits_from).map(|(n, ..)| n.clone());
    let tighter = order.tiers[..fits_from]
        .iter()
        .zip(denied)
        .map(|((tier, ..), d)| TierDenial { tier: tier.clone(), denied: d.into_iter().collect() })
        .collect();
    Ok(TierFit {
        recorded: counts.into_iter().map(|(name, count)| SyscallCount { name, count }).collect(),
        tightest,
        tighter,
    })
}

/// `from` and the tiers up its `tighter_than` chain (through `looser`), tightest first.
fn chain<'a>(from: &'a str, looser: impl Fn(&str) -> Option<&'a str>) -> Vec<&'a str> {
    let mut chain = vec![from];
    let mut at = from;
    // A loop is refused by the loader's proof; stopping at a tier seen only keeps a
    // broken set from spinning here.
    while let Some(next) = looser(at).filter(|n| !chain.contains(n)) {
        chain.push(next);
        at = next;
    }
    chain
}

/// The last tier up the chain from `from` (through `looser`) that is `usable`, or `from`.
pub(super) fn loosest_on_chain<'a>(
    from: &'a str,
    looser: impl Fn(&str) -> Option<&'a str>,
    usable: impl Fn(&str) -> bool,
) -> &'a str {
    chain(from, looser).into_iter().rev().find(|t| usable(t)).unwrap_or(from)
}

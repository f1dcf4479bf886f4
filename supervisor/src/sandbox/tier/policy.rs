//! A tier's seccomp policy as a model: its rules and conditions with the
//! meaning seccompiler compiles them to, its violation action, and the
//! document seccompiler compiles. Reading the JSON is `json.rs`'s concern.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use super::error::TierError;
use super::json;
use super::violation::ViolationAction;

/// The width of the argument a condition compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArgLen {
    /// The low 32 bits, as the kernel reads an `int` argument.
    Dword,
    /// All 64 bits: pointers, sizes, `unsigned long` flags.
    Qword,
}

/// A condition's comparison, as seccompiler's JSON spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CmpOp {
    /// `arg == val`
    Eq,
    /// `arg != val`
    Ne,
    /// `arg >= val` (unsigned)
    Ge,
    /// `arg > val` (unsigned)
    Gt,
    /// `arg <= val` (unsigned)
    Le,
    /// `arg < val` (unsigned)
    Lt,
    /// `arg & mask == val & mask`
    MaskedEq(u64),
}

/// One argument condition of a rule; all conditions of a rule must hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Condition {
    /// The argument, 0 to 5.
    pub index: u8,
    /// How much of the argument is compared.
    pub len: ArgLen,
    /// The comparison.
    pub op: CmpOp,
    /// The value compared against.
    pub value: u64,
}

impl Condition {
    /// Whether the condition holds for a call with arguments `args`, with
    /// the meaning seccompiler compiles it to.
    pub fn holds(&self, args: &[u64; 6]) -> bool {
        let width = match self.len {
            ArgLen::Dword => u64::from(u32::MAX),
            ArgLen::Qword => u64::MAX,
        };
        let arg = args[usize::from(self.index).min(5)] & width;
        let value = self.value & width;
        match self.op {
            CmpOp::Eq => arg == value,
            CmpOp::Ne => arg != value,
            CmpOp::Ge => arg >= value,
            CmpOp::Gt => arg > value,
            CmpOp::Le => arg <= value,
            CmpOp::Lt => arg < value,
            CmpOp::MaskedEq(mask) => arg & mask & width == value & mask & width,
        }
    }
}

/// One entry of the policy's `filter` list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Its position in `filter`, counting from 1, for messages.
    pub number: usize,
    /// The syscall's name as written.
    pub syscall: String,
    /// The syscall's x86_64 number.
    pub nr: i32,
    /// The conditions; empty means any arguments.
    pub conditions: Vec<Condition>,
}

impl Rule {
    /// Whether this rule allows syscall `nr` with arguments `args`.
    pub fn matches(&self, nr: i32, args: &[u64; 6]) -> bool {
        self.nr == nr && self.conditions.iter().all(|c| c.holds(args))
    }
}

/// A checked seccomp policy.
#[derive(Clone, Debug)]
pub struct SeccompPolicy {
    path: PathBuf,
    filter_name: String,
    violation: ViolationAction,
    rules: Vec<Rule>,
    /// The document as read, kept so seccompiler compiles exactly it.
    document: Value,
}

impl SeccompPolicy {
    /// Reads and checks the policy at `path`.
    pub fn read(path: &Path) -> Result<Self, TierError> {
        let bytes = super::file::read_bounded(path)?;
        Self::parse(path, &bytes)
    }

    /// Checks policy text `bytes`; `path` is only used in messages.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Self, TierError> {
        let parsed = json::parse(path, bytes)?;
        let mut document = serde_json::Map::new();
        document.insert(parsed.filter_name.clone(), parsed.filter);
        Ok(Self {
            path: path.to_owned(),
            filter_name: parsed.filter_name,
            violation: parsed.violation,
            rules: parsed.rules,
            document: Value::Object(document),
        })
    }

    /// The file the policy was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The rules, in file order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// What the policy's `mismatch_action` says a violation does.
    pub fn violation(&self) -> ViolationAction {
        self.violation
    }

    /// Whether the policy, as written, allows syscall `nr` with `args`.
    /// The compiled program must agree; the tests hold it to that.
    pub fn allows(&self, nr: i32, args: &[u64; 6]) -> bool {
        self.rules.iter().any(|r| r.matches(nr, args))
    }

    /// The policy as JSON with its mismatch action replaced by `action`
    /// (in seccompiler's spelling), for compiling.
    pub(super) fn json_with_mismatch(&self, action: Value) -> Vec<u8> {
        self.json_of_rules(|_| true, action)
    }

    /// The policy as JSON with its mismatch action replaced by `action` and
    /// only the rules whose numbers `keep` accepts, for compiling one
    /// syscall's rules.
    pub(super) fn json_of_rules(&self, keep: impl Fn(usize) -> bool, action: Value) -> Vec<u8> {
        let mut document = self.document.clone();
        if let Some(filter) = document.get_mut(&self.filter_name).and_then(Value::as_object_mut) {
            filter.remove("default_action");
            filter.insert("mismatch_action".to_owned(), action);
            if let Some(Value::Array(rules)) = filter.get_mut("filter") {
                let mut number = 0;
                rules.retain(|_| {
                    number += 1;
                    keep(number)
                });
            }
        }
        // Serialising a Value that came from JSON cannot fail.
        serde_json::to_vec(&document).unwrap_or_default()
    }
}

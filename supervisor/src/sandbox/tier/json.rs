//! Reading seccompiler's JSON format (`policies/<TIER>.seccomp.json`) into
//! the policy model, with errors that name the rule and syscall, and
//! refusing what seccompiler would accept silently.
//!
//! The schema mirrors seccompiler's exactly (same keys, same aliases,
//! unknown keys refused), so a file accepted here means the same to
//! seccompiler, which still does the compiling.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use super::error::TierError;
use super::policy::{ArgLen, CmpOp, Condition, Rule};
use super::syscall_name::syscall_number;
use super::violation::ViolationAction;

/// A policy file's content, checked.
pub(super) struct Parsed {
    pub filter_name: String,
    /// The filter as written, for seccompiler.
    pub filter: Value,
    pub violation: ViolationAction,
    pub rules: Vec<Rule>,
}

/// Checks policy text `bytes`; `path` is only used in messages.
pub(super) fn parse(path: &Path, bytes: &[u8]) -> Result<Parsed, TierError> {
    let json_error = |message: String| TierError::Json { path: path.to_owned(), message };
    let filters: FilterList =
        serde_json::from_slice(bytes).map_err(|e| json_error(format!("not a seccompiler policy: {e}")))?;
    let [(filter_name, filter)]: [(String, Value); 1] =
        filters.entries.try_into().map_err(|all: Vec<(String, Value)>| {
            json_error(format!("a tier's policy holds exactly one filter, this one holds {}", all.len()))
        })?;
    // Checked before the schema: which of two values the schema would see
    // is the parser's choice, not the author's.
    if let Some(Duplicate { at, key }) = filters.duplicate {
        return Err(TierError::DuplicateKey {
            path: path.to_owned(),
            filter: filter_name,
            place: place(&filter, &at[1..]),
            key,
        });
    }
    let raw: RawFilter =
        serde_json::from_value(filter.clone()).map_err(|e| json_error(format!("filter {filter_name:?}: {e}")))?;
    if raw.match_action != RawAction::Allow {
        return Err(json_error(format!(
            "filter {filter_name:?}: match_action must be \"allow\": tiers are allowlists, \
             a denylist misses every syscall nobody thought of"
        )));
    }
    let violation = raw.mismatch_action.violation().ok_or_else(|| {
        json_error(format!(
            "filter {filter_name:?}: mismatch_action must be \"kill_process\" or \
             {{\"errno\": N}} with N from 1 to 4095; it is what a violation does"
        ))
    })?;
    let rules = raw
        .filter
        .iter()
        .enumerate()
        .map(|(at, value)| parse_rule(path, at + 1, value))
        .collect::<Result<Vec<_>, _>>()?;
    check_overlaps(path, &rules)?;
    Ok(Parsed { filter_name, filter, violation, rules })
}

fn parse_rule(path: &Path, number: usize, value: &Value) -> Result<Rule, TierError> {
    let named = value.get("syscall").and_then(Value::as_str).unwrap_or("?");
    let rule_error =
        |message: String| TierError::Rule { path: path.to_owned(), rule: number, syscall: named.to_owned(), message };
    let raw = RawRule::deserialize(value).map_err(|e| rule_error(e.to_string()))?;
    let nr = syscall_number(&raw.syscall).ok_or_else(|| TierError::UnknownSyscall {
        path: path.to_owned(),
        rule: number,
        name: raw.syscall.clone(),
    })?;
    if i64::from(nr) == libc::SYS_clone3 {
        return Err(rule_error(
            "clone3 cannot be allowed: its flags are in memory a filter cannot read, so it could create \
             namespaces unseen. Every tier answers it ENOSYS, and glibc falls back to clone, whose flags \
             rules can check"
                .to_owned(),
        ));
    }
    let conditions = match raw.args {
        None => Vec::new(),
        // seccompiler refuses an empty list with a message that names
        // neither rule nor syscall.
        Some(args) if args.is_empty() => {
            return Err(rule_error("\"args\" is empty: leave it out to allow any arguments".to_owned()));
        }
        Some(args) => args
            .into_iter()
            .enumerate()
            .map(|(at, c)| c.check().map_err(|m| rule_error(format!("args[{at}]: {m}"))))
            .collect::<Result<_, _>>()?,
    };
    Ok(Rule { number, syscall: raw.syscall, nr, conditions })
}

/// seccompiler keeps only the conditional rules of a syscall that also has
/// an unconditional one, silently narrowing what the file says; and a
/// repeated unconditional rule is a merge mistake. Both are refused.
fn check_overlaps(path: &Path, rules: &[Rule]) -> Result<(), TierError> {
    let mut unconditional: HashMap<i32, usize> = HashMap::new();
    let mut conditional: HashMap<i32, usize> = HashMap::new();
    for rule in rules {
        let (same, other) = if rule.conditions.is_empty() {
            (&mut unconditional, &conditional)
        } else {
            (&mut conditional, &unconditional)
        };
        let clash = match (rule.conditions.is_empty(), same.get(&rule.nr), other.get(&rule.nr)) {
            (true, Some(first), _) => Some(format!("already allowed with any arguments by rule {first}")),
            (_, _, Some(first)) => Some(format!(
                "rule {first} allows it with {} and this rule with {}: seccompiler would drop the \
                 unconditional rule, so write one or the other",
                if rule.conditions.is_empty() { "conditions" } else { "any arguments" },
                if rule.conditions.is_empty() { "any arguments" } else { "conditions" },
            )),
            _ => None,
        };
        if let Some(message) = clash {
            return Err(TierError::Rule {
                path: path.to_owned(),
                rule: rule.number,
                syscall: rule.syscall.clone(),
                message,
            });
        }
        same.entry(rule.nr).or_insert(rule.number);
    }
    Ok(())
}

/// The top level: filter name to filter, in order, duplicates kept so they
/// can be refused (a JSON map would silently keep the last), with the first
/// key that any object inside a filter gives twice.
struct FilterList {
    entries: Vec<(String, Value)>,
    duplicate: Option<Duplicate>,
}

impl<'de> Deserialize<'de> for FilterList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ListVisitor;

        impl<'de> Visitor<'de> for ListVisitor {
            type Value = FilterList;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object mapping one filter name to its filter")
            }

            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<FilterList, M::Error> {
                let mut entries = Vec::new();
                let mut duplicate = None;
                while let Some(name) = map.next_key::<String>()? {
                    let mut at = vec![Step::Key(name.clone())];
                    let filter = map.next_value_seed(Unique { at: &mut at, duplicate: &mut duplicate })?;
                    entries.push((name, filter));
                }
                Ok(FilterList { entries, duplicate })
            }
        }

        deserializer.deserialize_map(ListVisitor)
    }
}

/// One step from a filter's name down to a value inside it.
#[derive(Clone)]
enum Step {
    Key(String),
    Index(usize),
}

/// A key given twice in one object, and the steps to that object.
struct Duplicate {
    at: Vec<Step>,
    key: String,
}

/// Where `at` (steps below the filter object) leads in `filter`, in the
/// words of the other errors: rules by number and syscall, conditions as
/// `args[N]`.
fn place(filter: &Value, at: &[Step]) -> String {
    let (mut place, rest) = match at {
        [] => return "top level".to_owned(),
        [Step::Key(filter_key), Step::Index(index), rest @ ..] if filter_key == "filter" => {
            let syscall = filter["filter"][index].get("syscall").and_then(Value::as_str).unwrap_or("?");
            (format!("rule {} (syscall {syscall:?})", index + 1), rest)
        }
        _ => (String::new(), at),
    };
    for step in rest {
        match step {
            Step::Key(key) if place.is_empty() => place.push_str(key),
            Step::Key(key) if key == "args" => place.push_str(", args"),
            Step::Key(key) => {
                place.push('.');
                place.push_str(key);
            }
            Step::Index(index) => place.push_str(&format!("[{index}]")),
        }
    }
    place
}

/// Reads any JSON value as `Value` does, except that an object giving a key
/// twice is noted in `duplicate` (the first such key in the file) instead
/// of silently keeping one of the two. The rest is still read, so the
/// error can name the rule the key is in.
struct Unique<'a> {
    at: &'a mut Vec<Step>,
    duplicate: &'a mut Option<Duplicate>,
}

impl Unique<'_> {
    fn below(&mut self, step: Step) -> Unique<'_> {
        self.at.push(step);
        Unique { at: self.at, duplicate: self.duplicate }
    }
}

impl<'de> DeserializeSeed<'de> for Unique<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Unique<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        loop {
            let item = seq.next_element_seed(self.below(Step::Index(items.len())));
            self.at.pop();
            match item? {
                Some(item) => items.push(item),
                None => return Ok(Value::Array(items)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            // Noted at the key, before its value is read, so the duplicate
            // reported is the first in the file.
            let repeated = object.contains_key(&key);
            if repeated && self.duplicate.is_none() {
                *self.duplicate = Some(Duplicate { at: self.at.clone(), key: key.clone() });
            }
            let value = map.next_value_seed(self.below(Step::Key(key.clone())));
            self.at.pop();
            let value = value?;
            if !repeated {
                object.insert(key, value);
            }
        }
        Ok(Value::Object(object))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFilter {
    #[serde(alias = "default_action")]
    mismatch_action: RawAction,
    #[serde(alias = "filter_action")]
    match_action: RawAction,
    filter: Vec<Value>,
}

#[derive(Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum RawAction {
    Allow,
    Errno(u32),
    KillThread,
    KillProcess,
    Log,
    Trace(u32),
    Trap,
}

impl RawAction {
    /// Only actions the supervisor can carry out after a notification, and
    /// report; errno 0 would fake success and above 4095 is not an errno.
    fn violation(&self) -> Option<ViolationAction> {
        match *self {
            Self::KillProcess => Some(ViolationAction::KillProcess),
            Self::Errno(errno) => {
                u16::try_from(errno).ok().filter(|e| (1..=4095).contains(e)).map(ViolationAction::Errno)
            }
            _ => None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    syscall: String,
    args: Option<Vec<RawCondition>>,
    #[serde(rename = "comment")]
    _comment: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCondition {
    index: u8,
    #[serde(rename = "type")]
    len: ArgLen,
    op: CmpOp,
    val: u64,
    #[serde(rename = "comment")]
    _comment: Option<String>,
}

impl RawCondition {
    fn check(self) -> Result<Condition, String> {
        if self.index > 5 {
            return Err(format!("index {}: syscalls have arguments 0 to 5", self.index));
        }
        // seccompiler compares only the low word of a dword and would
        // silently drop the high bits of these values.
        if self.len == ArgLen::Dword {
            if self.val > u64::from(u32::MAX) {
                return Err(format!("dword value {:#x} does not fit in 32 bits", self.val));
            }
            if let CmpOp::MaskedEq(mask) = self.op
                && mask > u64::from(u32::MAX)
            {
                return Err(format!("dword mask {mask:#x} does not fit in 32 bits"));
            }
        }
        Ok(Condition { index: self.index, len: self.len, op: self.op, value: self.val })
    }
}

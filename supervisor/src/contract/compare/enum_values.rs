//! Enum values paired by number and name: renames, renumbering, deletions
//! (and whether they were reserved), additions (and reuse of reservations).

use std::collections::{BTreeMap, BTreeSet};

use prost_types::EnumValueDescriptorProto;

use super::Sink;
use super::options::{keep_all, options_differ};
use super::reserved::Deleted;
use crate::contract::index::EnumEntry;
use crate::contract::location::Element;
use crate::contract::ranges::{Span, SpanSet};
use crate::contract::rule::Rule;

/// One side of an enum with its reservations.
pub(super) struct ValueSide<'s, 'a> {
    entry: &'s EnumEntry<'a>,
    reserved_numbers: SpanSet,
    reserved_names: BTreeSet<&'s str>,
}

impl<'s, 'a> ValueSide<'s, 'a> {
    pub fn new(entry: &'s EnumEntry<'a>, spans: &[Span]) -> Self {
        ValueSide {
            entry,
            reserved_numbers: SpanSet::new(spans.iter().copied()),
            reserved_names: entry.proto.reserved_name.iter().map(String::as_str).collect(),
        }
    }

    fn reserves_number(&self, number: i32) -> bool {
        self.reserved_numbers.contains(number)
    }

    fn reserves_name(&self, name: &str) -> bool {
        self.reserved_names.contains(name)
    }
}

/// Values by number (several names with `allow_alias`) and by name; the
/// first definition of a duplicate name wins.
struct ValueTable<'v> {
    by_number: BTreeMap<i32, BTreeMap<&'v str, &'v EnumValueDescriptorProto>>,
    by_name: BTreeMap<&'v str, i32>,
}

impl<'v> ValueTable<'v> {
    fn of(values: &'v [EnumValueDescriptorProto]) -> Self {
        let mut table = ValueTable { by_number: BTreeMap::new(), by_name: BTreeMap::new() };
        for value in values {
            let names = table.by_number.entry(value.number()).or_default();
            names.entry(value.name()).or_insert(value);
            table.by_name.entry(value.name()).or_insert(value.number());
        }
        table
    }

    fn has(&self, number: i32, name: &str) -> bool {
        self.by_number.get(&number).is_some_and(|values| values.contains_key(name))
    }

    /// The number `name` sits under if `other` does not use that number: a
    /// genuine renumbering rather than a swap of two values.
    fn moved_number(&self, name: &str, other: &ValueTable<'_>) -> Option<i32> {
        let number = *self.by_name.get(name)?;
        (!other.by_number.contains_key(&number) && self.has(number, name)).then_some(number)
    }

    /// True when some name this table gives `number` is gone from it in `new`.
    fn renamed_in(&self, new: &ValueTable<'_>, number: i32) -> bool {
        self.by_number.get(&number).is_some_and(|values| values.keys().any(|name| !new.has(number, name)))
    }
}

struct ValueReport<'r> {
    r#enum: &'r str,
    file: &'r str,
}

impl ValueReport<'_> {
    fn push(&self, sink: &mut Sink, rule: Rule, value: &str, text: String) {
        sink.push(
            rule,
            self.file,
            Element::EnumValue { r#enum: self.r#enum.to_owned(), value: value.to_owned() },
            text,
        );
    }
}

/// Runs every value check of one enum and returns the values this change
/// deleted, so their reservations are not reported as news.
pub(super) fn compare_values(name: &str, old: &ValueSide<'_, '_>, new: &ValueSide<'_, '_>, sink: &mut Sink) -> Deleted {
    let old_values = ValueTable::of(&old.entry.proto.value);
    let new_values = ValueTable::of(&new.entry.proto.value);
    let tables = Tables { old: &old_values, new: &new_values };
    let deleted = judge_old_values(name, &tables, old, new, sink);
    judge_new_values(name, &tables, old, new, sink);
    deleted
}

struct Tables<'t, 'v> {
    old: &'t ValueTable<'v>,
    new: &'t ValueTable<'v>,
}

fn judge_old_values(
    name: &str,
    tables: &Tables<'_, '_>,
    old: &ValueSide<'_, '_>,
    new: &ValueSide<'_, '_>,
    sink: &mut Sink,
) -> Deleted {
    let old_report = ValueReport { r#enum: name, file: old.entry.file_name() };
    let new_report = ValueReport { r#enum: name, file: new.entry.file_name() };
    let mut deleted = Deleted::default();
    for (number, values) in &tables.old.by_number {
        for value in values.values() {
            if let Some(survivors) = tables.new.by_number.get(number) {
                judge_kept_number(&new_report, *number, value, survivors, sink);
            } else if tables.new.moved_number(value.name(), tables.old).is_none() {
                judge_deletion(&old_report, *number, value.name(), new, sink);
                deleted.numbers.push(*number);
                deleted.names.insert(value.name().to_owned());
            }
        }
    }
    deleted
}

/// `number` still exists: `value` must still be one of its names.
fn judge_kept_number(
    report: &ValueReport<'_>,
    number: i32,
    value: &EnumValueDescriptorProto,
    survivors: &BTreeMap<&str, &EnumValueDescriptorProto>,
    sink: &mut Sink,
) {
    let (name, value_name) = (report.r#enum, value.name());
    match survivors.get(value_name) {
        Some(kept) => {
            if options_differ(value.options.as_ref(), kept.options.as_ref(), keep_all) {
                let text = format!("options of enum value `{value_name}` in enum `{name}` changed");
                report.push(sink, Rule::OptionsChanged, value_name, text);
            }
        }
        None => {
            let now: Vec<&str> = survivors.keys().copied().collect();
            let now = now.join("`, `");
            let text = format!("enum value {number} in enum `{name}` changed name from `{value_name}` to `{now}`");
            report.push(sink, Rule::EnumValueSameName, value_name, text);
        }
    }
}

/// Like fields: breaking unless both the number and the name are reserved.
fn judge_deletion(report: &ValueReport<'_>, number: i32, value_name: &str, new: &ValueSide<'_, '_>, sink: &mut Sink) {
    let name = report.r#enum;
    let what = format!("enum value {number} `{value_name}` was deleted from enum `{name}`");
    let (rule, text) = if !new.reserves_number(number) {
        (Rule::EnumValueNoDeleteUnlessNumberReserved, format!("{what} without reserving number {number}"))
    } else if !new.reserves_name(value_name) {
        (
            Rule::EnumValueNoDeleteUnlessNameReserved,
            format!("{what}; number {number} is reserved but the name `{value_name}` is not"),
        )
    } else {
        (Rule::EnumValueDeletedReserved, format!("{what}; its number and name are reserved"))
    };
    report.push(sink, rule, value_name, text);
}

fn judge_new_values(
    name: &str,
    tables: &Tables<'_, '_>,
    old: &ValueSide<'_, '_>,
    new: &ValueSide<'_, '_>,
    sink: &mut Sink,
) {
    let report = ValueReport { r#enum: name, file: new.entry.file_name() };
    for (number, values) in &tables.new.by_number {
        let number_is_new = !tables.old.by_number.contains_key(number);
        for value_name in values.keys().copied() {
            if tables.old.has(*number, value_name) {
                continue;
            }
            if !number_is_new {
                // A rename was already reported from the old side; otherwise
                // this is an extra alias of a kept number.
                if !tables.old.renamed_in(tables.new, *number) {
                    let text = format!("enum value {number} `{value_name}` was added to enum `{name}` as an alias");
                    report.push(sink, Rule::EnumValueAdded, value_name, text);
                }
            } else if let Some(old_number) = tables.old.moved_number(value_name, tables.new) {
                let text = format!(
                    "enum value `{value_name}` in enum `{name}` changed number \
                     from {old_number} to {number}"
                );
                report.push(sink, Rule::EnumValueSameNumber, value_name, text);
            } else {
                judge_addition(&report, *number, value_name, tables, old, new, sink);
            }
        }
    }
}

/// A value under a number the old enum did not use: new, unless it takes a
/// reserved number or name.
fn judge_addition(
    report: &ValueReport<'_>,
    number: i32,
    value_name: &str,
    tables: &Tables<'_, '_>,
    old: &ValueSide<'_, '_>,
    new: &ValueSide<'_, '_>,
    sink: &mut Sink,
) {
    let label = format!("enum value {number} `{value_name}` in enum `{}`", report.r#enum);
    let mut reported = false;
    if old.reserves_number(number) || new.reserves_number(number) {
        let text = format!("{label} uses reserved number {number}");
        report.push(sink, Rule::EnumValueNoReuseReservedNumber, value_name, text);
        reported = true;
    }
    let name_was_free = !tables.old.by_name.contains_key(value_name);
    if name_was_free && (old.reserves_name(value_name) || new.reserves_name(value_name)) {
        let text = format!("{label} uses reserved name `{value_name}`");
        report.push(sink, Rule::EnumValueNoReuseReservedName, value_name, text);
        reported = true;
    }
    if !reported {
        let text = format!("{label} was added");
        report.push(sink, Rule::EnumValueAdded, value_name, text);
    }
}

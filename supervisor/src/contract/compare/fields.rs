//! Pairing a message's fields by number: deletions (and whether they were
//! reserved), additions (and whether they reuse a reservation), renumbering.

use std::collections::{BTreeMap, BTreeSet};

use prost_types::field_descriptor_proto::Label;
use prost_types::{DescriptorProto, FieldDescriptorProto};

use super::Sink;
use super::field::{FieldSide, compare_field};
use super::message::{MessageSide, message_spans};
use super::reserved::Deleted;
use crate::contract::location::Element;
use crate::contract::ranges::SpanSet;
use crate::contract::rule::Rule;

/// Fields by number and by name; the first definition of a duplicate wins.
struct FieldTable<'f> {
    by_number: BTreeMap<i32, &'f FieldDescriptorProto>,
    by_name: BTreeMap<&'f str, i32>,
}

impl<'f> FieldTable<'f> {
    fn of(message: &'f DescriptorProto) -> Self {
        let mut table = FieldTable { by_number: BTreeMap::new(), by_name: BTreeMap::new() };
        for field in &message.field {
            table.by_number.entry(field.number()).or_insert(field);
            table.by_name.entry(field.name()).or_insert(field.number());
        }
        table
    }

    /// The number `name` moved to, if it now sits under a number that the
    /// `other` side does not use (a genuine renumbering, not a swap).
    fn moved_number(&self, name: &str, other: &FieldTable<'_>) -> Option<i32> {
        let number = *self.by_name.get(name)?;
        let moved = !other.by_number.contains_key(&number)
            && self.by_number.get(&number).is_some_and(|field| field.name() == name);
        moved.then_some(number)
    }
}

/// The reservations of one side, for deletion and reuse checks.
struct Reservations<'r> {
    spans: SpanSet,
    names: BTreeSet<&'r str>,
}

impl Reservations<'_> {
    fn of<'r>(side: MessageSide<'r, '_>) -> Reservations<'r> {
        Reservations {
            spans: SpanSet::new(message_spans(side)),
            names: side.entry.proto.reserved_name.iter().map(String::as_str).collect(),
        }
    }

    fn number(&self, number: i32) -> bool {
        self.spans.contains(number)
    }

    fn name(&self, name: &str) -> bool {
        self.names.contains(name)
    }
}

/// Runs every field check of one message and returns the fields this change
/// deleted, so their reservations are not reported as news.
pub(super) fn compare_fields(
    message: &str,
    old: MessageSide<'_, '_>,
    new: MessageSide<'_, '_>,
    sink: &mut Sink,
) -> Deleted {
    let old_fields = FieldTable::of(old.entry.proto);
    let new_fields = FieldTable::of(new.entry.proto);
    let old_reserved = Reservations::of(old);
    let new_reserved = Reservations::of(new);
    let mut deleted = Deleted::default();

    for (number, old_field) in &old_fields.by_number {
        if let Some(new_field) = new_fields.by_number.get(number) {
            let old_side = FieldSide { message: old, field: old_field };
            let new_side = FieldSide { message: new, field: new_field };
            compare_field(message, old_side, new_side, sink);
        } else if new_fields.moved_number(old_field.name(), &old_fields).is_none() {
            report_deletion(message, old, old_field, &new_reserved, sink);
            deleted.numbers.push(*number);
            deleted.names.insert(old_field.name().to_owned());
        }
    }

    let reserved = [&old_reserved, &new_reserved];
    for (number, new_field) in &new_fields.by_number {
        if old_fields.by_number.contains_key(number) {
            continue;
        }
        let name = new_field.name();
        if let Some(old_number) = old_fields.moved_number(name, &new_fields) {
            let text = format!("field `{name}` in message `{message}` changed number from {old_number} to {number}");
            let file = new.entry.file_name();
            push_field(sink, Rule::FieldSameNumber, file, message, name, text);
        } else {
            let name_was_free = !old_fields.by_name.contains_key(name);
            report_addition(message, new, new_field, name_was_free, reserved, sink);
        }
    }
    deleted
}

/// A field under a number the old message did not use: new, unless it takes
/// a reserved number or name, or is required (old writers never send it).
fn report_addition(
    message: &str,
    new: MessageSide<'_, '_>,
    field: &FieldDescriptorProto,
    name_was_free: bool,
    reserved: [&Reservations<'_>; 2],
    sink: &mut Sink,
) {
    let (number, name) = (field.number(), field.name());
    let file = new.entry.file_name();
    let label = format!("field {number} `{name}` in message `{message}`");
    let mut reported = false;
    if reserved.iter().any(|side| side.number(number)) {
        let text = format!("{label} uses reserved number {number}");
        push_field(sink, Rule::FieldNoReuseReservedNumber, file, message, name, text);
        reported = true;
    }
    if name_was_free && reserved.iter().any(|side| side.name(name)) {
        let text = format!("{label} uses reserved name `{name}`");
        push_field(sink, Rule::FieldNoReuseReservedName, file, message, name, text);
        reported = true;
    }
    if is_required(field) {
        let text = format!("required {label} was added; old writers never send it");
        push_field(sink, Rule::MessageSameRequiredFields, file, message, name, text);
        reported = true;
    }
    if !reported {
        let text = format!("{label} was added");
        push_field(sink, Rule::FieldAdded, file, message, name, text);
    }
}

/// A deletion breaks unless both number and name are reserved: a later field
/// could otherwise reuse the number (wire) or the name (JSON).
fn report_deletion(
    message: &str,
    old: MessageSide<'_, '_>,
    field: &FieldDescriptorProto,
    new_reserved: &Reservations<'_>,
    sink: &mut Sink,
) {
    let (number, name) = (field.number(), field.name());
    let file = old.entry.file_name();
    let what = format!("field {number} `{name}` was deleted from message `{message}`");
    let required = is_required(field);
    if required {
        push_field(
            sink,
            Rule::MessageSameRequiredFields,
            file,
            message,
            name,
            format!("required {what}; old readers reject messages without it"),
        );
    }
    if !new_reserved.number(number) {
        push_field(
            sink,
            Rule::FieldNoDeleteUnlessNumberReserved,
            file,
            message,
            name,
            format!("{what} without reserving number {number}"),
        );
    } else if !new_reserved.name(name) {
        push_field(
            sink,
            Rule::FieldNoDeleteUnlessNameReserved,
            file,
            message,
            name,
            format!("{what}; number {number} is reserved but the name `{name}` is not"),
        );
    } else if !required {
        push_field(
            sink,
            Rule::FieldDeletedReserved,
            file,
            message,
            name,
            format!("{what}; its number and name are reserved"),
        );
    }
}

fn push_field(sink: &mut Sink, rule: Rule, file: &str, message: &str, field: &str, text: String) {
    sink.push(rule, file, Element::Field { message: message.to_owned(), field: field.to_owned() }, text);
}

fn is_required(field: &FieldDescriptorProto) -> bool {
    field.label == Some(Label::Required as i32)
}

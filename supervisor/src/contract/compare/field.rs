//! One field present under the same number on both sides: name, JSON name,
//! type, cardinality, oneof, default and options.

use prost_types::FieldDescriptorProto;

use super::Sink;
use super::message::MessageSide;
use super::oneof::{describe_move, membership};
use super::options::{keep_all, options_differ};
use crate::contract::cardinality::{Cardinality, cardinality_rule};
use crate::contract::field_kind::{FieldKind, KindChange, compare_kinds};
use crate::contract::json_name::json_name;
use crate::contract::location::Element;
use crate::contract::rule::Rule;

/// A field on one side, with its message for context.
#[derive(Clone, Copy)]
pub(super) struct FieldSide<'f, 's, 'a> {
    pub message: MessageSide<'s, 'a>,
    pub field: &'f FieldDescriptorProto,
}

impl FieldSide<'_, '_, '_> {
    fn kind(&self) -> FieldKind {
        FieldKind::of(self.field, self.message.index)
    }

    fn cardinality(&self, kind: &FieldKind) -> Cardinality {
        Cardinality::of(self.field, kind, self.message.entry.file, self.message.index)
    }

    fn oneof(&self) -> Option<String> {
        membership(self.field, self.message.entry.proto)
    }

    /// Key and value kinds, read from the synthetic entry message; a
    /// malformed entry yields `Unknown` rather than an error.
    fn map_kinds(&self, kind: &FieldKind) -> (FieldKind, FieldKind) {
        let entry = kind.message_name().and_then(|name| self.message.index.message(name));
        let part = |number: i32| {
            entry
                // A map entry has its key and value and nothing else: only those are looked
                // at, so a malformed entry of thousands of fields, named by thousands of map
                // fields, costs no more than a true one.
                .and_then(|entry| entry.proto.field.iter().take(2).find(|f| f.number() == number))
                .map_or(FieldKind::Unknown(None), |f| FieldKind::of(f, self.message.index))
        };
        (part(1), part(2))
    }
}

/// Report wording and location shared by every check on one field.
struct FieldReport<'r> {
    message: &'r str,
    file: &'r str,
    number: i32,
    name: &'r str,
}

impl FieldReport<'_> {
    fn push(&self, sink: &mut Sink, rule: Rule, what: String) {
        let (number, name, message) = (self.number, self.name, self.message);
        sink.push(
            rule,
            self.file,
            Element::Field { message: message.to_owned(), field: name.to_owned() },
            format!("field {number} `{name}` in message `{message}` {what}"),
        );
    }
}

pub(super) fn compare_field(message: &str, old: FieldSide<'_, '_, '_>, new: FieldSide<'_, '_, '_>, sink: &mut Sink) {
    let report = FieldReport {
        message,
        file: new.message.entry.file_name(),
        number: new.field.number(),
        name: new.field.name(),
    };
    compare_names(&report, old.field, new.field, sink);

    let (old_kind, new_kind) = (old.kind(), new.kind());
    let (old_cardinality, new_cardinality) = (old.cardinality(&old_kind), new.cardinality(&new_kind));
    if old_cardinality == Cardinality::Map && new_cardinality == Cardinality::Map {
        // Entry message names follow the field name, so compare the shape.
        let (old_key, old_value) = old.map_kinds(&old_kind);
        let (new_key, new_value) = new.map_kinds(&new_kind);
        compare_kind(&report, "map key type", &old_key, &new_key, sink);
        compare_kind(&report, "map value type", &old_value, &new_value, sink);
    } else {
        compare_kind(&report, "type", &old_kind, &new_kind, sink);
    }

    let (old_oneof, new_oneof) = (old.oneof(), new.oneof());
    let oneof_moved = old_oneof != new_oneof;
    if oneof_moved {
        report.push(sink, Rule::FieldSameOneof, describe_move(old_oneof.as_deref(), new_oneof.as_deref()));
    }
    if let Some(rule) = cardinality_rule(old_cardinality, new_cardinality, &old_kind, &new_kind, oneof_moved) {
        report.push(sink, rule, format!("changed cardinality from {old_cardinality} to {new_cardinality}"));
    }

    if old.field.default_value != new.field.default_value {
        report.push(
            sink,
            Rule::FieldSameDefault,
            format!("changed its default from {} to {}", describe_default(old.field), describe_default(new.field)),
        );
    }
    if options_differ(old.field.options.as_ref(), new.field.options.as_ref(), keep_all) {
        report.push(sink, Rule::OptionsChanged, "changed options".to_owned());
    }
}

fn compare_names(report: &FieldReport<'_>, old: &FieldDescriptorProto, new: &FieldDescriptorProto, sink: &mut Sink) {
    if old.name() != new.name() {
        report.push(sink, Rule::FieldSameName, format!("was renamed from `{}`", old.name()));
        return;
    }
    let (old_json, new_json) = (json_name(old), json_name(new));
    if old_json != new_json {
        report.push(sink, Rule::FieldSameJsonName, format!("changed its JSON name from `{old_json}` to `{new_json}`"));
    }
}

fn compare_kind(report: &FieldReport<'_>, what: &str, old: &FieldKind, new: &FieldKind, sink: &mut Sink) {
    let rule = match compare_kinds(old, new) {
        KindChange::Same => return,
        KindChange::Compatible => Rule::FieldTypeChangedCompatible,
        KindChange::BreaksJson => Rule::FieldWireJsonCompatibleType,
        KindChange::BreaksWire => Rule::FieldWireCompatibleType,
    };
    report.push(sink, rule, format!("changed {what} from {old} to {new}"));
}

fn describe_default(field: &FieldDescriptorProto) -> String {
    match &field.default_value {
        Some(value) => format!("`{value}`"),
        None => "the type's zero value".to_owned(),
    }
}

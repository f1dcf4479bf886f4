//! Enums as a whole: presence, enum options, and dispatch to the value and
//! reservation checks.

use prost_types::EnumDescriptorProto;

use super::enum_values::{ValueSide, compare_values};
use super::options::{keep_all, options_differ};
use super::reserved::{ReservedPair, compare_reserved};
use super::{Sides, Sink};
use crate::contract::index::{EnumEntry, Kind};
use crate::contract::location::Element;
use crate::contract::ranges::Span;
use crate::contract::rule::Rule;

pub(super) fn compare_enums(sides: &Sides<'_, '_>, sink: &mut Sink) {
    for name in &sides.old_selection.enums {
        let Some(old) = sides.old.enums.get(name) else {
            continue;
        };
        match sides.new.enums.get(name) {
            Some(new) => compare_enum(name, old, new, sink),
            None => {
                let hint = sides
                    .new
                    .moved_from(Kind::Enum, old.package(), name)
                    .map(|moved| format!(" (an enum `{moved}` exists in another package)"))
                    .unwrap_or_default();
                sink.push(
                    Rule::EnumNoDelete,
                    old.file_name(),
                    enum_element(name),
                    format!("enum `{name}` was deleted{hint}"),
                );
            }
        }
    }
    for name in &sides.new_selection.enums {
        if sides.old.enums.contains_key(name) {
            continue;
        }
        if let Some(new) = sides.new.enums.get(name) {
            sink.push(Rule::EnumAdded, new.file_name(), enum_element(name), format!("enum `{name}` was added"));
        }
    }
}

fn enum_element(name: &str) -> Element {
    Element::Enum { r#enum: name.to_owned() }
}

fn compare_enum(name: &str, old: &EnumEntry<'_>, new: &EnumEntry<'_>, sink: &mut Sink) {
    if options_differ(old.proto.options.as_ref(), new.proto.options.as_ref(), keep_all) {
        sink.push(
            Rule::OptionsChanged,
            new.file_name(),
            enum_element(name),
            format!("options of enum `{name}` changed"),
        );
    }
    let (old_spans, new_spans) = (enum_spans(old.proto), enum_spans(new.proto));
    let old_side = ValueSide::new(old, &old_spans);
    let new_side = ValueSide::new(new, &new_spans);
    let deleted = compare_values(name, &old_side, &new_side, sink);
    let reserved = ReservedPair {
        owner: name,
        file: new.file_name(),
        element: enum_element(name),
        kind: "enum",
        old_spans,
        new_spans,
        old_names: &old.proto.reserved_name,
        new_names: &new.proto.reserved_name,
    };
    compare_reserved(&reserved, &deleted, Rule::ReservedEnumNoDelete, sink);
}

fn enum_spans(r#enum: &EnumDescriptorProto) -> Vec<Span> {
    r#enum.reserved_range.iter().map(|range| Span::inclusive(range.start(), range.end())).collect()
}

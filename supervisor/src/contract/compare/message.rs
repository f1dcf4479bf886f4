//! Messages as a whole: presence, message-level options, and dispatch to the
//! field, oneof and reserved checks.

use prost_types::MessageOptions;

use super::fields::compare_fields;
use super::oneof::report_added_oneofs;
use super::options::options_differ;
use super::reserved::{ReservedPair, compare_reserved};
use super::{Sides, Sink};
use crate::contract::index::{Index, Kind, MessageEntry};
use crate::contract::location::Element;
use crate::contract::ranges::Span;
use crate::contract::rule::Rule;

/// A message on one side, with the index its type names resolve against.
#[derive(Clone, Copy)]
pub(super) struct MessageSide<'s, 'a> {
    pub index: &'s Index<'a>,
    pub entry: &'s MessageEntry<'a>,
}

pub(super) fn compare_messages(sides: &Sides<'_, '_>, sink: &mut Sink) {
    for name in &sides.old_selection.messages {
        let Some(old) = sides.old.message(name) else {
            continue;
        };
        let element = Element::Message { message: name.clone() };
        match sides.new.message(name) {
            Some(new) => {
                let old = MessageSide { index: sides.old, entry: old };
                let new = MessageSide { index: sides.new, entry: new };
                compare_message(name, old, new, sink);
            }
            None => {
                let hint = sides
                    .new
                    .moved_from(Kind::Message, old.package(), name)
                    .map(|moved| format!(" (a message `{moved}` exists in another package)"))
                    .unwrap_or_default();
                sink.push(
                    Rule::MessageNoDelete,
                    old.file_name(),
                    element,
                    format!("message `{name}` was deleted{hint}"),
                );
            }
        }
    }
    for name in &sides.new_selection.messages {
        if sides.old.messages.contains_key(name) {
            continue;
        }
        if let Some(new) = sides.new.message(name) {
            sink.push(
                Rule::MessageAdded,
                new.file_name(),
                Element::Message { message: name.clone() },
                format!("message `{name}` was added"),
            );
        }
    }
}

fn compare_message(name: &str, old: MessageSide<'_, '_>, new: MessageSide<'_, '_>, sink: &mut Sink) {
    let file = new.entry.file_name();
    let element = || Element::Message { message: name.to_owned() };
    let old_options = old.entry.proto.options.as_ref();
    let new_options = new.entry.proto.options.as_ref();
    if message_set(old_options) != message_set(new_options) {
        sink.push(
            Rule::MessageSameMessageSetWireFormat,
            file,
            element(),
            format!(
                "message `{name}` changed message_set_wire_format from {} to {}",
                message_set(old_options),
                message_set(new_options)
            ),
        );
    }
    let ignore_judged = |options: &mut MessageOptions| {
        options.message_set_wire_format = None;
        options.map_entry = None;
    };
    if options_differ(old_options, new_options, ignore_judged) {
        sink.push(Rule::OptionsChanged, file, element(), format!("options of message `{name}` changed"));
    }
    let deleted = compare_fields(name, old, new, sink);
    report_added_oneofs(name, old.entry.proto, new.entry.proto, file, sink);
    let reserved = ReservedPair {
        owner: name,
        file,
        element: element(),
        kind: "message",
        old_spans: message_spans(old),
        new_spans: message_spans(new),
        old_names: &old.entry.proto.reserved_name,
        new_names: &new.entry.proto.reserved_name,
    };
    compare_reserved(&reserved, &deleted, Rule::ReservedMessageNoDelete, sink);
}

fn message_set(options: Option<&MessageOptions>) -> bool {
    options.and_then(|options| options.message_set_wire_format).unwrap_or(false)
}

pub(super) fn message_spans(side: MessageSide<'_, '_>) -> Vec<Span> {
    side.entry.proto.reserved_range.iter().map(|range| Span::exclusive(range.start(), range.end())).collect()
}

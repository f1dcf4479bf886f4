//! Reserved numbers and names of a message or enum: dropping a reservation
//! breaks, adding one does not.

use std::collections::BTreeSet;

use super::Sink;
use crate::contract::location::Element;
use crate::contract::ranges::{Span, SpanSet};
use crate::contract::rule::Rule;

/// The reservations of one message or enum on both sides.
pub(super) struct ReservedPair<'r> {
    pub owner: &'r str,
    pub file: &'r str,
    pub element: Element,
    /// "message" or "enum", for the report text.
    pub kind: &'static str,
    pub old_spans: Vec<Span>,
    pub new_spans: Vec<Span>,
    pub old_names: &'r [String],
    pub new_names: &'r [String],
}

/// Numbers and names freed by this very change; reserving them is the
/// expected companion of a deletion and not worth a separate note.
#[derive(Debug, Default)]
pub(super) struct Deleted {
    pub numbers: Vec<i32>,
    pub names: BTreeSet<String>,
}

pub(super) fn compare_reserved(pair: &ReservedPair<'_>, deleted: &Deleted, no_delete_rule: Rule, sink: &mut Sink) {
    let (kind, owner) = (pair.kind, pair.owner);
    let still_reserved = SpanSet::new(pair.new_spans.iter().copied());
    for span in &pair.old_spans {
        if !still_reserved.covers(*span) {
            sink.push(
                no_delete_rule,
                pair.file,
                pair.element.clone(),
                format!("{kind} `{owner}` no longer reserves {span}"),
            );
        }
    }
    let old_names: BTreeSet<&str> = pair.old_names.iter().map(String::as_str).collect();
    let new_names: BTreeSet<&str> = pair.new_names.iter().map(String::as_str).collect();
    for name in old_names.difference(&new_names) {
        sink.push(
            no_delete_rule,
            pair.file,
            pair.element.clone(),
            format!("{kind} `{owner}` no longer reserves the name `{name}`"),
        );
    }

    let known = pair.old_spans.iter().copied();
    let known = SpanSet::new(known.chain(deleted.numbers.iter().map(|n| Span::point(*n))));
    for span in &pair.new_spans {
        if !known.covers(*span) {
            sink.push(
                Rule::ReservedAdded,
                pair.file,
                pair.element.clone(),
                format!("{kind} `{owner}` now reserves {span}"),
            );
        }
    }
    for name in new_names.difference(&old_names) {
        if !deleted.names.contains(*name) {
            sink.push(
                Rule::ReservedAdded,
                pair.file,
                pair.element.clone(),
                format!("{kind} `{owner}` now reserves the name `{name}`"),
            );
        }
    }
}

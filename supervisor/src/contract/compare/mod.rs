//! The comparison entry point: index both sets, pick what the scope covers,
//! and run every rule family over it.

mod enum_values;
mod enums;
mod field;
mod fields;
mod file;
mod message;
mod method;
mod oneof;
mod options;
mod reserved;
mod service;

use prost_types::FileDescriptorSet;

use super::index::Index;
use super::location::{Element, Location};
use super::report::{Change, Report};
use super::rule::Rule;
use super::scope::Scope;
use super::selection::Selection;

/// Compares `new` against `old` within `scope` and reports every change.
///
/// Never panics, whatever the descriptors hold: names are matched as
/// strings, duplicates keep their first definition and unresolvable
/// references compare by name.
pub fn diff(old: &FileDescriptorSet, new: &FileDescriptorSet, scope: Scope) -> Report {
    let old_index = Index::build(old);
    let new_index = Index::build(new);
    let sides = Sides {
        old: &old_index,
        new: &new_index,
        old_selection: Selection::of(&old_index, &scope),
        new_selection: Selection::of(&new_index, &scope),
    };
    let mut sink = Sink::default();
    service::compare_services(&sides, &mut sink);
    message::compare_messages(&sides, &mut sink);
    enums::compare_enums(&sides, &mut sink);
    file::compare_files(&sides, &mut sink);
    Report::from_changes(sink.changes)
}

/// Both indexes and what the scope selects on each side.
pub(crate) struct Sides<'i, 'a> {
    pub old: &'i Index<'a>,
    pub new: &'i Index<'a>,
    pub old_selection: Selection,
    pub new_selection: Selection,
}

/// Collects changes while the rule families run.
#[derive(Default)]
pub(crate) struct Sink {
    changes: Vec<Change>,
}

impl Sink {
    pub fn push(&mut self, rule: Rule, file: &str, element: Element, message: String) {
        self.changes.push(Change::new(rule, Location::new(file, element), message));
    }
}

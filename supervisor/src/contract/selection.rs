//! Which services, messages and enums of one descriptor set a scope covers.

use std::collections::BTreeSet;

use super::index::{Index, is_map_entry};
use super::scope::{Scope, strip_dot};

/// The elements a comparison looks at on one side. Map entry messages are
/// left out: they are compared as part of their map field, because their
/// names follow the field's name and would otherwise report every map field
/// rename as a deleted message.
#[derive(Debug, Default)]
pub(crate) struct Selection {
    pub services: BTreeSet<String>,
    pub messages: BTreeSet<String>,
    pub enums: BTreeSet<String>,
}

impl Selection {
    pub fn of(index: &Index<'_>, scope: &Scope) -> Self {
        match scope {
            Scope::All => Selection {
                services: index.services.keys().cloned().collect(),
                messages: index
                    .messages
                    .iter()
                    .filter(|(_, entry)| !is_map_entry(entry.proto))
                    .map(|(name, _)| name.clone())
                    .collect(),
                enums: index.enums.keys().cloned().collect(),
            },
            Scope::Services(names) => {
                let services: BTreeSet<String> = names.iter().map(|name| strip_dot(name).to_owned()).collect();
                reachable(index, services)
            }
        }
    }
}

/// Follows method input/output types and field types from `services`.
/// Names that resolve to nothing are skipped: the rules that compare the
/// referencing method or field report them.
fn reachable(index: &Index<'_>, services: BTreeSet<String>) -> Selection {
    let mut pending: Vec<&str> = Vec::new();
    for service in &services {
        let Some(entry) = index.services.get(service) else {
            continue;
        };
        for method in &entry.proto.method {
            pending.push(strip_dot(method.input_type()));
            pending.push(strip_dot(method.output_type()));
        }
    }
    let mut selection = Selection { services, ..Selection::default() };
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    while let Some(name) = pending.pop() {
        if !seen.insert(name) {
            continue;
        }
        if index.enums.contains_key(name) {
            selection.enums.insert(name.to_owned());
            continue;
        }
        let Some(entry) = index.message(name) else {
            continue;
        };
        if !is_map_entry(entry.proto) {
            selection.messages.insert(name.to_owned());
        }
        for field in &entry.proto.field {
            if field.type_name.is_some() {
                pending.push(strip_dot(field.type_name()));
            }
        }
    }
    selection
}

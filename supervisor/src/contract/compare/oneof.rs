//! Oneof membership of fields, ignoring the synthetic oneofs that proto3
//! `optional` creates.

use std::collections::BTreeSet;

use prost_types::{DescriptorProto, FieldDescriptorProto};

use super::Sink;
use crate::contract::location::Element;
use crate::contract::rule::Rule;

/// The name of the real oneof `field` belongs to. A proto3 `optional` field
/// sits in a synthetic oneof that is an encoding detail of presence, not
/// membership, so it counts as outside any oneof.
pub(super) fn membership(field: &FieldDescriptorProto, message: &DescriptorProto) -> Option<String> {
    if field.proto3_optional == Some(true) {
        return None;
    }
    let index = field.oneof_index?;
    let declared = usize::try_from(index).ok().and_then(|position| message.oneof_decl.get(position));
    Some(match declared {
        Some(oneof) => oneof.name().to_owned(),
        None => format!("<undeclared oneof #{index}>"),
    })
}

fn real_oneofs(message: &DescriptorProto) -> BTreeSet<String> {
    message.field.iter().filter_map(|field| membership(field, message)).collect()
}

/// Oneofs are matched by name: a renamed oneof shows up as its fields
/// moving (FIELD_SAME_ONEOF) plus an added oneof.
pub(super) fn report_added_oneofs(
    message: &str,
    old: &DescriptorProto,
    new: &DescriptorProto,
    file: &str,
    sink: &mut Sink,
) {
    let old_oneofs = real_oneofs(old);
    for oneof in real_oneofs(new).difference(&old_oneofs) {
        sink.push(
            Rule::OneofAdded,
            file,
            Element::Oneof { message: message.to_owned(), oneof: oneof.clone() },
            format!("oneof `{oneof}` was added to message `{message}`"),
        );
    }
}

/// Report text for a field whose oneof changed.
pub(super) fn describe_move(old: Option<&str>, new: Option<&str>) -> String {
    match (old, new) {
        (None, Some(new)) => format!("moved into oneof `{new}`"),
        (Some(old), None) => format!("moved out of oneof `{old}`"),
        (Some(old), Some(new)) => format!("moved from oneof `{old}` to oneof `{new}`"),
        (None, None) => "kept its oneof".to_owned(),
    }
}

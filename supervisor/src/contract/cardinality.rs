//! A field's cardinality (presence, required, repeated, map) and which rule a
//! change of cardinality breaks.

use std::fmt;

use prost_types::field_descriptor_proto::Label;
use prost_types::{FieldDescriptorProto, FileDescriptorProto};

use super::field_kind::FieldKind;
use super::index::Index;
use super::rule::Rule;

/// The cardinalities buf distinguishes for FIELD_SAME_CARDINALITY.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cardinality {
    ImplicitPresence,
    ExplicitPresence,
    Required,
    Repeated,
    Map,
}

impl Cardinality {
    /// Editions files carry presence in `features`, which `prost-types` does
    /// not decode; they fall back to explicit presence, the editions default.
    pub fn of(field: &FieldDescriptorProto, kind: &FieldKind, file: &FileDescriptorProto, index: &Index<'_>) -> Self {
        match field.label.and_then(|label| Label::try_from(label).ok()) {
            Some(Label::Repeated) => {
                if kind.message_name().is_some_and(|name| index.is_map_entry(name)) {
                    Cardinality::Map
                } else {
                    Cardinality::Repeated
                }
            }
            Some(Label::Required) => Cardinality::Required,
            Some(Label::Optional) | None => {
                let explicit = field.proto3_optional == Some(true)
                    || field.oneof_index.is_some()
                    || kind.has_presence()
                    || file.syntax() != "proto3";
                if explicit { Cardinality::ExplicitPresence } else { Cardinality::ImplicitPresence }
            }
        }
    }

    fn is_singular(self) -> bool {
        matches!(self, Cardinality::ImplicitPresence | Cardinality::ExplicitPresence)
    }

    fn is_many(self) -> bool {
        matches!(self, Cardinality::Repeated | Cardinality::Map)
    }
}

/// Which rule, if any, a change from `old` to `new` cardinality breaks.
///
/// `oneof_moved` suppresses a presence-only change: entering or leaving a
/// oneof flips presence as a side effect, and FIELD_SAME_ONEOF already
/// reports the cause.
pub(crate) fn cardinality_rule(
    old: Cardinality,
    new: Cardinality,
    old_kind: &FieldKind,
    new_kind: &FieldKind,
    oneof_moved: bool,
) -> Option<Rule> {
    if old == new {
        return None;
    }
    if old.is_singular() && new.is_singular() {
        // Stricter than buf's WIRE_JSON on purpose: a reader that relied on
        // `has_x()` can no longer tell "unset" from the zero value.
        return (!oneof_moved).then_some(Rule::FieldSameCardinality);
    }
    if old.is_many() && new.is_many() {
        // Same bytes on the wire; a JSON array versus a JSON object.
        return Some(Rule::FieldWireJsonCompatibleCardinality);
    }
    let singular_many_swap = (old.is_singular() && new.is_many()) || (old.is_many() && new.is_singular());
    if singular_many_swap && old_kind.is_length_delimited() && new_kind.is_length_delimited() {
        // A singular reader keeps the last of several length-delimited
        // records, so only JSON (value versus array) breaks.
        return Some(Rule::FieldWireJsonCompatibleCardinality);
    }
    Some(Rule::FieldWireCompatibleCardinality)
}

impl fmt::Display for Cardinality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Cardinality::ImplicitPresence => "optional with implicit presence",
            Cardinality::ExplicitPresence => "optional with explicit presence",
            Cardinality::Required => "required",
            Cardinality::Repeated => "repeated",
            Cardinality::Map => "map",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_types::field_descriptor_proto::Type;

    const INT: FieldKind = FieldKind::Scalar(Type::Int32);
    const STRING: FieldKind = FieldKind::Scalar(Type::String);

    #[test]
    fn presence_change_is_reported_unless_caused_by_a_oneof_move() {
        use Cardinality::*;
        assert_eq!(
            cardinality_rule(ImplicitPresence, ExplicitPresence, &INT, &INT, false),
            Some(Rule::FieldSameCardinality)
        );
        assert_eq!(cardinality_rule(ImplicitPresence, ExplicitPresence, &INT, &INT, true), None);
    }

    #[test]
    fn singular_to_repeated_depends_on_the_encoding() {
        use Cardinality::*;
        assert_eq!(
            cardinality_rule(ImplicitPresence, Repeated, &INT, &INT, false),
            Some(Rule::FieldWireCompatibleCardinality)
        );
        assert_eq!(
            cardinality_rule(ImplicitPresence, Repeated, &STRING, &STRING, false),
            Some(Rule::FieldWireJsonCompatibleCardinality)
        );
    }

    #[test]
    fn map_and_repeated_differ_only_in_json_and_required_breaks_the_wire() {
        use Cardinality::*;
        let entry = FieldKind::Message("p.M.LabelsEntry".into());
        assert_eq!(
            cardinality_rule(Map, Repeated, &entry, &entry, false),
            Some(Rule::FieldWireJsonCompatibleCardinality)
        );
        assert_eq!(
            cardinality_rule(ExplicitPresence, Required, &INT, &INT, false),
            Some(Rule::FieldWireCompatibleCardinality)
        );
        assert_eq!(cardinality_rule(Repeated, Repeated, &INT, &STRING, false), None);
    }
}

//! What a field holds (scalar, message, enum, ...) and how far two kinds are
//! interchangeable on the wire and in JSON.

use std::fmt;

use prost_types::FieldDescriptorProto;
use prost_types::field_descriptor_proto::Type;

use super::index::Index;
use super::scope::strip_dot;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FieldKind {
    Scalar(Type),
    Message(String),
    Group(String),
    Enum(String),
    /// A type name that is neither a message nor an enum of its set.
    Unresolved(String),
    /// No type at all, or a type code protobuf does not define.
    Unknown(Option<i32>),
}

/// How a change of kind affects readers, from harmless to wire-breaking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KindChange {
    Same,
    /// Different kind, but both encodings read old data correctly.
    Compatible,
    /// Binary readers cope; JSON readers do not.
    BreaksJson,
    BreaksWire,
}

impl FieldKind {
    pub fn of(field: &FieldDescriptorProto, index: &Index<'_>) -> Self {
        let name = strip_dot(field.type_name()).to_owned();
        match field.r#type {
            Some(code) => match Type::try_from(code) {
                Ok(Type::Message) => FieldKind::Message(name),
                Ok(Type::Group) => FieldKind::Group(name),
                Ok(Type::Enum) => FieldKind::Enum(name),
                Ok(scalar) => FieldKind::Scalar(scalar),
                Err(_) => FieldKind::Unknown(Some(code)),
            },
            // Unlinked descriptors leave the type out and only name it.
            None if field.type_name.is_none() => FieldKind::Unknown(None),
            None if index.messages.contains_key(&name) => FieldKind::Message(name),
            None if index.enums.contains_key(&name) => FieldKind::Enum(name),
            None => FieldKind::Unresolved(name),
        }
    }

    /// Types whose singular and repeated forms share one wire encoding.
    pub fn is_length_delimited(&self) -> bool {
        matches!(self, FieldKind::Scalar(Type::String | Type::Bytes) | FieldKind::Message(_))
    }

    /// Message and group fields always track presence.
    pub fn has_presence(&self) -> bool {
        matches!(self, FieldKind::Message(_) | FieldKind::Group(_))
    }

    pub fn message_name(&self) -> Option<&str> {
        match self {
            FieldKind::Message(name) => Some(name),
            _ => None,
        }
    }
}

/// Modeled on buf's FIELD_WIRE_COMPATIBLE_TYPE and FIELD_WIRE_JSON_COMPATIBLE_TYPE.
pub(crate) fn compare_kinds(old: &FieldKind, new: &FieldKind) -> KindChange {
    if old == new {
        return KindChange::Same;
    }
    match (old, new) {
        (FieldKind::Scalar(old), FieldKind::Scalar(new)) => compare_scalars(*old, *new),
        // Enums are varints on the wire but names in JSON.
        (FieldKind::Enum(_), FieldKind::Scalar(scalar)) | (FieldKind::Scalar(scalar), FieldKind::Enum(_))
            if is_plain_varint_integer(*scalar) =>
        {
            KindChange::BreaksJson
        }
        _ => KindChange::BreaksWire,
    }
}

fn compare_scalars(old: Type, new: Type) -> KindChange {
    if json_group(old).is_some() && json_group(old) == json_group(new) {
        return KindChange::Compatible;
    }
    // Old bytes need not be UTF-8, so a string reader may reject them.
    if old == Type::Bytes && new == Type::String {
        return KindChange::BreaksWire;
    }
    if wire_group(old) == wire_group(new) { KindChange::BreaksJson } else { KindChange::BreaksWire }
}

/// Types that decode each other's binary encoding.
fn wire_group(scalar: Type) -> u8 {
    match scalar {
        Type::Int32 | Type::Uint32 | Type::Int64 | Type::Uint64 | Type::Bool => 1,
        Type::Sint32 | Type::Sint64 => 2,
        Type::Fixed32 | Type::Sfixed32 => 3,
        Type::Fixed64 | Type::Sfixed64 => 4,
        Type::String | Type::Bytes => 5,
        Type::Float => 6,
        Type::Double => 7,
        Type::Message => 8,
        Type::Group => 9,
        Type::Enum => 10,
    }
}

/// Pairs that also share a JSON form: 32-bit integers are JSON numbers,
/// 64-bit integers are JSON strings; bool, zigzag-vs-plain and string-vs-bytes
/// (base64) all differ.
fn json_group(scalar: Type) -> Option<u8> {
    match scalar {
        Type::Int32 | Type::Uint32 => Some(1),
        Type::Int64 | Type::Uint64 => Some(2),
        Type::Fixed32 | Type::Sfixed32 => Some(3),
        Type::Fixed64 | Type::Sfixed64 => Some(4),
        _ => None,
    }
}

fn is_plain_varint_integer(scalar: Type) -> bool {
    matches!(scalar, Type::Int32 | Type::Uint32 | Type::Int64 | Type::Uint64)
}

fn scalar_name(scalar: Type) -> &'static str {
    match scalar {
        Type::Double => "double",
        Type::Float => "float",
        Type::Int64 => "int64",
        Type::Uint64 => "uint64",
        Type::Int32 => "int32",
        Type::Fixed64 => "fixed64",
        Type::Fixed32 => "fixed32",
        Type::Bool => "bool",
        Type::String => "string",
        Type::Group => "group",
        Type::Message => "message",
        Type::Bytes => "bytes",
        Type::Uint32 => "uint32",
        Type::Enum => "enum",
        Type::Sfixed32 => "sfixed32",
        Type::Sfixed64 => "sfixed64",
        Type::Sint32 => "sint32",
        Type::Sint64 => "sint64",
    }
}

impl fmt::Display for FieldKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldKind::Scalar(scalar) => f.write_str(scalar_name(*scalar)),
            FieldKind::Message(name) => write!(f, "message `{name}`"),
            FieldKind::Group(name) => write!(f, "group `{name}`"),
            FieldKind::Enum(name) => write!(f, "enum `{name}`"),
            FieldKind::Unresolved(name) => write!(f, "unresolved type `{name}`"),
            FieldKind::Unknown(Some(code)) => write!(f, "unknown type code {code}"),
            FieldKind::Unknown(None) => f.write_str("no type"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar(t: Type) -> FieldKind {
        FieldKind::Scalar(t)
    }

    #[test]
    fn json_compatible_pairs_are_compatible_both_ways() {
        for (a, b) in [
            (Type::Int32, Type::Uint32),
            (Type::Int64, Type::Uint64),
            (Type::Fixed32, Type::Sfixed32),
            (Type::Fixed64, Type::Sfixed64),
        ] {
            assert_eq!(compare_kinds(&scalar(a), &scalar(b)), KindChange::Compatible);
            assert_eq!(compare_kinds(&scalar(b), &scalar(a)), KindChange::Compatible);
        }
    }

    #[test]
    fn wire_only_pairs_break_json() {
        for (a, b) in [
            (Type::Int32, Type::Int64),
            (Type::Uint64, Type::Bool),
            (Type::Sint32, Type::Sint64),
            (Type::String, Type::Bytes),
        ] {
            assert_eq!(compare_kinds(&scalar(a), &scalar(b)), KindChange::BreaksJson);
        }
    }

    #[test]
    fn bytes_to_string_breaks_the_wire_but_string_to_bytes_only_json() {
        assert_eq!(compare_kinds(&scalar(Type::Bytes), &scalar(Type::String)), KindChange::BreaksWire);
        assert_eq!(compare_kinds(&scalar(Type::String), &scalar(Type::Bytes)), KindChange::BreaksJson);
    }

    #[test]
    fn different_encodings_break_the_wire() {
        for (a, b) in [
            (Type::Int32, Type::Sint32),
            (Type::Int32, Type::String),
            (Type::Fixed32, Type::Float),
            (Type::Double, Type::Fixed64),
        ] {
            assert_eq!(compare_kinds(&scalar(a), &scalar(b)), KindChange::BreaksWire);
        }
    }

    #[test]
    fn named_types_must_keep_their_full_name() {
        let a = FieldKind::Message("p.A".into());
        let b = FieldKind::Message("p.B".into());
        assert_eq!(compare_kinds(&a, &b), KindChange::BreaksWire);
        assert_eq!(compare_kinds(&a, &a.clone()), KindChange::Same);
        let e = FieldKind::Enum("p.E".into());
        assert_eq!(compare_kinds(&e, &scalar(Type::Int32)), KindChange::BreaksJson);
        assert_eq!(compare_kinds(&e, &scalar(Type::Sint32)), KindChange::BreaksWire);
        assert_eq!(compare_kinds(&scalar(Type::Bytes), &a), KindChange::BreaksWire);
    }
}

//! Counting the definitions in an encoded `FileDescriptorSet` without decoding it: what
//! a declared contract will cost once parsed is about its number of definitions, not its
//! bytes (a message of one field encodes in a dozen bytes and parses into a kilobyte), so
//! the handshake bounds the count before anything is parsed.
//!
//! This walks the protobuf wire format by hand because decoding into `prost_types` to
//! count would itself allocate what the bound is there to refuse.

/// How deep messages may nest in a descriptor set before the count gives up: deeper
/// than any real contract, and short of a stack a hostile one could exhaust.
const MAX_NESTING: usize = 64;

/// Which fields of which descriptor hold definitions, and what their elements are.
#[derive(Clone, Copy)]
enum Kind {
    Set,
    File,
    Message,
    Enum,
    Service,
    /// A definition with nothing counted inside it (a field, an enum value, a method,
    /// a oneof).
    Leaf,
}

impl Kind {
    /// What field `number` of this kind holds, when it holds definitions.
    fn child(self, number: u64) -> Option<Kind> {
        match (self, number) {
            (Kind::Set, 1) => Some(Kind::File),
            // message_type, enum_type, service, extension
            (Kind::File, 4) | (Kind::Message, 3) => Some(Kind::Message),
            (Kind::File, 5) | (Kind::Message, 4) => Some(Kind::Enum),
            (Kind::File, 6) => Some(Kind::Service),
            // fields, extensions, oneofs, enum values, methods
            (Kind::File, 7) | (Kind::Message, 2 | 6 | 8) | (Kind::Enum, 2) | (Kind::Service, 2) => Some(Kind::Leaf),
            _ => None,
        }
    }
}

/// The number of files, messages, fields, enums, enum values, services, methods,
/// extensions and oneofs `set` defines; `None` when it is not well-formed protobuf (its
/// decoding then says why) or nests deeper than [`MAX_NESTING`].
pub fn count(set: &[u8]) -> Option<usize> {
    walk(set, Kind::Set, 0)
}

fn walk(mut buf: &[u8], kind: Kind, depth: usize) -> Option<usize> {
    if depth > MAX_NESTING {
        return None;
    }
    let mut n = 0usize;
    while !buf.is_empty() {
        let key = varint(&mut buf)?;
        let (number, wire) = (key >> 3, key & 7);
        match wire {
            0 => {
                varint(&mut buf)?;
            }
            1 => buf = buf.get(8..)?,
            2 => {
                let len = usize::try_from(varint(&mut buf)?).ok()?;
                let (body, rest) = buf.split_at_checked(len)?;
                buf = rest;
                if let Some(child) = kind.child(number) {
                    n = n.checked_add(1)?;
                    if !matches!(child, Kind::Leaf) {
                        n = n.checked_add(walk(body, child, depth + 1)?)?;
                    }
                }
            }
            5 => buf = buf.get(4..)?,
            _ => return None,
        }
    }
    Some(n)
}

fn varint(buf: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for i in 0..10 {
        let (&b, rest) = buf.split_first()?;
        *buf = rest;
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use prost::Message;
    use prost_types::{
        DescriptorProto, EnumDescriptorProto, EnumValueDescriptorProto, FieldDescriptorProto, FileDescriptorProto,
        FileDescriptorSet, MethodDescriptorProto, ServiceDescriptorProto,
    };

    use super::*;

    fn field(name: &str) -> FieldDescriptorProto {
        FieldDescriptorProto { name: Some(name.into()), number: Some(1), ..Default::default() }
    }

    #[test]
    fn every_kind_of_definition_is_counted_nested_ones_too() {
        let inner = DescriptorProto { name: Some("In".into()), field: vec![field("x")], ..Default::default() };
        let outer = DescriptorProto {
            name: Some("Out".into()),
            field: vec![field("a"), field("b")],
            nested_type: vec![inner],
            enum_type: vec![EnumDescriptorProto {
                name: Some("E".into()),
                value: vec![EnumValueDescriptorProto::default(), EnumValueDescriptorProto::default()],
                ..Default::default()
            }],
            ..Default::default()
        };
        let service = ServiceDescriptorProto {
            name: Some("S".into()),
            method: vec![MethodDescriptorProto::default(); 3],
            ..Default::default()
        };
        let file = FileDescriptorProto {
            name: Some("a.proto".into()),
            package: Some("p".into()),
            dependency: vec!["b.proto".into()],
            message_type: vec![outer],
            service: vec![service],
            ..Default::default()
        };
        let set = FileDescriptorSet { file: vec![file, FileDescriptorProto::default()] }.encode_to_vec();
        // 2 files; Out, its 2 fields, In and its field; E and its 2 values; S and its 3
        // methods. Names, packages and dependencies are not definitions.
        assert_eq!(count(&set), Some(2 + 3 + 2 + 3 + 4));
    }

    #[test]
    fn the_contracts_shipped_here_count_as_they_should() {
        let n = count(crate::FILE_DESCRIPTOR_SET).unwrap();
        let pool = prost_reflect::DescriptorPool::decode(crate::FILE_DESCRIPTOR_SET).unwrap();
        let messages: usize = pool.all_messages().map(|m| 1 + m.fields().len() + m.oneofs().len()).sum();
        let enums: usize = pool.all_enums().map(|e| 1 + e.values().len()).sum();
        let services: usize = pool.services().map(|s| 1 + s.methods().len()).sum();
        let files = pool.files().len();
        assert_eq!(n, files + messages + enums + services + pool.all_extensions().count());
    }

    #[test]
    fn what_is_not_protobuf_or_nests_without_end_counts_as_nothing() {
        assert_eq!(count(&[0x0a, 0x05, 0x01]), None, "a length past the end");
        assert_eq!(count(&[0xff; 11]), None, "a varint of 11 bytes");
        assert_eq!(count(&[0x0b]), None, "a group, which descriptors never hold");
        // A message nested in a message, and so on, deeper than any contract.
        let mut m = DescriptorProto::default();
        for _ in 0..100 {
            m = DescriptorProto { nested_type: vec![m], ..Default::default() };
        }
        let file = FileDescriptorProto { message_type: vec![m], ..Default::default() };
        assert_eq!(count(&FileDescriptorSet { file: vec![file] }.encode_to_vec()), None);
        assert_eq!(count(&[]), Some(0));
    }
}

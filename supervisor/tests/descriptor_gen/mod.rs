//! Proptest strategies for descriptor sets and for mutations of them. Names,
//! packages and type references come from small pools so that references
//! often resolve (the comparison goes deep) and sometimes do not.

use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use prost_types::descriptor_proto::ReservedRange;
use prost_types::enum_descriptor_proto::EnumReservedRange;
use prost_types::{
    DescriptorProto, EnumDescriptorProto, EnumOptions, EnumValueDescriptorProto, FieldDescriptorProto, FieldOptions,
    FileDescriptorProto, FileDescriptorSet, MessageOptions, MethodDescriptorProto, MethodOptions, OneofDescriptorProto,
    ServiceDescriptorProto,
};

const NAMES: &[&str] = &["A", "B", "C", "", "a_b", "X.Y"];
const ENUM_NAMES: &[&str] = &["E", "F", ""];
const VALUE_NAMES: &[&str] = &["V0", "V1", "V2", "", "V0"];
const PACKAGES: &[&str] = &["", "p", "p.q"];
const FILES: &[&str] = &["a.proto", "b.proto", ""];
const SYNTAXES: &[&str] = &["proto2", "proto3", "editions", "nonsense"];
const TYPE_NAMES: &[&str] =
    &[".p.A", ".p.B", ".p.A.C", ".A", ".B", "p.B", ".p.E", ".E", ".p.A.E", "", ".missing.X", "A"];

fn pick(pool: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop::sample::select(pool).prop_map(str::to_owned)
}

fn number() -> impl Strategy<Value = i32> {
    prop_oneof![
        8 => 0..12i32,
        1 => -3..0i32,
        1 => Just(i32::MAX),
        1 => Just(i32::MIN),
        1 => Just(536_870_911),
    ]
}

fn field() -> impl Strategy<Value = FieldDescriptorProto> {
    (
        (option::of(pick(NAMES)), number(), option::of(0..5i32), option::of(0..20i32)),
        (option::of(pick(TYPE_NAMES)), option::of(-1..4i32), option::of(any::<bool>())),
        (option::of(pick(NAMES)), option::of(pick(&["1", "x", ""]))),
        option::of((option::of(any::<bool>()), option::of(any::<bool>()))),
    )
        .prop_map(
            |(
                (name, number, label, r#type),
                (type_name, oneof_index, proto3_optional),
                (json_name, default_value),
                options,
            )| {
                FieldDescriptorProto {
                    name,
                    number: Some(number),
                    label,
                    r#type,
                    type_name,
                    oneof_index,
                    proto3_optional,
                    json_name,
                    default_value,
                    options: options.map(|(deprecated, packed)| FieldOptions {
                        deprecated,
                        packed,
                        ..FieldOptions::default()
                    }),
                    ..FieldDescriptorProto::default()
                }
            },
        )
}

fn enum_type() -> impl Strategy<Value = EnumDescriptorProto> {
    (
        pick(ENUM_NAMES),
        vec((pick(VALUE_NAMES), number()), 0..5),
        vec((number(), number()), 0..3),
        vec(pick(VALUE_NAMES), 0..2),
        option::of(any::<bool>()),
    )
        .prop_map(|(name, values, ranges, reserved_name, allow_alias)| EnumDescriptorProto {
            name: Some(name),
            value: values
                .into_iter()
                .map(|(name, number)| EnumValueDescriptorProto {
                    name: Some(name),
                    number: Some(number),
                    options: None,
                })
                .collect(),
            reserved_range: ranges
                .into_iter()
                .map(|(start, end)| EnumReservedRange { start: Some(start), end: Some(end) })
                .collect(),
            reserved_name,
            options: allow_alias
                .map(|allow_alias| EnumOptions { allow_alias: Some(allow_alias), ..EnumOptions::default() }),
        })
}

fn message(depth: u32) -> BoxedStrategy<DescriptorProto> {
    let nested = if depth == 0 { Just(Vec::new()).boxed() } else { vec(message(depth - 1), 0..2).boxed() };
    (
        (pick(NAMES), vec(field(), 0..6), nested, vec(enum_type(), 0..2)),
        (
            vec(option::of(pick(NAMES)), 0..3),
            vec((number(), number()), 0..3),
            vec(pick(NAMES), 0..2),
            option::of((option::of(any::<bool>()), option::of(any::<bool>()))),
        ),
    )
        .prop_map(|((name, field, nested_type, enum_type), (oneofs, ranges, reserved_name, options))| DescriptorProto {
            name: Some(name),
            field,
            nested_type,
            enum_type,
            oneof_decl: oneofs.into_iter().map(|name| OneofDescriptorProto { name, options: None }).collect(),
            reserved_range: ranges
                .into_iter()
                .map(|(start, end)| ReservedRange { start: Some(start), end: Some(end) })
                .collect(),
            reserved_name,
            options: options.map(|(map_entry, message_set_wire_format)| MessageOptions {
                map_entry,
                message_set_wire_format,
                ..MessageOptions::default()
            }),
            ..DescriptorProto::default()
        })
        .boxed()
}

fn method() -> impl Strategy<Value = MethodDescriptorProto> {
    (
        pick(NAMES),
        option::of(pick(TYPE_NAMES)),
        option::of(pick(TYPE_NAMES)),
        option::of(any::<bool>()),
        option::of(any::<bool>()),
        option::of(-1..4i32),
    )
        .prop_map(|(name, input_type, output_type, client_streaming, server_streaming, level)| {
            MethodDescriptorProto {
                name: Some(name),
                input_type,
                output_type,
                client_streaming,
                server_streaming,
                options: level
                    .map(|level| MethodOptions { idempotency_level: Some(level), ..MethodOptions::default() }),
            }
        })
}

fn service() -> impl Strategy<Value = ServiceDescriptorProto> {
    (pick(NAMES), vec(method(), 0..4)).prop_map(|(name, method)| ServiceDescriptorProto {
        name: Some(name),
        method,
        options: None,
    })
}

fn file() -> impl Strategy<Value = FileDescriptorProto> {
    (
        pick(FILES),
        option::of(pick(PACKAGES)),
        option::of(pick(SYNTAXES)),
        vec(message(2), 0..4),
        vec(enum_type(), 0..2),
        vec(service(), 0..2),
    )
        .prop_map(|(name, package, syntax, message_type, enum_type, service)| FileDescriptorProto {
            name: Some(name),
            package,
            syntax,
            message_type,
            enum_type,
            service,
            ..FileDescriptorProto::default()
        })
}

pub fn descriptor_set() -> impl Strategy<Value = FileDescriptorSet> {
    vec(file(), 0..3).prop_map(|file| FileDescriptorSet { file })
}

/// One random edit; the selectors pick the element modulo what exists.
#[derive(Debug, Clone)]
pub struct Mutation {
    kind: u8,
    at: usize,
    value: i32,
    name: String,
    type_name: String,
}

fn mutation() -> impl Strategy<Value = Mutation> {
    (any::<u8>(), any::<usize>(), number(), pick(NAMES), pick(TYPE_NAMES))
        .prop_map(|(kind, at, value, name, type_name)| Mutation { kind, at, value, name, type_name })
}

/// A set and an edited copy of it: the shape of a real contract change.
pub fn mutated_pair() -> impl Strategy<Value = (FileDescriptorSet, FileDescriptorSet)> {
    (descriptor_set(), vec(mutation(), 1..6)).prop_map(|(old, mutations)| {
        let mut new = old.clone();
        for mutation in &mutations {
            apply(&mut new, mutation);
        }
        (old, new)
    })
}

fn apply(set: &mut FileDescriptorSet, m: &Mutation) {
    const KINDS: u8 = 20;
    match m.kind % KINDS {
        0 => remove_at(&mut set.file, m.at),
        1 => {
            if let Some(file) = nth(&mut set.file, m.at) {
                file.package = Some(m.name.clone());
            }
        }
        2 => {
            if let Some(file) = nth(&mut set.file, m.at) {
                remove_at(&mut file.message_type, m.at / 7);
            }
        }
        3 => with_field(set, m.at, |field| field.number = Some(m.value)),
        4 => with_field(set, m.at, |field| field.r#type = Some(m.value.rem_euclid(20))),
        5 => with_field(set, m.at, |field| field.label = Some(m.value.rem_euclid(5))),
        6 => with_field(set, m.at, |field| field.oneof_index = Some(m.value.rem_euclid(4) - 1)),
        7 => with_field(set, m.at, |field| field.name = Some(m.name.clone())),
        8 => with_field(set, m.at, |field| field.type_name = Some(m.type_name.clone())),
        9 => with_field(set, m.at, |field| {
            field.proto3_optional = Some(!field.proto3_optional.unwrap_or(false));
        }),
        10 => with_message(set, m.at, |message| remove_at(&mut message.field, m.at / 3)),
        11 => with_message(set, m.at, |message| {
            if let Some(copy) = message.field.first().cloned() {
                message.field.push(copy);
            }
        }),
        12 => with_message(set, m.at, |message| message.reserved_range.clear()),
        13 => with_message(set, m.at, |message| {
            message.reserved_range.push(ReservedRange { start: Some(m.value), end: Some(m.value.saturating_add(2)) });
            message.reserved_name.push(m.name.clone());
        }),
        14 => with_message(set, m.at, |message| {
            message.options = Some(MessageOptions { map_entry: Some(true), ..MessageOptions::default() });
        }),
        15 => with_enum(set, m.at, |r#enum| remove_at(&mut r#enum.value, m.at / 3)),
        16 => with_enum(set, m.at, |r#enum| {
            if let Some(value) = nth(&mut r#enum.value, m.at / 3) {
                value.number = Some(m.value);
            }
        }),
        17 => with_method(set, m.at, |method| method.input_type = Some(m.type_name.clone())),
        18 => with_method(set, m.at, |method| {
            method.server_streaming = Some(!method.server_streaming.unwrap_or(false));
        }),
        _ => {
            if let Some(file) = nth(&mut set.file, m.at) {
                remove_at(&mut file.service, m.at / 5);
            }
        }
    }
}

fn nth<T>(items: &mut [T], at: usize) -> Option<&mut T> {
    let len = items.len();
    if len == 0 {
        return None;
    }
    items.get_mut(at % len)
}

fn remove_at<T>(items: &mut Vec<T>, at: usize) {
    if !items.is_empty() {
        let len = items.len();
        items.remove(at % len);
    }
}

fn count_messages(messages: &[DescriptorProto]) -> usize {
    messages.iter().map(|message| 1 + count_messages(&message.nested_type)).sum()
}

/// Calls `edit` on the `n`-th message in pre-order over all files.
fn visit_message(
    messages: &mut [DescriptorProto],
    n: &mut usize,
    edit: &mut Option<impl FnOnce(&mut DescriptorProto)>,
) {
    for message in messages {
        if *n == 0 {
            if let Some(edit) = edit.take() {
                edit(message);
            }
            return;
        }
        *n -= 1;
        visit_message(&mut message.nested_type, n, edit);
        if edit.is_none() {
            return;
        }
    }
}

fn with_message(set: &mut FileDescriptorSet, at: usize, edit: impl FnOnce(&mut DescriptorProto)) {
    let total: usize = set.file.iter().map(|file| count_messages(&file.message_type)).sum();
    if total == 0 {
        return;
    }
    let mut n = at % total;
    let mut edit = Some(edit);
    for file in &mut set.file {
        visit_message(&mut file.message_type, &mut n, &mut edit);
        if edit.is_none() {
            return;
        }
    }
}

fn with_field(set: &mut FileDescriptorSet, at: usize, edit: impl FnOnce(&mut FieldDescriptorProto)) {
    with_message(set, at, |message| {
        if let Some(field) = nth(&mut message.field, at / 11) {
            edit(field);
        }
    });
}

fn with_enum(set: &mut FileDescriptorSet, at: usize, edit: impl FnOnce(&mut EnumDescriptorProto)) {
    let enums: Vec<&mut EnumDescriptorProto> = set.file.iter_mut().flat_map(|file| file.enum_type.iter_mut()).collect();
    let len = enums.len();
    if let Some(r#enum) = at.checked_rem(len).and_then(|i| enums.into_iter().nth(i)) {
        edit(r#enum);
    }
}

fn with_method(set: &mut FileDescriptorSet, at: usize, edit: impl FnOnce(&mut MethodDescriptorProto)) {
    let methods: Vec<&mut MethodDescriptorProto> = set
        .file
        .iter_mut()
        .flat_map(|file| file.service.iter_mut())
        .flat_map(|service| service.method.iter_mut())
        .collect();
    let len = methods.len();
    if let Some(method) = at.checked_rem(len).and_then(|i| methods.into_iter().nth(i)) {
        edit(method);
    }
}

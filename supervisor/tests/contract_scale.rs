//! Descriptors come from plugins: a huge one must cost near-linear time, not
//! quadratic (which at these sizes would take minutes).

use plugin_supervisor::contract::{Rule, Scope, diff};
use prost_types::descriptor_proto::ReservedRange;
use prost_types::{DescriptorProto, FieldDescriptorProto, FileDescriptorProto, FileDescriptorSet};

const FIELDS: i32 = 20_000;
const EXTRA_RANGES: i32 = 80_000;

fn set(message: DescriptorProto) -> FileDescriptorSet {
    FileDescriptorSet {
        file: vec![FileDescriptorProto {
            name: Some("big.proto".into()),
            package: Some("big".into()),
            message_type: vec![message],
            ..FileDescriptorProto::default()
        }],
    }
}

fn range(number: i32) -> ReservedRange {
    ReservedRange { start: Some(number), end: Some(number + 1) }
}

#[test]
fn deleting_twenty_thousand_reserved_fields_among_many_ranges() {
    let extra: Vec<ReservedRange> = (0..EXTRA_RANGES).map(|i| range(100_000 + 2 * i)).collect();
    let old = DescriptorProto {
        name: Some("Big".into()),
        field: (1..=FIELDS)
            .map(|number| FieldDescriptorProto {
                name: Some(format!("f{number}")),
                number: Some(number),
                r#type: Some(5),
                ..FieldDescriptorProto::default()
            })
            .collect(),
        reserved_range: extra.clone(),
        ..DescriptorProto::default()
    };
    let mut reserved_range = extra;
    reserved_range.extend((1..=FIELDS).map(range));
    let new = DescriptorProto {
        name: Some("Big".into()),
        reserved_range,
        reserved_name: (1..=FIELDS).map(|number| format!("f{number}")).collect(),
        ..DescriptorProto::default()
    };
    let report = diff(&set(old), &set(new), Scope::All);
    assert!(!report.is_breaking());
    assert_eq!(report.len(), usize::try_from(FIELDS).unwrap_or(usize::MAX));
    assert!(report.changes().iter().all(|change| change.rule == Rule::FieldDeletedReserved));
}

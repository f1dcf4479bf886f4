//! The contract a plugin declares at handshake: the descriptor sets of its
//! services merged into one, and a check that every served service is in it.

use std::collections::{BTreeMap, BTreeSet};

use prost::Message;
use prost_types::{FileDescriptorProto, FileDescriptorSet};

/// Why the declared contract cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum DescriptorError {
    #[error("descriptor set #{index} given to Plugin::descriptors does not decode: {source}")]
    Decode { index: usize, source: prost::DecodeError },
    #[error(
        "service {service} is served but not described by any descriptor set given to Plugin::descriptors (described: {described})"
    )]
    Undescribed { service: String, described: String },
    #[error(
        "descriptor sets #{first} and #{second} given to Plugin::descriptors both have a file named {name:?}, \
         with different contents: one would hide the other's types and services; give each .proto file a \
         path of its own (its package's directories), or build both sets from the same file"
    )]
    Conflict { name: String, first: usize, second: usize },
}

/// Where protobuf's own files are: the same in every set, whichever version made them.
const WELL_KNOWN: &str = "google/protobuf/";

/// Merges encoded sets (files deduplicated by name) and checks `services`
/// against them; returns the encoded merged set.
///
/// Sets often share files (each crate's set carries the well-known types and
/// common protos it imports): one copy is kept. Two different files of one name
/// are refused, as protoc refuses them in one build: keeping either would drop
/// the other's definitions without a word. Protobuf's own files are kept as
/// first given.
pub fn merge(sets: &[Vec<u8>], services: &[String]) -> Result<Vec<u8>, DescriptorError> {
    let mut merged = FileDescriptorSet::default();
    // Each file's name: the set it came from and its definitions, to compare.
    let mut seen: BTreeMap<String, (usize, FileDescriptorProto)> = BTreeMap::new();
    for (index, raw) in sets.iter().enumerate() {
        let set =
            FileDescriptorSet::decode(raw.as_slice()).map_err(|source| DescriptorError::Decode { index, source })?;
        for file in set.file {
            match seen.get(file.name()) {
                Some((first, kept)) => {
                    // The well-known types' files differ between generators (protox bundles
                    // a descriptor.proto from before editions, protoc 22 and later one with
                    // them) without a difference for a plugin's contract.
                    if !file.name().starts_with(WELL_KNOWN) && *kept != definitions(&file) {
                        return Err(DescriptorError::Conflict {
                            name: file.name().to_owned(),
                            first: *first,
                            second: index,
                        });
                    }
                }
                None => {
                    seen.insert(file.name().to_owned(), (index, definitions(&file)));
                    merged.file.push(file);
                }
            }
        }
    }
    let described: BTreeSet<String> = merged
        .file
        .iter()
        .flat_map(|f| {
            let pkg = f.package().to_owned();
            f.service.iter().map(
                move |s| {
                    if pkg.is_empty() { s.name().to_owned() } else { format!("{pkg}.{}", s.name()) }
                },
            )
        })
        .collect();
    for service in services {
        if !described.contains(service) {
            return Err(DescriptorError::Undescribed {
                service: service.clone(),
                described: described.iter().cloned().collect::<Vec<_>>().join(", "),
            });
        }
    }
    Ok(merged.encode_to_vec())
}

/// What `file` defines, without what generators differ in and the contract does not
/// depend on: comments and source positions, and the JSON names protoc fills in and
/// others leave to their default.
fn definitions(file: &FileDescriptorProto) -> FileDescriptorProto {
    fn strip(messages: &mut [prost_types::DescriptorProto]) {
        for m in messages {
            for f in m.field.iter_mut().chain(m.extension.iter_mut()) {
                f.json_name = None;
            }
            strip(&mut m.nested_type);
        }
    }
    let mut file = file.clone();
    file.source_code_info = None;
    strip(&mut file.message_type);
    for f in &mut file.extension {
        f.json_name = None;
    }
    file
}

#[cfg(test)]
mod tests {
    use prost_types::{DescriptorProto, FieldDescriptorProto, ServiceDescriptorProto, SourceCodeInfo};

    use super::*;

    fn file(name: &str, package: &str, service: &str) -> FileDescriptorProto {
        FileDescriptorProto {
            name: Some(name.into()),
            package: Some(package.into()),
            message_type: vec![DescriptorProto {
                name: Some("Req".into()),
                field: vec![FieldDescriptorProto { name: Some("a_b".into()), number: Some(1), ..Default::default() }],
                ..Default::default()
            }],
            service: vec![ServiceDescriptorProto { name: Some(service.into()), ..Default::default() }],
            ..Default::default()
        }
    }

    fn set(files: Vec<FileDescriptorProto>) -> Vec<u8> {
        FileDescriptorSet { file: files }.encode_to_vec()
    }

    fn files_of(merged: &[u8]) -> Vec<String> {
        FileDescriptorSet::decode(merged).unwrap().file.iter().map(|f| f.name().to_owned()).collect()
    }

    #[test]
    fn a_file_in_two_sets_is_kept_once() {
        let common = file("common.proto", "c", "Common");
        let mut with_comments = common.clone();
        with_comments.source_code_info = Some(SourceCodeInfo::default());
        with_comments.message_type[0].field[0].json_name = Some("aB".into());
        let sets = [set(vec![common, file("a.proto", "a", "A")]), set(vec![with_comments, file("b.proto", "b", "B")])];
        let merged = merge(&sets, &["a.A".into(), "b.B".into(), "c.Common".into()]).unwrap();
        assert_eq!(files_of(&merged), ["common.proto", "a.proto", "b.proto"]);
    }

    #[test]
    fn protobufs_own_files_from_two_generators_are_kept_as_first_given() {
        let old = file("google/protobuf/descriptor.proto", "google.protobuf", "Unused");
        let mut new = old.clone();
        new.message_type.push(DescriptorProto { name: Some("FeatureSet".into()), ..Default::default() });
        let sets = [set(vec![old.clone(), file("a.proto", "a", "A")]), set(vec![new, file("b.proto", "b", "B")])];
        let merged = merge(&sets, &["a.A".into(), "b.B".into()]).unwrap();
        let merged = FileDescriptorSet::decode(merged.as_slice()).unwrap();
        assert_eq!(merged.file.len(), 3);
        assert_eq!(merged.file[0], old, "the first set's copy");
    }

    /// Two crates each with a "service.proto" of their own: the second's service was
    /// dropped, and the plugin failed as if it had given no description of it.
    #[test]
    fn two_different_files_of_one_name_are_refused_naming_the_file_and_both_sets() {
        let sets = [set(vec![file("service.proto", "a", "A")]), set(vec![file("service.proto", "b", "B")])];
        let err = merge(&sets, &["a.A".into(), "b.B".into()]).unwrap_err();
        assert!(
            matches!(&err, DescriptorError::Conflict { name, first: 0, second: 1 } if name == "service.proto"),
            "{err:?}"
        );
        assert!(err.to_string().contains("descriptor sets #0 and #1"), "{err}");
    }
}

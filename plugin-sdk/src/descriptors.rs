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
    // Each file's name: the set it came from, its definitions to compare, and where it is
    // in `merged`.
    let mut seen: BTreeMap<String, (usize, FileDescriptorProto, usize)> = BTreeMap::new();
    for (index, raw) in sets.iter().enumerate() {
        let set =
            FileDescriptorSet::decode(raw.as_slice()).map_err(|source| DescriptorError::Decode { index, source })?;
        for file in set.file {
            match seen.get_mut(file.name()) {
                Some((first, kept, at)) => {
                    let this = definitions(&file);
                    if *kept == this {
                        continue;
                    }
                    // The well-known types' files differ between generators (protox bundles
                    // a descriptor.proto from before editions, protoc 22 and later one with
                    // FeatureSet): the copy defining the more is kept, as another set's
                    // files may use what only it defines.
                    if !file.name().starts_with(WELL_KNOWN) {
                        return Err(DescriptorError::Conflict {
                            name: file.name().to_owned(),
                            first: *first,
                            second: index,
                        });
                    }
                    if defines_all_of(&this, kept) && !defines_all_of(kept, &this) {
                        *kept = this;
                        if let Some(slot) = merged.file.get_mut(*at) {
                            *slot = file;
                        }
                    }
                }
                None => {
                    seen.insert(file.name().to_owned(), (index, definitions(&file), merged.file.len()));
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

/// Whether `a` defines every top-level message, enum and extension `b` does.
fn defines_all_of(a: &FileDescriptorProto, b: &FileDescriptorProto) -> bool {
    fn names(f: &FileDescriptorProto) -> BTreeSet<&str> {
        let messages = f.message_type.iter().map(|m| m.name());
        let enums = f.enum_type.iter().map(|e| e.name());
        messages.chain(enums).chain(f.extension.iter().map(|x| x.name())).collect()
    }
    names(b).is_subset(&names(a))
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

    /// protox bundles a descriptor.proto from before editions, protoc 22 and later one
    /// with FeatureSet, which another set's files may extend: the fuller copy is kept,
    /// whichever set came first, and neither is refused.
    #[test]
    fn of_protobufs_own_files_from_two_generators_the_fuller_is_kept() {
        let old = file("google/protobuf/descriptor.proto", "google.protobuf", "Unused");
        let mut new = old.clone();
        new.message_type.push(DescriptorProto { name: Some("FeatureSet".into()), ..Default::default() });
        for sets in [
            [set(vec![old.clone(), file("a.proto", "a", "A")]), set(vec![new.clone(), file("b.proto", "b", "B")])],
            [set(vec![new.clone(), file("a.proto", "a", "A")]), set(vec![old.clone(), file("b.proto", "b", "B")])],
        ] {
            let merged = merge(&sets, &["a.A".into(), "b.B".into()]).unwrap();
            let merged = FileDescriptorSet::decode(merged.as_slice()).unwrap();
            assert_eq!(files_of(&merged.encode_to_vec()), ["google/protobuf/descriptor.proto", "a.proto", "b.proto"]);
            assert_eq!(merged.file[0], new, "the copy defining FeatureSet");
        }
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

//! The contract a plugin declares at handshake: the descriptor sets of its
//! services merged into one, and a check that every served service is in it.

use std::collections::BTreeSet;

use prost::Message;
use prost_types::FileDescriptorSet;

/// Why the declared contract cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum DescriptorError {
    #[error("descriptor set #{index} given to Plugin::descriptors does not decode: {source}")]
    Decode { index: usize, source: prost::DecodeError },
    #[error(
        "service {service} is served but not described by any descriptor set given to Plugin::descriptors (described: {described})"
    )]
    Undescribed { service: String, described: String },
}

/// Merges encoded sets (files deduplicated by name) and checks `services`
/// against them; returns the encoded merged set.
pub fn merge(sets: &[Vec<u8>], services: &[String]) -> Result<Vec<u8>, DescriptorError> {
    let mut merged = FileDescriptorSet::default();
    let mut seen = BTreeSet::new();
    for (index, raw) in sets.iter().enumerate() {
        let set =
            FileDescriptorSet::decode(raw.as_slice()).map_err(|source| DescriptorError::Decode { index, source })?;
        for file in set.file {
            if seen.insert(file.name().to_owned()) {
                merged.file.push(file);
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

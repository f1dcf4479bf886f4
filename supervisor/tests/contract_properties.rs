//! Property tests: random, often nonsensical descriptor sets (dangling type
//! names, duplicate numbers, empty names, bogus labels and type codes) never
//! make the comparison panic, and a set compared with itself never changes.

mod descriptor_gen;

use descriptor_gen::{descriptor_set, mutated_pair};
use plugin_supervisor::contract::{Scope, diff, diff_bytes, fuzz_one};
use proptest::prelude::*;
use prost::Message;

fn config() -> ProptestConfig {
    ProptestConfig { cases: 512, ..ProptestConfig::default() }
}

fn services_of(set: &prost_types::FileDescriptorSet) -> Vec<String> {
    set.file
        .iter()
        .flat_map(|file| {
            file.service.iter().map(move |service| {
                if file.package().is_empty() {
                    service.name().to_owned()
                } else {
                    format!("{}.{}", file.package(), service.name())
                }
            })
        })
        .collect()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn a_set_compared_with_itself_reports_nothing(set in descriptor_set()) {
        let everything = diff(&set, &set, Scope::All);
        prop_assert!(everything.is_empty(), "{}", everything);
        let scoped = diff(&set, &set, Scope::services(services_of(&set)));
        prop_assert!(scoped.is_empty(), "{}", scoped);
    }

    #[test]
    fn mutated_pairs_never_panic_and_report_in_order((old, new) in mutated_pair()) {
        for scope in [Scope::All, Scope::services(services_of(&old))] {
            let report = diff(&old, &new, scope.clone());
            let text = report.to_string();
            prop_assert_eq!(text.lines().count(), report.len());
            let first_compatible = report
                .changes()
                .iter()
                .position(|change| !change.is_breaking())
                .unwrap_or(report.len());
            prop_assert!(report.changes().iter().skip(first_compatible).all(|c| !c.is_breaking()));
            prop_assert!(report.changes().iter().all(|c| !c.message.is_empty()));
            let _reverse = diff(&new, &old, scope);
        }
    }

    #[test]
    fn unrelated_random_pairs_never_panic(old in descriptor_set(), new in descriptor_set()) {
        let report = diff(&old, &new, Scope::All);
        let _ = report.to_string();
        let scoped = diff(&old, &new, Scope::services(services_of(&new)));
        let _ = scoped.to_string();
    }

    #[test]
    fn encoded_sets_compare_like_decoded_ones((old, new) in mutated_pair()) {
        let from_bytes = diff_bytes(&old.encode_to_vec(), &new.encode_to_vec());
        prop_assert_eq!(from_bytes.ok(), Some(diff(&old, &new, Scope::All)));
    }

    #[test]
    fn arbitrary_bytes_never_panic(old in prop::collection::vec(any::<u8>(), 0..256),
                                   new in prop::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(report) = diff_bytes(&old, &new) {
            let _ = report.to_string();
        }
        let mut joined = vec![0, 0];
        joined.extend(&old);
        joined.extend(&new);
        fuzz_one(&joined);
    }

    #[test]
    fn fuzz_entry_accepts_encoded_sets((old, new) in mutated_pair(), split in any::<u16>()) {
        let mut data = split.to_le_bytes().to_vec();
        data.extend(old.encode_to_vec());
        data.extend(new.encode_to_vec());
        fuzz_one(&data);
    }
}

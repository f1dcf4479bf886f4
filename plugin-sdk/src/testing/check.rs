//! The supervisor's checks of a handshake answer (its name, protocol and SDK
//! versions, and a contract that decodes, names only protobuf identifiers and
//! describes every service it claims),
//! made by the harness so that a plugin the supervisor would refuse fails its test.

use plugin_proto::plugin::v1::HandshakeResponse;
use prost_reflect::DescriptorPool;

use super::HarnessError;

/// The protocol versions the harness offers: the supervisor's.
pub const OFFERED: &[u32] = &[plugin_proto::PROTOCOL_VERSION];

/// Returns the declared contract, or why the supervisor would refuse the answer.
pub fn check(expected_name: &str, resp: &HandshakeResponse) -> Result<DescriptorPool, HarnessError> {
    if resp.name != expected_name {
        return Err(HarnessError::Name { declared: resp.name.clone(), expected: expected_name.to_owned() });
    }
    if !OFFERED.contains(&resp.protocol_version) {
        return Err(HarnessError::Protocol { chosen: resp.protocol_version, offered: OFFERED.to_vec() });
    }
    plugin_proto::declared::check(resp)?;
    semver::Version::parse(&resp.version)
        .map_err(|source| HarnessError::Version { version: resp.version.clone(), source })?;
    let sdk = semver::Version::parse(&resp.sdk_version)
        .map_err(|source| HarnessError::SdkVersion { version: resp.sdk_version.clone(), source })?;
    let supported = plugin_proto::SUPPORTED_SDK;
    // A constant that parses: the unit test below holds it to that.
    if !semver::VersionReq::parse(supported).is_ok_and(|req| req.matches(&sdk)) {
        return Err(HarnessError::UnsupportedSdk { sdk, supported });
    }
    let pool = DescriptorPool::decode(resp.file_descriptor_set.as_slice()).map_err(HarnessError::Contract)?;
    plugin_proto::declared::identifiers(&pool)?;
    for service in &resp.services {
        if pool.get_service_by_name(service).is_none() {
            let described: Vec<String> = pool.services().map(|s| s.full_name().to_owned()).collect();
            return Err(HarnessError::Undescribed { service: service.clone(), described: described.join(", ") });
        }
    }
    Ok(pool)
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    fn answer() -> HandshakeResponse {
        HandshakeResponse {
            name: "echo".into(),
            version: "1.2.3".into(),
            sdk_version: crate::SDK_VERSION.into(),
            protocol_version: plugin_proto::PROTOCOL_VERSION,
            services: vec!["supervisor.v1.Control".into()],
            file_descriptor_set: plugin_proto::FILE_DESCRIPTOR_SET.to_vec(),
        }
    }

    #[test]
    fn a_matching_answer_is_accepted_and_its_contract_returned() {
        let pool = check("echo", &answer()).unwrap();
        assert!(pool.get_service_by_name("supervisor.v1.Control").is_some());
    }

    #[test]
    fn a_service_of_the_supervisors_own_is_refused_as_the_supervisor_refuses_it() {
        let mut r = answer();
        r.services.push("plugin.v1.PluginLifecycle".into());
        let err = check("echo", &r).unwrap_err();
        let expected = plugin_proto::declared::Undeclarable::Reserved("plugin.v1.PluginLifecycle".into());
        assert!(matches!(&err, HarnessError::Undeclarable(e) if *e == expected), "{err:?}");
        assert_eq!(
            err.to_string(),
            "plugin declares service \"plugin.v1.PluginLifecycle\", which is the supervisor's own"
        );
    }

    #[test]
    fn this_sdk_is_in_the_range_the_supervisor_supports() {
        let req = semver::VersionReq::parse(plugin_proto::SUPPORTED_SDK).unwrap();
        assert!(req.matches(&semver::Version::parse(crate::SDK_VERSION).unwrap()));
    }

    #[test]
    fn each_mismatch_is_refused_with_its_own_variant_naming_both_sides() {
        type Mutation = fn(&mut HandshakeResponse);
        let cases: Vec<(Mutation, &str)> = vec![
            (|r| r.name = "other".into(), "answered the handshake as \"other\", but the config names it \"echo\""),
            (|r| r.protocol_version = 9, "protocol version 9, but the supervisor speaks [1]"),
            (|r| r.version = "one".into(), "plugin version \"one\" is not a semver version"),
            (|r| r.sdk_version = "x".into(), "plugin SDK version \"x\" is not a semver version"),
            (
                |r| r.sdk_version = "7.0.0".into(),
                "built with SDK 7.0.0, but the supervisor supports SDK >=0.1.0, <1.0.0",
            ),
            (|r| r.file_descriptor_set = vec![0xff, 0xff], "contract that does not decode"),
            (
                |r| r.services.push("nope.v1.Missing".into()),
                "\"nope.v1.Missing\" but its descriptors do not describe it (they describe: ",
            ),
        ];
        for (mutate, expected) in cases {
            let mut r = answer();
            mutate(&mut r);
            let err = check("echo", &r).unwrap_err();
            assert!(err.to_string().contains(expected), "{err} should contain {expected:?}");
        }
    }

    #[test]
    fn a_contract_naming_what_protoc_never_writes_is_refused_as_the_supervisor_refuses_it() {
        // A message named `A.B`: it decodes, and the supervisor refuses it at handshake.
        let mut set = prost_types::FileDescriptorSet::decode(plugin_proto::FILE_DESCRIPTOR_SET).unwrap();
        let file = set.file.iter_mut().find(|f| f.package() == "plugin.v1").unwrap();
        file.message_type.push(prost_types::DescriptorProto { name: Some("A.B".into()), ..Default::default() });
        let mut r = answer();
        r.file_descriptor_set = set.encode_to_vec();
        let err = check("echo", &r).unwrap_err();
        assert!(matches!(err, HarnessError::NotIdentifier(_)), "{err:?}");
        assert_eq!(err.to_string(), "plugin's contract names a message \"A.B\" which is not a protobuf identifier");
    }

    #[test]
    fn a_contract_that_uses_a_type_it_does_not_define_is_refused() {
        // What the SDK lets through (the service is there) and the supervisor does not:
        // a method's input type is missing from the set.
        let mut set = prost_types::FileDescriptorSet::decode(plugin_proto::FILE_DESCRIPTOR_SET).unwrap();
        let file = set.file.iter_mut().find(|f| f.package() == "plugin.v1").unwrap();
        file.message_type.retain(|m| m.name() != "HandshakeRequest");
        let mut r = answer();
        r.file_descriptor_set = set.encode_to_vec();
        let err = check("echo", &r).unwrap_err();
        assert!(matches!(err, HarnessError::Contract(_)), "{err:?}");
        assert!(err.to_string().contains("HandshakeRequest"), "{err}");
    }
}

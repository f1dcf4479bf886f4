//! Checking what a plugin declared at handshake against what the operator
//! configured: its name, the protocol and SDK versions, and a contract that
//! decodes and describes every service it claims to serve.

use std::sync::Arc;

use plugin_proto::plugin::v1::HandshakeResponse;

use crate::config::PluginSpec;

use super::contract::Contract;
use super::state::Declared;

/// Protocol versions this supervisor speaks.
pub const SUPPORTED_PROTOCOLS: &[u32] = &[plugin_proto::PROTOCOL_VERSION];

/// SDK versions this supervisor works with.
pub const SUPPORTED_SDK: &str = plugin_proto::SUPPORTED_SDK;

/// A handshake that passed every check.
#[derive(Debug)]
pub struct Accepted {
    pub declared: Declared,
    /// Shared with every instance that declared the same.
    pub contract: Arc<Contract>,
}

/// A name a plugin declared, quoted and escaped as Debug does, cut if long.
fn shown(name: &str) -> String {
    plugin_proto::declared::shown(name)
}

/// Returns why the plugin is refused, naming both sides where there are
/// two. `signed_version` is the version its signature vouches for, if any.
pub fn check(spec: &PluginSpec, resp: HandshakeResponse, signed_version: Option<&str>) -> Result<Accepted, String> {
    // The binary's own name guards against a config entry pointing at the wrong binary.
    // One binary may be configured under many names (as Vault mounts one plugin at
    // several paths): such an entry says which name its binary declares
    // (`declared_name`), so the check keeps its strength without the binary having to
    // learn, and then simply repeat, the name it was given. The name it serves under
    // is always the entry's.
    if resp.name != spec.declared_name {
        return Err(if spec.declared_name == spec.name {
            format!("plugin answered the handshake as {}, but the config names it {:?}", shown(&resp.name), spec.name)
        } else {
            format!(
                "plugin answered the handshake as {}, but the config says its binary declares {:?} (declared_name)",
                shown(&resp.name),
                spec.declared_name
            )
        });
    }
    if !SUPPORTED_PROTOCOLS.contains(&resp.protocol_version) {
        return Err(format!(
            "plugin chose protocol version {}, but this supervisor speaks {SUPPORTED_PROTOCOLS:?}",
            resp.protocol_version
        ));
    }
    plugin_proto::declared::check(&resp).map_err(|e| e.to_string())?;
    if let Some(allowed) = &spec.services
        && let Some(other) = resp.services.iter().find(|s| !allowed.contains(s))
    {
        return Err(format!(
            "plugin declares service {}, which its entry's services do not list (they are: {})",
            shown(other),
            if allowed.is_empty() { "none".to_owned() } else { allowed.join(", ") }
        ));
    }
    let version = semver::Version::parse(&resp.version)
        .map_err(|e| format!("plugin version {} is not a semver version: {e}", shown(&resp.version)))?;
    if let Some(req) = &spec.version_req
        && !req.matches(&version)
    {
        return Err(format!("plugin version {version} is outside the configured range {req}"));
    }
    if let Some(signed) = signed_version
        && signed != resp.version
    {
        return Err(format!("plugin declares version {} but its signature is for version {signed}", resp.version));
    }
    let sdk = semver::Version::parse(&resp.sdk_version)
        .map_err(|e| format!("plugin SDK version {} is not a semver version: {e}", shown(&resp.sdk_version)))?;
    let sdk_req = semver::VersionReq::parse(SUPPORTED_SDK).map_err(|e| e.to_string())?;
    if !sdk_req.matches(&sdk) {
        return Err(format!("plugin was built with SDK {sdk}, but this supervisor supports SDK {SUPPORTED_SDK}"));
    }
    let contract = Contract::shared(resp.file_descriptor_set, resp.services)
        .map_err(|e| format!("plugin declared a contract that does not decode: {e}"))?;
    plugin_proto::declared::identifiers(&contract.pool).map_err(|e| e.to_string())?;
    for service in &contract.services {
        if contract.pool.get_service_by_name(service).is_none() {
            return Err(format!("plugin declares service {service:?} but its descriptors do not describe it"));
        }
    }
    if let Some(pinned) = &spec.contract {
        check_contract(pinned, &contract.descriptor_set, &contract.services)?;
    }
    Ok(Accepted {
        declared: Declared {
            version: version.to_string(),
            sdk_version: sdk.to_string(),
            protocol_version: resp.protocol_version,
            services: contract.services.clone(),
        },
        contract,
    })
}

/// Compares the declared contract with the pinned one: every service the
/// pin describes must be served, without a breaking change.
fn check_contract(pinned: &prost_types::FileDescriptorSet, declared: &[u8], served: &[String]) -> Result<(), String> {
    use crate::contract::{Scope, Side, decode_descriptor_set, diff};
    let required: Vec<String> = pinned
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
    if let Some(missing) = required.iter().find(|s| !served.contains(s)) {
        return Err(format!(
            "the pinned contract requires service {missing}, which the plugin does not serve (it serves: {})",
            served.join(", ")
        ));
    }
    let declared = decode_descriptor_set(declared, Side::New).map_err(|e| e.to_string())?;
    let report = diff(pinned, &declared, Scope::services(required.iter().cloned()));
    if report.is_breaking() {
        let breaks: Vec<String> = report.breaking().map(|c| c.to_string()).collect();
        return Err(format!("contract breaks the pinned one in {} place(s): {}", breaks.len(), breaks.join("; ")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> PluginSpec {
        let cfg: crate::config::Config = "[supervisor.sandbox]\nallow_unsandboxed = true\n[[plugin]]\nname = \"echo\"\nbinary = \"/bin/true\"\ntier = \"none\"\n"
                .parse()
                .unwrap();
        cfg.specs().remove(0)
    }

    fn answer() -> HandshakeResponse {
        HandshakeResponse {
            name: "echo".into(),
            version: "1.2.3".into(),
            sdk_version: "0.1.0".into(),
            protocol_version: 1,
            services: vec!["supervisor.v1.Control".into()],
            file_descriptor_set: plugin_proto::FILE_DESCRIPTOR_SET.to_vec(),
        }
    }

    #[test]
    fn what_a_plugin_declares_is_bounded_and_cannot_claim_the_supervisors_own_services() {
        type Mutation = fn(&mut HandshakeResponse);
        let cases: Vec<(Mutation, &str)> = vec![
            (
                |r| r.services = vec!["plugin.v1.PluginLifecycle".into()],
                "plugin declares service \"plugin.v1.PluginLifecycle\", which is the supervisor's own",
            ),
            (
                |r| r.services.push("grpc.health.v1.Health".into()),
                "plugin declares service \"grpc.health.v1.Health\", which is the supervisor's own",
            ),
            (
                |r| r.services.push("grpc.reflection.v1alpha.ServerReflection".into()),
                "\"grpc.reflection.v1alpha.ServerReflection\", which is the supervisor's own",
            ),
            (
                |r| r.services.push("plugin.host.v1.Host".into()),
                "\"plugin.host.v1.Host\", which is the supervisor's own",
            ),
            (
                |r| r.services.push("a.v1.X\n2026-12-04T21:07:16Z ERROR forged".into()),
                "plugin declares service \"a.v1.X\\n2026-12-04T21:07:16Z ERROR forged\" which is not a protobuf full name",
            ),
            (|r| r.services.push("a..b".into()), "\"a..b\" which is not a protobuf full name"),
            (|r| r.version = format!("1.0.0+{}", "a".repeat(3 << 20)), "is longer than 128 bytes"),
            (|r| r.sdk_version = format!("0.1.0+{}", "a".repeat(200)), "plugin SDK version \"0.1.0+aaa"),
            (|r| r.file_descriptor_set = vec![0; (1 << 20) + 1], "descriptors of 1048577 bytes, more than the 1048576"),
            // Names of a few bytes each fit many thousands into the descriptors' limit;
            // routing matches every declared name against every other plugin's.
            (
                |r| r.services = (0..257).map(|i| format!("s{i}")).collect(),
                "plugin declares 257 services, more than the 256 a supervisor routes to one plugin",
            ),
            (|r| r.services.push(r.services[0].clone()), "plugin declares service \"supervisor.v1.Control\" twice"),
        ];
        for (mutate, expected) in cases {
            let mut r = answer();
            mutate(&mut r);
            let err = check(&spec(), r, None).unwrap_err();
            assert!(err.contains(expected), "{err:?} should contain {expected:?}");
            assert!(err.len() < 400, "{} bytes", err.len());
        }
    }

    /// A contract whose service `demo.v1.Demo` has one method `method` taking and returning
    /// a message `message` with a field `field`.
    fn contract_naming(method: &str, message: &str, field: &str) -> Vec<u8> {
        use prost::Message;
        use prost_types::{
            DescriptorProto, FieldDescriptorProto, FileDescriptorProto, FileDescriptorSet, MethodDescriptorProto,
            ServiceDescriptorProto, field_descriptor_proto,
        };
        let ty = format!(".demo.v1.{message}");
        let file = FileDescriptorProto {
            name: Some("demo.proto".into()),
            package: Some("demo.v1".into()),
            syntax: Some("proto3".into()),
            message_type: vec![DescriptorProto {
                name: Some(message.into()),
                field: vec![FieldDescriptorProto {
                    name: Some(field.into()),
                    number: Some(1),
                    label: Some(field_descriptor_proto::Label::Optional as i32),
                    r#type: Some(field_descriptor_proto::Type::String as i32),
                    json_name: Some("x".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            service: vec![ServiceDescriptorProto {
                name: Some("Demo".into()),
                method: vec![MethodDescriptorProto {
                    name: Some(method.into()),
                    input_type: Some(ty.clone()),
                    output_type: Some(ty),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        FileDescriptorSet { file: vec![file] }.encode_to_vec()
    }

    /// Its names reach `describe`, `list` and `call`'s answers on the operator's terminal,
    /// and the daemon's log: a name that is no protobuf identifier (an escape sequence, a
    /// line break) refuses the plugin, as a service name that is no full name does.
    #[test]
    fn every_name_in_a_declared_contract_is_a_protobuf_identifier() {
        let declare = |set: Vec<u8>| {
            let r = HandshakeResponse { services: vec!["demo.v1.Demo".into()], file_descriptor_set: set, ..answer() };
            check(&spec(), r, None)
        };
        assert!(declare(contract_naming("Get", "Ask", "text")).is_ok(), "a contract protoc would write");
        let cases = [
            (contract_naming("Get\u{1b}]0;PWNED\u{7}", "Ask", "text"), "method \"Get\\u{1b}]0;PWNED\\u{7}\""),
            (contract_naming("Get", "Ask\n2026-12-05T00:00:00Z ERROR forged", "text"), "message \"Ask\\n2026"),
            // Each part an identifier, but not a name protoc writes.
            (contract_naming("Get", "Ask.Inner", "text"), "message \"Ask.Inner\""),
            (contract_naming("Get", "Ask", "te xt"), "field \"te xt\""),
        ];
        for (set, named) in cases {
            let err = declare(set).unwrap_err();
            assert!(err.contains(&format!("plugin's contract names a {named}")), "{err:?} should name {named}");
            assert!(err.ends_with("which is not a protobuf identifier"), "{err:?}");
        }
    }

    #[test]
    fn a_plugin_may_declare_only_the_services_its_entry_lists() {
        let listed = |services: &str| {
            let text = format!(
                "[supervisor.sandbox]\nallow_unsandboxed = true\n[[plugin]]\nname = \"echo\"\nbinary = \"/bin/true\"\n\
                 tier = \"none\"\nservices = [{services}]\n"
            );
            text.parse::<crate::config::Config>().unwrap().specs().remove(0)
        };
        // The answer declares supervisor.v1.Control.
        assert!(check(&listed("\"supervisor.v1.Control\", \"other.v1.X\""), answer(), None).is_ok());
        let err = check(&listed("\"echo.v1.Echo\""), answer(), None).unwrap_err();
        assert_eq!(
            err,
            "plugin declares service \"supervisor.v1.Control\", which its entry's services do not list \
             (they are: echo.v1.Echo)"
        );
        let err = check(&listed(""), answer(), None).unwrap_err();
        assert!(err.ends_with("(they are: none)"), "{err}");
    }

    #[test]
    fn a_matching_answer_is_accepted() {
        let a = check(&spec(), answer(), None).unwrap();
        assert_eq!(a.declared.version, "1.2.3");
    }

    #[test]
    fn each_mismatch_is_refused_with_both_sides_named() {
        type Mutation = fn(&mut HandshakeResponse);
        let cases: Vec<(Mutation, &str)> = vec![
            (|r| r.name = "other".into(), "answered the handshake as \"other\", but the config names it \"echo\""),
            (|r| r.protocol_version = 9, "protocol version 9, but this supervisor speaks [1]"),
            (|r| r.version = "one".into(), "\"one\" is not a semver"),
            (|r| r.sdk_version = "7.0.0".into(), "built with SDK 7.0.0, but this supervisor supports SDK"),
            (|r| r.file_descriptor_set = vec![0xff, 0xff], "contract that does not decode"),
            (
                |r| r.services.push("nope.v1.Missing".into()),
                "\"nope.v1.Missing\" but its descriptors do not describe it",
            ),
        ];
        for (mutate, expected) in cases {
            let mut r = answer();
            mutate(&mut r);
            let err = check(&spec(), r, None).unwrap_err();
            assert!(err.contains(expected), "{err:?} should contain {expected:?}");
        }
    }

    /// One binary (declaring "echo") configured as "echo-eu" and "echo-us".
    fn named(name: &str, declared: Option<&str>) -> PluginSpec {
        let declared = declared.map(|d| format!("declared_name = {d:?}\n")).unwrap_or_default();
        let cfg: crate::config::Config = format!(
            "[supervisor.sandbox]\nallow_unsandboxed = true\n[[plugin]]\nname = {name:?}\n{declared}binary = \"/bin/true\"\ntier = \"none\"\n"
        )
        .parse()
        .unwrap();
        cfg.specs().remove(0)
    }

    #[test]
    fn an_entry_named_otherwise_accepts_the_name_its_binary_declares() {
        for name in ["echo-eu", "echo-us"] {
            assert!(check(&named(name, Some("echo")), answer(), None).is_ok(), "{name}");
        }
        let err = check(&named("echo-eu", None), answer(), None).unwrap_err();
        assert_eq!(err, "plugin answered the handshake as \"echo\", but the config names it \"echo-eu\"");
    }

    #[test]
    fn a_wrong_binary_under_another_name_is_still_refused() {
        let mut r = answer();
        r.name = "token-validator".into();
        let err = check(&named("echo-eu", Some("echo")), r, None).unwrap_err();
        assert_eq!(
            err,
            "plugin answered the handshake as \"token-validator\", but the config says its binary declares \"echo\" \
             (declared_name)"
        );
    }
}

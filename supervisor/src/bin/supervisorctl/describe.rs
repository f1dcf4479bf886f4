//! `list` and `describe`: the plugins' services, methods and message types, read from
//! the contracts they declared, printed as proto-like text the way `grpcurl describe`
//! prints them, or as JSON.

use std::collections::{HashSet, VecDeque};
use std::fmt::Write as _;
use std::process::ExitCode;

use plugin_proto::control::v1::{ContractsRequest, PluginContract};
use prost_reflect::{
    Cardinality, DescriptorPool, EnumDescriptor, FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor,
    ServiceDescriptor,
};
use serde_json::json;

use super::client::{Client, Wait};
use crate::exit::Failure;
use crate::stdout::outln;

/// A plugin and its decoded contract (None before its first handshake).
struct Declared {
    plugin: PluginContract,
    pool: Option<DescriptorPool>,
}

async fn contracts(c: &mut Client, w: &Wait, name: String) -> Result<Vec<Declared>, Failure> {
    let answer = w.answer(c.contracts(w.request(ContractsRequest { name }))).await?;
    answer
        .plugins
        .into_iter()
        .map(|plugin| {
            let pool =
                if plugin.file_descriptor_set.is_empty() {
                    None
                } else {
                    Some(DescriptorPool::decode(plugin.file_descriptor_set.as_slice()).map_err(|e| {
                        format!("plugin {:?} declared a contract that does not decode: {e}", plugin.name)
                    })?)
                };
            Ok(Declared { plugin, pool })
        })
        .collect()
}

/// The services `d` serves, as its contract describes them.
fn services(d: &Declared) -> Vec<ServiceDescriptor> {
    let Some(pool) = &d.pool else { return Vec::new() };
    d.plugin.services.iter().filter_map(|s| pool.get_service_by_name(s)).collect()
}

fn no_contract(d: &Declared) -> String {
    format!("{}: no contract yet (it has not started since the supervisor did)", d.plugin.name)
}

/// `supervisorctl list [NAME]`.
pub async fn list(c: &mut Client, w: &Wait, name: Option<String>, as_json: bool) -> Result<ExitCode, Failure> {
    let plugins = contracts(c, w, name.unwrap_or_default()).await?;
    if as_json {
        outln!("{}", serde_json::Value::Array(plugins.iter().map(list_json).collect()));
    } else {
        let colour = crate::colour::wanted();
        for line in plugins.iter().flat_map(|d| list_lines(d, colour)) {
            outln!("{line}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `list`'s lines for one plugin; its state coloured when `colour`.
fn list_lines(d: &Declared, colour: bool) -> Vec<String> {
    if d.pool.is_none() {
        return vec![no_contract(d)];
    }
    let state = crate::colour::state(&d.plugin.state, colour);
    let mut lines = vec![format!("{} ({state}, revision {})", d.plugin.name, d.plugin.revision)];
    for s in services(d) {
        lines.push(format!("  {}", s.full_name()));
        lines.extend(s.methods().map(|m| format!("    {}", m.name())));
    }
    lines
}

fn method_json(m: &MethodDescriptor) -> serde_json::Value {
    json!({
        "name": m.name(),
        "input": m.input().full_name(),
        "output": m.output().full_name(),
        "client_streaming": m.is_client_streaming(),
        "server_streaming": m.is_server_streaming(),
    })
}

fn list_json(d: &Declared) -> serde_json::Value {
    let services: Vec<_> = services(d)
        .iter()
        .map(|s| json!({"name": s.full_name(), "methods": s.methods().map(|m| method_json(&m)).collect::<Vec<_>>()}))
        .collect();
    json!({
        "name": d.plugin.name,
        "state": d.plugin.state,
        "revision": d.plugin.revision,
        "declared": d.pool.is_some(),
        "services": services,
    })
}

/// What `describe` was asked for.
#[derive(Debug)]
enum Target {
    Services(Vec<ServiceDescriptor>),
    Method(MethodDescriptor),
}

/// Finds `what` (`SERVICE` or `SERVICE/METHOD`, or everything when None) in `d`.
fn target(d: &Declared, what: Option<&str>) -> Result<Target, String> {
    if d.pool.is_none() {
        return Err(no_contract(d));
    }
    let served = services(d);
    let Some(what) = what else { return Ok(Target::Services(served)) };
    let bare = what.trim_start_matches('/');
    let is_service = |name: &str| served.iter().any(|s| s.full_name() == name);
    // `pkg.Service/Method`, or grpcurl's `pkg.Service.Method` when `pkg.Service` is served.
    let (service, method) = match bare.split_once('/') {
        Some((s, m)) => (s, Some(m)),
        None => match bare.rsplit_once('.') {
            Some((s, m)) if !is_service(bare) && is_service(s) => (s, Some(m)),
            _ => (bare, None),
        },
    };
    let names = || served.iter().map(|s| s.full_name().to_owned()).collect::<Vec<_>>().join(", ");
    let Some(s) = served.iter().find(|s| s.full_name() == service) else {
        return Err(format!("plugin {} serves no service {service} (it serves: {})", d.plugin.name, names()));
    };
    let Some(method) = method else { return Ok(Target::Services(vec![s.clone()])) };
    match s.methods().find(|m| m.name() == method) {
        Some(m) => Ok(Target::Method(m)),
        None => {
            let methods: Vec<_> = s.methods().map(|m| m.name().to_owned()).collect();
            Err(format!("service {service} has no method {method} (its methods: {})", methods.join(", ")))
        }
    }
}

/// `supervisorctl describe NAME [SERVICE[/METHOD]]`.
pub async fn describe(
    c: &mut Client,
    w: &Wait,
    name: String,
    what: Option<String>,
    as_json: bool,
) -> Result<ExitCode, Failure> {
    let plugins = contracts(c, w, name).await?;
    let Some(d) = plugins.first() else { return Err("the supervisor named no plugin".into()) };
    let target = target(d, what.as_deref())?;
    let described = Described::of(&target);
    if as_json {
        outln!("{}", described.json(&d.plugin.name));
    } else {
        outln!("{}", described.text());
    }
    Ok(ExitCode::SUCCESS)
}

/// Each symbol described, with its full name, kind and proto-like text.
struct Described(Vec<(String, &'static str, String)>);

impl Described {
    fn of(target: &Target) -> Self {
        let mut blocks = Vec::new();
        let methods: Vec<MethodDescriptor> = match target {
            Target::Services(services) => {
                for s in services {
                    blocks.push((s.full_name().to_owned(), "service", service_text(s)));
                }
                services.iter().flat_map(|s| s.methods()).collect()
            }
            Target::Method(m) => {
                blocks.push((m.full_name().to_owned(), "method", method_text(m)));
                vec![m.clone()]
            }
        };
        let roots = methods.iter().flat_map(|m| [m.input(), m.output()]);
        for ty in used_types(roots) {
            match ty {
                Type::Message(m) => blocks.push((m.full_name().to_owned(), "message", message_text(&m, ""))),
                Type::Enum(e) => blocks.push((e.full_name().to_owned(), "enum", enum_text(&e, ""))),
            }
        }
        Self(blocks)
    }

    fn text(&self) -> String {
        let blocks: Vec<String> =
            self.0.iter().map(|(name, kind, text)| format!("{name} is a{} {kind}:\n{text}", article(kind))).collect();
        blocks.join("\n\n")
    }

    fn json(&self, plugin: &str) -> serde_json::Value {
        let symbols: Vec<_> =
            self.0.iter().map(|(name, kind, text)| json!({"name": name, "kind": kind, "proto": text})).collect();
        json!({"plugin": plugin, "symbols": symbols})
    }
}

fn article(kind: &str) -> &'static str {
    if kind.starts_with(['a', 'e', 'i', 'o', 'u']) { "n" } else { "" }
}

#[derive(Clone)]
enum Type {
    Message(MessageDescriptor),
    Enum(EnumDescriptor),
}

/// The messages and enums `roots` use, themselves included, directly or through their
/// fields, each once, in the order first met; a type nested in one already listed is
/// printed inside it instead. Map entries are printed as `map<K, V>` fields.
fn used_types(roots: impl Iterator<Item = MessageDescriptor>) -> Vec<Type> {
    let mut seen = HashSet::new();
    let mut order = Vec::new();
    let mut queue: VecDeque<Type> = roots.map(Type::Message).collect();
    while let Some(ty) = queue.pop_front() {
        let name = match &ty {
            Type::Message(m) => m.full_name().to_owned(),
            Type::Enum(e) => e.full_name().to_owned(),
        };
        if !seen.insert(name) {
            continue;
        }
        if let Type::Message(m) = &ty {
            for f in m.fields() {
                match f.kind() {
                    Kind::Message(inner) => queue.push_back(Type::Message(inner)),
                    Kind::Enum(e) => queue.push_back(Type::Enum(e)),
                    _ => {}
                }
            }
        }
        order.push(ty);
    }
    let listed: HashSet<String> = order
        .iter()
        .filter_map(|t| match t {
            Type::Message(m) => Some(m.full_name().to_owned()),
            Type::Enum(_) => None,
        })
        .collect();
    let inside_listed = |parent: Option<MessageDescriptor>| {
        let mut p = parent;
        while let Some(m) = p {
            if listed.contains(m.full_name()) {
                return true;
            }
            p = m.parent_message();
        }
        false
    };
    order
        .into_iter()
        .filter(|t| match t {
            Type::Message(m) => !m.is_map_entry() && !inside_listed(m.parent_message()),
            Type::Enum(e) => !inside_listed(e.parent_message()),
        })
        .collect()
}

fn service_text(s: &ServiceDescriptor) -> String {
    let mut text = format!("service {} {{\n", s.name());
    for m in s.methods() {
        let _ = writeln!(text, "  {}", method_text(&m));
    }
    text.push('}');
    text
}

fn method_text(m: &MethodDescriptor) -> String {
    let stream = |yes: bool| if yes { "stream " } else { "" };
    format!(
        "rpc {} ( {}.{} ) returns ( {}.{} );",
        m.name(),
        stream(m.is_client_streaming()),
        m.input().full_name(),
        stream(m.is_server_streaming()),
        m.output().full_name()
    )
}

fn type_name(kind: &Kind) -> String {
    match kind {
        Kind::Double => "double".into(),
        Kind::Float => "float".into(),
        Kind::Int32 => "int32".into(),
        Kind::Int64 => "int64".into(),
        Kind::Uint32 => "uint32".into(),
        Kind::Uint64 => "uint64".into(),
        Kind::Sint32 => "sint32".into(),
        Kind::Sint64 => "sint64".into(),
        Kind::Fixed32 => "fixed32".into(),
        Kind::Fixed64 => "fixed64".into(),
        Kind::Sfixed32 => "sfixed32".into(),
        Kind::Sfixed64 => "sfixed64".into(),
        Kind::Bool => "bool".into(),
        Kind::String => "string".into(),
        Kind::Bytes => "bytes".into(),
        Kind::Message(m) => format!(".{}", m.full_name()),
        Kind::Enum(e) => format!(".{}", e.full_name()),
    }
}

fn field_text(f: &FieldDescriptor) -> String {
    if f.is_map()
        && let Kind::Message(entry) = f.kind()
    {
        let (k, v) = (entry.map_entry_key_field().kind(), entry.map_entry_value_field().kind());
        return format!("map<{}, {}> {} = {};", type_name(&k), type_name(&v), f.name(), f.number());
    }
    let label = match f.cardinality() {
        Cardinality::Repeated => "repeated ",
        Cardinality::Required => "required ",
        Cardinality::Optional if f.field_descriptor_proto().proto3_optional() => "optional ",
        Cardinality::Optional if f.parent_file().syntax() == prost_reflect::Syntax::Proto2 => "optional ",
        Cardinality::Optional => "",
    };
    format!("{label}{} {} = {};", type_name(&f.kind()), f.name(), f.number())
}

fn message_text(m: &MessageDescriptor, indent: &str) -> String {
    let inner = format!("{indent}  ");
    let mut text = format!("{indent}message {} {{\n", m.name());
    let mut oneofs_done = HashSet::new();
    for f in m.fields() {
        match f.containing_oneof().filter(|o| !o.is_synthetic()) {
            Some(o) => {
                if oneofs_done.insert(o.name().to_owned()) {
                    let _ = writeln!(text, "{inner}oneof {} {{", o.name());
                    for of in o.fields() {
                        let _ = writeln!(text, "{inner}  {}", field_text(&of));
                    }
                    let _ = writeln!(text, "{inner}}}");
                }
            }
            None => {
                let _ = writeln!(text, "{inner}{}", field_text(&f));
            }
        }
    }
    for nested in m.child_messages().filter(|n| !n.is_map_entry()) {
        let _ = writeln!(text, "{}", message_text(&nested, &inner));
    }
    for e in m.child_enums() {
        let _ = writeln!(text, "{}", enum_text(&e, &inner));
    }
    text.push_str(indent);
    text.push('}');
    text
}

fn enum_text(e: &EnumDescriptor, indent: &str) -> String {
    let mut text = format!("{indent}enum {} {{\n", e.name());
    for v in e.values() {
        let _ = writeln!(text, "{indent}  {} = {};", v.name(), v.number());
    }
    text.push_str(indent);
    text.push('}');
    text
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;

    const PROTO: &str = r#"syntax = "proto3";
package demo.v1;
import "google/protobuf/timestamp.proto";
enum Color { COLOR_UNSPECIFIED = 0; RED = 1; }
message Ask {
  string text = 1;
  repeated Color colors = 2;
  map<string, int64> counts = 3;
  optional uint32 limit = 4;
  oneof pick { string a = 5; Inner b = 6; }
  google.protobuf.Timestamp at = 7;
  message Inner { bytes data = 1; }
}
message Reply { string text = 1; }
service Demo {
  rpc Get(Ask) returns (Reply);
  rpc Follow(Ask) returns (stream Reply);
}
"#;

    fn declared(state: &str) -> Declared {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("demo.proto"), PROTO).unwrap();
        let set = protox::compile(["demo.proto"], [dir.path()]).unwrap().encode_to_vec();
        let plugin = PluginContract {
            name: "demo".into(),
            state: state.into(),
            revision: 2,
            services: vec!["demo.v1.Demo".into()],
            file_descriptor_set: set.clone(),
        };
        Declared { plugin, pool: Some(DescriptorPool::decode(set.as_slice()).unwrap()) }
    }

    #[test]
    fn on_a_terminal_list_colours_the_state_and_nothing_else() {
        let coloured = list_lines(&declared("running"), true);
        assert_eq!(coloured[0], "demo (\x1b[32mrunning\x1b[0m, revision 2)");
        let plain = list_lines(&declared("running"), false);
        assert_eq!(coloured.iter().map(|l| crate::colour::strip(l)).collect::<Vec<_>>(), plain);
    }

    #[test]
    fn list_names_each_plugins_services_and_methods() {
        assert_eq!(
            list_lines(&declared("running"), false),
            ["demo (running, revision 2)", "  demo.v1.Demo", "    Get", "    Follow"]
        );
        let none = Declared { plugin: PluginContract { name: "zoo".into(), ..Default::default() }, pool: None };
        assert_eq!(list_lines(&none, false), ["zoo: no contract yet (it has not started since the supervisor did)"]);
        let j = list_json(&declared("stopped"));
        assert_eq!(j["services"][0]["methods"][1]["server_streaming"], true);
        assert_eq!(j["services"][0]["methods"][0]["input"], "demo.v1.Ask");
    }

    #[test]
    fn describe_prints_a_service_with_the_types_it_uses_as_grpcurl_does() {
        let text = Described::of(&target(&declared("running"), None).unwrap()).text();
        let expected = "demo.v1.Demo is a service:
service Demo {
  rpc Get ( .demo.v1.Ask ) returns ( .demo.v1.Reply );
  rpc Follow ( .demo.v1.Ask ) returns ( stream .demo.v1.Reply );
}

demo.v1.Ask is a message:
message Ask {
  string text = 1;
  repeated .demo.v1.Color colors = 2;
  map<string, int64> counts = 3;
  optional uint32 limit = 4;
  oneof pick {
    string a = 5;
    .demo.v1.Ask.Inner b = 6;
  }
  .google.protobuf.Timestamp at = 7;
  message Inner {
    bytes data = 1;
  }
}

demo.v1.Reply is a message:
message Reply {
  string text = 1;
}

demo.v1.Color is an enum:
enum Color {
  COLOR_UNSPECIFIED = 0;
  RED = 1;
}

google.protobuf.Timestamp is a message:
message Timestamp {
  int64 seconds = 1;
  int32 nanos = 2;
}";
        assert_eq!(text, expected);
    }

    #[test]
    fn describe_prints_one_method_with_its_types() {
        let d = declared("running");
        let text = Described::of(&target(&d, Some("demo.v1.Demo/Follow")).unwrap()).text();
        assert!(
            text.starts_with(
                "demo.v1.Demo.Follow is a method:\nrpc Follow ( .demo.v1.Ask ) returns ( stream .demo.v1.Reply );\n\ndemo.v1.Ask is a message:"
            ),
            "{text}"
        );
        let j = Described::of(&target(&d, Some("/demo.v1.Demo/Get")).unwrap()).json("demo");
        assert_eq!(j["symbols"][0]["kind"], "method");
        assert_eq!(j["symbols"][0]["name"], "demo.v1.Demo.Get");
        // grpcurl's spelling: the method after a dot.
        let dotted = Described::of(&target(&d, Some("demo.v1.Demo.Follow")).unwrap()).text();
        assert_eq!(dotted, text);
        let err = target(&d, Some("demo.v1.Demo.Nope")).unwrap_err();
        assert_eq!(err, "service demo.v1.Demo has no method Nope (its methods: Get, Follow)");
    }

    #[test]
    fn unknown_services_and_methods_are_named_with_what_there_is() {
        let d = declared("running");
        let err = target(&d, Some("demo.v1.Nope")).unwrap_err();
        assert_eq!(err, "plugin demo serves no service demo.v1.Nope (it serves: demo.v1.Demo)");
        let err = target(&d, Some("demo.v1.Demo/Nope")).unwrap_err();
        assert_eq!(err, "service demo.v1.Demo has no method Nope (its methods: Get, Follow)");
        let none = Declared { plugin: PluginContract { name: "zoo".into(), ..Default::default() }, pool: None };
        assert_eq!(
            target(&none, None).unwrap_err(),
            "zoo: no contract yet (it has not started since the supervisor did)"
        );
    }
}

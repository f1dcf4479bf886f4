//! Bounds on what a plugin declares at handshake, beyond its being well formed: the
//! supervisor refuses a plugin past them, and the SDK's harness fails its test, with the
//! same words.

use crate::plugin::v1::HandshakeResponse;

/// The longest version (its own or its SDK's) a plugin may declare, in bytes: semver's
/// build metadata has no bound of its own, and the version is repeated in status, events
/// and metrics labels.
pub const MAX_VERSION: usize = 128;

/// The largest descriptor set a plugin may declare, in bytes. Parsed, one costs the
/// supervisor tens of times its size in memory (and its parsing holds up a runtime
/// thread), none of it charged to the plugin; real contracts are a few KiB, the
/// well-known types and a large API's dependencies a few hundred.
pub const MAX_DESCRIPTORS: usize = 1 << 20;

/// The longest service name a plugin may declare, in bytes.
pub const MAX_SERVICE_NAME: usize = 512;

/// The most services a plugin may declare. Real plugins serve a handful; every
/// declaration is matched against every other plugin's when calls are routed, and each
/// name is kept per instance and repeated in `status`.
pub const MAX_SERVICES: usize = 256;

/// Services the supervisor gives a meaning of its own (a name ending in `.` stands for
/// every service in that package): a plugin declaring one would have the gateway route
/// callers to its lifecycle (`Shutdown`) or stand in for the gateway's own health and
/// reflection.
pub const RESERVED: &[&str] =
    &["plugin.v1.PluginLifecycle", "plugin.host.v1.Host", "grpc.health.v1.Health", "grpc.reflection."];

/// What a plugin may not declare.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Undeclarable {
    #[error("plugin {what} {shown} is longer than {MAX_VERSION} bytes")]
    LongVersion { what: &'static str, shown: String },
    #[error("plugin declared descriptors of {0} bytes, more than the {MAX_DESCRIPTORS} a supervisor reads")]
    LargeDescriptors(usize),
    #[error("plugin declares service {0} which is not a protobuf full name")]
    NotAFullName(String),
    #[error("plugin declares service {0:?}, which is the supervisor's own")]
    Reserved(String),
    #[error("plugin declares {0} services, more than the {MAX_SERVICES} a supervisor routes to one plugin")]
    ManyServices(usize),
    #[error("plugin declares service {0} twice")]
    Twice(String),
}

/// Whether `resp` stays within the bounds above.
pub fn check(resp: &HandshakeResponse) -> Result<(), Undeclarable> {
    for (what, v) in [("version", &resp.version), ("SDK version", &resp.sdk_version)] {
        if v.len() > MAX_VERSION {
            return Err(Undeclarable::LongVersion { what, shown: shown(v) });
        }
    }
    if resp.file_descriptor_set.len() > MAX_DESCRIPTORS {
        return Err(Undeclarable::LargeDescriptors(resp.file_descriptor_set.len()));
    }
    if resp.services.len() > MAX_SERVICES {
        return Err(Undeclarable::ManyServices(resp.services.len()));
    }
    resp.services.iter().try_for_each(|s| service(s))?;
    let mut seen = std::collections::HashSet::with_capacity(resp.services.len());
    match resp.services.iter().find(|s| !seen.insert(s.as_str())) {
        Some(twice) => Err(Undeclarable::Twice(shown(twice))),
        None => Ok(()),
    }
}

/// Whether `name` may be a plugin's service: a protobuf full name, none of the
/// supervisor's own. The config's `services` lists are held to it too.
pub fn service(name: &str) -> Result<(), Undeclarable> {
    let identifier = |part: &str| {
        part.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    if name.len() > MAX_SERVICE_NAME || !name.split('.').all(identifier) {
        return Err(Undeclarable::NotAFullName(shown(name)));
    }
    let reserved = |r: &&str| if r.ends_with('.') { name.starts_with(r) } else { name == *r };
    match RESERVED.iter().any(reserved) {
        true => Err(Undeclarable::Reserved(name.to_owned())),
        false => Ok(()),
    }
}

/// What a plugin declared, quoted with its control characters escaped (as Debug does),
/// cut to 64 bytes with its length when longer.
pub fn shown(s: &str) -> String {
    const SHOWN: usize = 64;
    if s.len() <= SHOWN {
        return format!("{s:?}");
    }
    let cut = (0..=SHOWN).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0);
    format!("{:?}... ({} bytes)", &s[..cut], s.len())
}

/// A name in a declared contract that is not a protobuf identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("plugin's contract names a {what} {} which is not a protobuf identifier", shown(.name))]
pub struct NotIdentifier {
    what: &'static str,
    name: String,
}

/// Whether every name in a declared contract (its packages, messages, fields, oneofs,
/// enums and their values, services, methods, extensions) is a protobuf identifier, as
/// protoc writes only those. The decoder takes any string: unchecked, a name holding an
/// escape sequence or a line break reached the operator's terminal through `describe`,
/// `list` and `call`'s answers, and the daemon's log. Each is checked by its own name (a
/// message named `A.B` is not one protoc writes, though its full name would split well);
/// a package, dotted by nature, part by part.
pub fn identifiers(pool: &prost_reflect::DescriptorPool) -> Result<(), NotIdentifier> {
    fn identifier(part: &str) -> bool {
        part.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    }
    let one = |what: &'static str, name: &str| {
        if identifier(name) { Ok(()) } else { Err(NotIdentifier { what, name: name.to_owned() }) }
    };
    for f in pool.files() {
        let package = f.package_name();
        if !package.is_empty() && !package.split('.').all(identifier) {
            return Err(NotIdentifier { what: "package", name: package.to_owned() });
        }
    }
    for m in pool.all_messages() {
        one("message", m.name())?;
        for f in m.fields() {
            one("field", f.name())?;
        }
        for o in m.oneofs() {
            one("oneof", o.name())?;
        }
    }
    for e in pool.all_enums() {
        one("enum", e.name())?;
        for v in e.values() {
            one("enum value", v.name())?;
        }
    }
    for s in pool.services() {
        one("service", s.name())?;
        for m in s.methods() {
            one("method", m.name())?;
        }
    }
    for x in pool.all_extensions() {
        one("extension", x.name())?;
    }
    Ok(())
}

//! Services: presence, moves between packages, and which methods were
//! added or deleted.

use std::collections::BTreeMap;

use prost_types::MethodDescriptorProto;

use super::method::{MethodContext, compare_method};
use super::options::{keep_all, options_differ};
use super::{Sides, Sink};
use crate::contract::index::{Kind, ServiceEntry};
use crate::contract::location::Element;
use crate::contract::rule::Rule;

pub(super) fn compare_services(sides: &Sides<'_, '_>, sink: &mut Sink) {
    for name in &sides.old_selection.services {
        let element = || Element::Service { service: name.clone() };
        match (sides.old.services.get(name), sides.new.services.get(name)) {
            (Some(old), Some(new)) => compare_service(name, old, new, sink),
            (Some(old), None) => {
                let moved = sides.new.moved_from(Kind::Service, old.package(), name);
                match moved {
                    Some(moved) => sink.push(
                        Rule::ServiceSamePackage,
                        old.file_name(),
                        element(),
                        format!(
                            "service `{name}` moved to another package as `{moved}`, \
                             which changes every method's gRPC path"
                        ),
                    ),
                    None => sink.push(
                        Rule::ServiceNoDelete,
                        old.file_name(),
                        element(),
                        format!("service `{name}` was deleted"),
                    ),
                }
            }
            (None, new) => {
                // Fail closed: a pin that lacks a required service cannot vouch for it.
                let where_new = match new {
                    Some(_) => "the new contract defines it",
                    None => "neither does the new contract",
                };
                sink.push(
                    Rule::ScopeServiceMissing,
                    new.map(|entry| entry.file_name()).unwrap_or_default(),
                    element(),
                    format!(
                        "service `{name}` must be served but the old contract does not define it; \
                         {where_new}"
                    ),
                );
            }
        }
    }
    for name in &sides.new_selection.services {
        if sides.old_selection.services.contains(name) || sides.old.services.contains_key(name) {
            continue;
        }
        if let Some(new) = sides.new.services.get(name) {
            sink.push(
                Rule::ServiceAdded,
                new.file_name(),
                Element::Service { service: name.clone() },
                format!("service `{name}` was added"),
            );
        }
    }
}

fn compare_service(name: &str, old: &ServiceEntry<'_>, new: &ServiceEntry<'_>, sink: &mut Sink) {
    if options_differ(old.proto.options.as_ref(), new.proto.options.as_ref(), keep_all) {
        sink.push(
            Rule::OptionsChanged,
            new.file_name(),
            Element::Service { service: name.to_owned() },
            format!("options of service `{name}` changed"),
        );
    }
    let old_methods = methods_by_name(&old.proto.method);
    let new_methods = methods_by_name(&new.proto.method);
    for (method, old_method) in &old_methods {
        let element = Element::Method { service: name.to_owned(), method: (*method).to_owned() };
        match new_methods.get(method) {
            Some(new_method) => {
                let context = MethodContext { service: name, method, file: new.file_name(), element };
                compare_method(&context, old_method, new_method, sink);
            }
            None => sink.push(
                Rule::RpcNoDelete,
                old.file_name(),
                element,
                format!("method `{method}` was deleted from service `{name}`"),
            ),
        }
    }
    for method in new_methods.keys() {
        if !old_methods.contains_key(method) {
            sink.push(
                Rule::RpcAdded,
                new.file_name(),
                Element::Method { service: name.to_owned(), method: (*method).to_owned() },
                format!("method `{method}` was added to service `{name}`"),
            );
        }
    }
}

/// First definition wins, matching how the index treats duplicates.
fn methods_by_name(methods: &[MethodDescriptorProto]) -> BTreeMap<&str, &MethodDescriptorProto> {
    let mut by_name = BTreeMap::new();
    for method in methods {
        by_name.entry(method.name()).or_insert(method);
    }
    by_name
}

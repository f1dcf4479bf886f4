//! One method present on both sides: request and response types, streaming
//! modes, idempotency level and options.

use prost_types::MethodDescriptorProto;
use prost_types::method_options::IdempotencyLevel;

use super::Sink;
use super::options::options_differ;
use crate::contract::location::Element;
use crate::contract::rule::Rule;
use crate::contract::scope::strip_dot;

pub(super) struct MethodContext<'c> {
    pub service: &'c str,
    pub method: &'c str,
    pub file: &'c str,
    pub element: Element,
}

impl MethodContext<'_> {
    fn push(&self, sink: &mut Sink, rule: Rule, what: String) {
        let (service, method) = (self.service, self.method);
        sink.push(rule, self.file, self.element.clone(), format!("method `{method}` of service `{service}` {what}"));
    }
}

pub(super) fn compare_method(
    context: &MethodContext<'_>,
    old: &MethodDescriptorProto,
    new: &MethodDescriptorProto,
    sink: &mut Sink,
) {
    let (old_input, new_input) = (strip_dot(old.input_type()), strip_dot(new.input_type()));
    if old_input != new_input {
        context.push(
            sink,
            Rule::RpcSameRequestType,
            format!("changed request type from `{old_input}` to `{new_input}`"),
        );
    }
    let (old_output, new_output) = (strip_dot(old.output_type()), strip_dot(new.output_type()));
    if old_output != new_output {
        context.push(
            sink,
            Rule::RpcSameResponseType,
            format!("changed response type from `{old_output}` to `{new_output}`"),
        );
    }
    if old.client_streaming() != new.client_streaming() {
        context.push(sink, Rule::RpcSameClientStreaming, streaming_change("client", new.client_streaming()));
    }
    if old.server_streaming() != new.server_streaming() {
        context.push(sink, Rule::RpcSameServerStreaming, streaming_change("server", new.server_streaming()));
    }
    let old_level = idempotency(old);
    let new_level = idempotency(new);
    if old_level != new_level {
        context.push(
            sink,
            Rule::RpcSameIdempotencyLevel,
            format!("changed idempotency level from {} to {}", level_name(old_level), level_name(new_level)),
        );
    }
    let ignore_idempotency = |options: &mut prost_types::MethodOptions| {
        options.idempotency_level = None;
    };
    if options_differ(old.options.as_ref(), new.options.as_ref(), ignore_idempotency) {
        context.push(sink, Rule::OptionsChanged, "changed options".to_owned());
    }
}

fn streaming_change(side: &str, now: bool) -> String {
    if now { format!("became {side}-streaming") } else { format!("is no longer {side}-streaming") }
}

fn idempotency(method: &MethodDescriptorProto) -> i32 {
    method.options.as_ref().and_then(|options| options.idempotency_level).unwrap_or_default()
}

fn level_name(level: i32) -> String {
    match IdempotencyLevel::try_from(level) {
        Ok(known) => known.as_str_name().to_owned(),
        Err(_) => format!("unknown level {level}"),
    }
}

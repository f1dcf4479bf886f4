//! Where a change happened: the file and the fully-qualified element inside it.

use std::fmt;

/// The element a change is about, named by fully-qualified protobuf names
/// (without the leading dot) so an operator can grep the `.proto` sources.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Element {
    /// The file itself (package, file options).
    File,
    Service {
        service: String,
    },
    Method {
        service: String,
        method: String,
    },
    Message {
        message: String,
    },
    Field {
        message: String,
        field: String,
    },
    Oneof {
        message: String,
        oneof: String,
    },
    Enum {
        r#enum: String,
    },
    EnumValue {
        r#enum: String,
        value: String,
    },
}

impl fmt::Display for Element {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Element::File => f.write_str("(file)"),
            Element::Service { service } => f.write_str(service),
            // gRPC path form, because that is what a failing caller sees.
            Element::Method { service, method } => write!(f, "{service}/{method}"),
            Element::Message { message } => f.write_str(message),
            Element::Field { message, field } => write!(f, "{message}.{field}"),
            Element::Oneof { message, oneof } => write!(f, "{message}.{oneof}"),
            Element::Enum { r#enum } => f.write_str(r#enum),
            Element::EnumValue { r#enum, value } => write!(f, "{enum}.{value}"),
        }
    }
}

/// A file (as named inside the descriptor set) plus the element in it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Location {
    /// The descriptor's file name, e.g. `echo/v1/echo.proto`; empty when the
    /// element exists in neither contract.
    pub file: String,
    pub element: Element,
}

impl Location {
    pub fn new(file: impl Into<String>, element: Element) -> Self {
        Location { file: file.into(), element }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = if self.file.is_empty() { "<no file>" } else { &self.file };
        write!(f, "{file}: {}", self.element)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_uses_grpc_path_form() {
        let location =
            Location::new("echo.proto", Element::Method { service: "echo.v1.Echo".into(), method: "Say".into() });
        assert_eq!(location.to_string(), "echo.proto: echo.v1.Echo/Say");
    }

    #[test]
    fn missing_file_is_named_explicitly() {
        let location = Location::new("", Element::Service { service: "a.B".into() });
        assert_eq!(location.to_string(), "<no file>: a.B");
    }
}

//! The catalogue of rule ids: their stable names, severity and the encoding each one protects.

use std::fmt;

/// Which guarantee a rule protects.
///
/// `Wire` and `WireJson` mirror `buf breaking`'s categories; `Contract` marks
/// rules that are stricter than buf's WIRE_JSON because the supervisor must
/// refuse a plugin that no longer serves what was pinned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Category {
    /// Breaks the binary wire encoding (buf `WIRE`, also part of `WIRE_JSON`).
    Wire,
    /// Breaks only the JSON encoding (buf `WIRE_JSON`).
    WireJson,
    /// Breaks the served contract: a caller of the pinned services fails.
    Contract,
    /// Informational: a change that breaks nobody.
    Compatible,
}

impl Category {
    /// The name used in reports and in `docs/contract-rules.md`.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Wire => "WIRE",
            Category::WireJson => "WIRE_JSON",
            Category::Contract => "CONTRACT",
            Category::Compatible => "COMPATIBLE",
        }
    }
}

/// Whether a change refuses the plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Declared first so that sorting puts breaking changes on top.
    Breaking,
    Compatible,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Breaking => "BREAKING",
            Severity::Compatible => "compatible",
        })
    }
}

macro_rules! rules {
    ($($variant:ident => $id:literal, $category:ident, $buf:literal;)+) => {
        /// One check the comparison performs; `id()` is the stable string.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Rule {
            $($variant,)+
        }

        impl Rule {
            /// Every rule, in catalogue order, so docs and tests can prove coverage.
            pub const ALL: &'static [Rule] = &[$(Rule::$variant,)+];

            /// The stable id printed in reports and matched by tests and CI scripts.
            pub fn id(self) -> &'static str {
                match self {
                    $(Rule::$variant => $id,)+
                }
            }

            /// The guarantee this rule protects.
            pub fn category(self) -> Category {
                match self {
                    $(Rule::$variant => Category::$category,)+
                }
            }

            /// True when `buf breaking` has a rule with the same id.
            pub fn is_buf_rule(self) -> bool {
                match self {
                    $(Rule::$variant => $buf,)+
                }
            }
        }
    };
}

rules! {
    ServiceNoDelete => "SERVICE_NO_DELETE", Contract, true;
    ServiceSamePackage => "SERVICE_SAME_PACKAGE", Contract, false;
    ScopeServiceMissing => "SCOPE_SERVICE_MISSING", Contract, false;
    RpcNoDelete => "RPC_NO_DELETE", Contract, true;
    RpcSameRequestType => "RPC_SAME_REQUEST_TYPE", Wire, true;
    RpcSameResponseType => "RPC_SAME_RESPONSE_TYPE", Wire, true;
    RpcSameClientStreaming => "RPC_SAME_CLIENT_STREAMING", Wire, true;
    RpcSameServerStreaming => "RPC_SAME_SERVER_STREAMING", Wire, true;
    RpcSameIdempotencyLevel => "RPC_SAME_IDEMPOTENCY_LEVEL", Wire, true;
    FileSamePackage => "FILE_SAME_PACKAGE", Wire, true;
    MessageNoDelete => "MESSAGE_NO_DELETE", Contract, true;
    MessageSameRequiredFields => "MESSAGE_SAME_REQUIRED_FIELDS", Wire, true;
    MessageSameMessageSetWireFormat => "MESSAGE_SAME_MESSAGE_SET_WIRE_FORMAT", Wire, true;
    FieldNoDeleteUnlessNumberReserved => "FIELD_NO_DELETE_UNLESS_NUMBER_RESERVED", Wire, true;
    FieldNoDeleteUnlessNameReserved => "FIELD_NO_DELETE_UNLESS_NAME_RESERVED", WireJson, true;
    FieldSameNumber => "FIELD_SAME_NUMBER", Wire, false;
    FieldWireCompatibleType => "FIELD_WIRE_COMPATIBLE_TYPE", Wire, true;
    FieldWireJsonCompatibleType => "FIELD_WIRE_JSON_COMPATIBLE_TYPE", WireJson, true;
    FieldWireCompatibleCardinality => "FIELD_WIRE_COMPATIBLE_CARDINALITY", Wire, true;
    FieldWireJsonCompatibleCardinality => "FIELD_WIRE_JSON_COMPATIBLE_CARDINALITY", WireJson, true;
    FieldSameCardinality => "FIELD_SAME_CARDINALITY", Contract, true;
    FieldSameOneof => "FIELD_SAME_ONEOF", Wire, true;
    FieldSameName => "FIELD_SAME_NAME", WireJson, true;
    FieldSameJsonName => "FIELD_SAME_JSON_NAME", WireJson, true;
    FieldSameDefault => "FIELD_SAME_DEFAULT", Wire, true;
    FieldNoReuseReservedNumber => "FIELD_NO_REUSE_RESERVED_NUMBER", Wire, false;
    FieldNoReuseReservedName => "FIELD_NO_REUSE_RESERVED_NAME", WireJson, false;
    ReservedMessageNoDelete => "RESERVED_MESSAGE_NO_DELETE", Wire, true;
    EnumNoDelete => "ENUM_NO_DELETE", Contract, true;
    EnumValueNoDeleteUnlessNumberReserved => "ENUM_VALUE_NO_DELETE_UNLESS_NUMBER_RESERVED", Wire, true;
    EnumValueNoDeleteUnlessNameReserved => "ENUM_VALUE_NO_DELETE_UNLESS_NAME_RESERVED", WireJson, true;
    EnumValueSameName => "ENUM_VALUE_SAME_NAME", WireJson, true;
    EnumValueSameNumber => "ENUM_VALUE_SAME_NUMBER", Wire, false;
    EnumValueNoReuseReservedNumber => "ENUM_VALUE_NO_REUSE_RESERVED_NUMBER", Wire, false;
    EnumValueNoReuseReservedName => "ENUM_VALUE_NO_REUSE_RESERVED_NAME", WireJson, false;
    ReservedEnumNoDelete => "RESERVED_ENUM_NO_DELETE", Wire, true;
    ServiceAdded => "SERVICE_ADDED", Compatible, false;
    RpcAdded => "RPC_ADDED", Compatible, false;
    MessageAdded => "MESSAGE_ADDED", Compatible, false;
    EnumAdded => "ENUM_ADDED", Compatible, false;
    FieldAdded => "FIELD_ADDED", Compatible, false;
    OneofAdded => "ONEOF_ADDED", Compatible, false;
    EnumValueAdded => "ENUM_VALUE_ADDED", Compatible, false;
    ReservedAdded => "RESERVED_ADDED", Compatible, false;
    FieldDeletedReserved => "FIELD_DELETED_RESERVED", Compatible, false;
    EnumValueDeletedReserved => "ENUM_VALUE_DELETED_RESERVED", Compatible, false;
    FieldTypeChangedCompatible => "FIELD_TYPE_CHANGED_COMPATIBLE", Compatible, false;
    OptionsChanged => "OPTIONS_CHANGED", Compatible, false;
}

impl Rule {
    /// Severity follows from the category so a change can never be filed under
    /// a breaking rule yet reported as compatible.
    pub fn severity(self) -> Severity {
        match self.category() {
            Category::Compatible => Severity::Compatible,
            Category::Wire | Category::WireJson | Category::Contract => Severity::Breaking,
        }
    }

    /// Looks a rule up by its id, for expectation files and CLI filters.
    pub fn from_id(id: &str) -> Option<Rule> {
        Rule::ALL.iter().copied().find(|rule| rule.id() == id)
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn ids_are_unique_and_round_trip() {
        let ids: BTreeSet<&str> = Rule::ALL.iter().map(|rule| rule.id()).collect();
        assert_eq!(ids.len(), Rule::ALL.len());
        for rule in Rule::ALL {
            assert_eq!(Rule::from_id(rule.id()), Some(*rule));
        }
        assert_eq!(Rule::from_id("NOT_A_RULE"), None);
    }

    #[test]
    fn ids_are_screaming_snake_case() {
        for rule in Rule::ALL {
            let id = rule.id();
            assert!(id.chars().all(|c| c.is_ascii_uppercase() || c == '_'), "{id} is not SCREAMING_SNAKE_CASE");
        }
    }

    #[test]
    fn only_compatible_rules_are_not_breaking() {
        for rule in Rule::ALL {
            let compatible = rule.category() == Category::Compatible;
            assert_eq!(rule.severity() == Severity::Compatible, compatible, "{rule}");
        }
    }
}

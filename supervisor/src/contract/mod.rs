//! Protobuf contract checks: load two contracts, compare them under a scope,
//! and report every breaking and compatible change by rule id.
//!
//! Rules follow `buf breaking`'s WIRE and WIRE_JSON categories, plus a few
//! stricter ones a plugin supervisor needs; `docs/contract-rules.md` lists
//! them all with examples.

mod bytes;
mod cardinality;
mod compare;
mod error;
mod field_kind;
mod index;
mod json_name;
mod load;
mod location;
mod ranges;
mod report;
mod rule;
mod scope;
mod selection;

pub use bytes::{decode_descriptor_set, diff_bytes, fuzz_one};
pub use compare::diff;
pub use error::{ContractError, Side};
pub use load::{load_contract, load_contract_with_includes, load_protos};
pub use location::{Element, Location};
pub use report::{Change, Report};
pub use rule::{Category, Rule, Severity};
pub use scope::Scope;

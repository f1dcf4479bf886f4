//! The result of a comparison: every change found, in a stable order.

use std::collections::BTreeSet;
use std::fmt;

use super::location::Location;
use super::rule::{Rule, Severity};

/// One difference between the old and the new contract.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Change {
    pub severity: Severity,
    pub rule: Rule,
    pub location: Location,
    /// Names the element and says what changed, e.g.
    /// "field 2 `name` in message `echo.v1.EchoRequest` changed type from string to int32".
    pub message: String,
}

impl Change {
    /// Severity is derived from the rule so the two can never disagree.
    pub fn new(rule: Rule, location: Location, message: impl Into<String>) -> Self {
        Change { severity: rule.severity(), rule, location, message: message.into() }
    }

    pub fn rule_id(&self) -> &'static str {
        self.rule.id()
    }

    pub fn is_breaking(&self) -> bool {
        self.severity == Severity::Breaking
    }

    /// Breaking first, then by place, so two runs over the same inputs print
    /// byte-identical reports (CI diffs and tests depend on that).
    fn sort_key(&self) -> (Severity, &str, String, &'static str, &str) {
        (
            self.severity,
            self.location.file.as_str(),
            self.location.element.to_string(),
            self.rule.id(),
            self.message.as_str(),
        )
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} [{}] {}", self.severity, self.location, self.rule, self.message)
    }
}

/// All changes between two contracts, sorted and without duplicates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    changes: Vec<Change>,
}

impl Report {
    pub fn from_changes(mut changes: Vec<Change>) -> Self {
        changes.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
        changes.dedup();
        Report { changes }
    }

    /// True when at least one change must refuse the new contract.
    pub fn is_breaking(&self) -> bool {
        self.changes.iter().any(Change::is_breaking)
    }

    pub fn changes(&self) -> &[Change] {
        &self.changes
    }

    pub fn breaking(&self) -> impl Iterator<Item = &Change> {
        self.changes.iter().filter(|change| change.is_breaking())
    }

    pub fn compatible(&self) -> impl Iterator<Item = &Change> {
        self.changes.iter().filter(|change| !change.is_breaking())
    }

    /// The distinct rule ids that fired; what the case table compares against.
    pub fn rule_ids(&self) -> BTreeSet<&'static str> {
        self.changes.iter().map(Change::rule_id).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    pub fn len(&self) -> usize {
        self.changes.len()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for change in &self.changes {
            writeln!(f, "{change}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::location::Element;

    fn field(message: &str, field: &str) -> Location {
        Location::new("a.proto", Element::Field { message: message.into(), field: field.into() })
    }

    #[test]
    fn breaking_changes_print_first_one_per_line() {
        let report = Report::from_changes(vec![
            Change::new(Rule::FieldAdded, field("a.A", "x"), "field 3 `x` added"),
            Change::new(Rule::FieldSameName, field("a.B", "y"), "field 1 renamed from `z` to `y`"),
        ]);
        assert!(report.is_breaking());
        let text = report.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "BREAKING a.proto: a.B.y [FIELD_SAME_NAME] field 1 renamed from `z` to `y`",
                "compatible a.proto: a.A.x [FIELD_ADDED] field 3 `x` added",
            ]
        );
    }

    #[test]
    fn duplicates_collapse_and_order_is_input_independent() {
        let one = Change::new(Rule::FieldAdded, field("a.A", "x"), "added");
        let two = Change::new(Rule::OptionsChanged, field("a.A", "w"), "options");
        let forward = Report::from_changes(vec![one.clone(), two.clone(), one.clone()]);
        let backward = Report::from_changes(vec![two, one]);
        assert_eq!(forward, backward);
        assert_eq!(forward.len(), 2);
        assert!(!forward.is_breaking());
    }
}

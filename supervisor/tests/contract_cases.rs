//! Runs the contract case table in `contract-cases/`: the executable
//! specification of which changes break. `integration/tests/contract.rs`
//! replays the same directories through `supervisorctl contract diff`.

mod case_table;

use std::collections::BTreeSet;

use case_table::{Case, Verdict, load_cases};
use plugin_supervisor::contract::{Rule, Scope, Severity, diff};

const MINIMUM_CASES: usize = 30;

fn all_cases() -> Vec<Case> {
    match load_cases() {
        Ok(cases) => cases,
        Err(problem) => panic!("the case table is malformed: {problem}"),
    }
}

#[test]
fn every_case_gives_its_expected_verdict_and_rules() {
    let mut failures = Vec::new();
    for case in all_cases() {
        let report = match case.run() {
            Ok(report) => report,
            Err(problem) => {
                failures.push(format!("{}: {problem}", case.name));
                continue;
            }
        };
        let verdict = if report.is_breaking() { Verdict::Breaking } else { Verdict::Compatible };
        let fired: BTreeSet<String> = report.rule_ids().into_iter().map(str::to_owned).collect();
        if verdict != case.verdict || fired != case.rules {
            failures.push(format!(
                "{}: expected {:?} {:?}, got {:?} {:?}\n{report}",
                case.name, case.verdict, case.rules, verdict, fired
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn the_table_is_big_enough_to_be_a_specification() {
    let cases = all_cases();
    assert!(cases.len() >= MINIMUM_CASES, "only {} cases, want at least {MINIMUM_CASES}", cases.len());
    let breaking = cases.iter().filter(|case| case.verdict == Verdict::Breaking).count();
    assert!(breaking > 0 && breaking < cases.len());
}

#[test]
fn every_rule_is_specified_by_some_case() {
    let expected: BTreeSet<String> = all_cases().into_iter().flat_map(|case| case.rules).collect();
    let missing: Vec<&str> = Rule::ALL.iter().map(|rule| rule.id()).filter(|id| !expected.contains(*id)).collect();
    assert!(missing.is_empty(), "rules without a case: {missing:?}");
}

#[test]
fn expectations_are_consistent_with_rule_severities() {
    for case in all_cases() {
        let mut breaking_rule = false;
        for id in &case.rules {
            let rule = Rule::from_id(id);
            assert!(rule.is_some(), "{}: unknown rule id {id}", case.name);
            breaking_rule |= rule.is_some_and(|rule| rule.severity() == Severity::Breaking);
        }
        assert_eq!(breaking_rule, case.verdict == Verdict::Breaking, "{}: verdict disagrees with its rules", case.name);
    }
}

#[test]
fn each_side_compared_with_itself_reports_nothing() {
    for case in all_cases() {
        let (old, new) = match case.load() {
            Ok(sides) => sides,
            Err(problem) => panic!("{}: {problem}", case.name),
        };
        for (side, set) in [("old", &old), ("new", &new)] {
            let everything = diff(set, set, Scope::All);
            assert!(everything.is_empty(), "{} ({side} vs itself):\n{everything}", case.name);
            // A scope naming a service this side lacks fails closed, even
            // against itself; nothing else may fire.
            let scoped = diff(set, set, case.scope());
            let unexpected: Vec<&str> =
                scoped.rule_ids().into_iter().filter(|id| *id != Rule::ScopeServiceMissing.id()).collect();
            assert!(unexpected.is_empty(), "{} ({side} vs itself, scoped):\n{scoped}", case.name);
        }
    }
}

#[test]
fn reports_print_one_line_per_change_breaking_first() {
    for case in all_cases() {
        let Ok(report) = case.run() else {
            continue;
        };
        let text = report.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), report.len(), "{}", case.name);
        let first_compatible = lines.iter().position(|line| line.starts_with("compatible ")).unwrap_or(lines.len());
        assert!(
            lines.iter().skip(first_compatible).all(|line| line.starts_with("compatible ")),
            "{}: breaking line after a compatible one:\n{text}",
            case.name
        );
    }
}

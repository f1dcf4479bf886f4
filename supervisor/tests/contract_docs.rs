//! `docs/contract-rules.md` documents exactly the rules the code has, each
//! under its real category, with a before/after example.

use std::collections::BTreeSet;
use std::path::Path;

use plugin_supervisor::contract::Rule;

fn rules_doc() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/contract-rules.md");
    match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) => panic!("{}: {error}", path.display()),
    }
}

/// `(rule id, section text)` for every `### \`ID\`` heading.
fn sections(doc: &str) -> Vec<(String, String)> {
    doc.split("\n### `")
        .skip(1)
        .filter_map(|chunk| {
            let (id, body) = chunk.split_once('`')?;
            let body = body.split("\n## ").next().unwrap_or(body);
            Some((id.to_owned(), body.to_owned()))
        })
        .collect()
}

#[test]
fn every_rule_has_a_section_and_every_section_a_rule() {
    let doc = rules_doc();
    let documented: BTreeSet<String> = sections(&doc).into_iter().map(|(id, _)| id).collect();
    let implemented: BTreeSet<String> = Rule::ALL.iter().map(|rule| rule.id().to_owned()).collect();
    let undocumented: Vec<_> = implemented.difference(&documented).collect();
    let stale: Vec<_> = documented.difference(&implemented).collect();
    assert!(undocumented.is_empty(), "rules missing from the doc: {undocumented:?}");
    assert!(stale.is_empty(), "doc sections for unknown rules: {stale:?}");
}

#[test]
fn each_section_states_the_category_and_shows_an_example() {
    for (id, body) in sections(&rules_doc()) {
        let Some(rule) = Rule::from_id(&id) else {
            continue;
        };
        let category = format!("**Category:** {}", rule.category().as_str());
        assert!(body.contains(&category), "{id}: section lacks `{category}`");
        assert!(body.contains("```"), "{id}: section lacks an example");
        let origin = if rule.is_buf_rule() { "buf rule" } else { "ours" };
        assert!(body.contains(origin), "{id}: section should say `{origin}`");
    }
}

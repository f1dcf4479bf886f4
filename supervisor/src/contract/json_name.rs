//! The JSON name a field is encoded under.

use prost_types::FieldDescriptorProto;

/// The declared `json_name`, or the name protoc would derive, so descriptors
/// from compilers that omit `json_name` compare equal to ones that fill it.
pub(crate) fn json_name(field: &FieldDescriptorProto) -> String {
    match &field.json_name {
        Some(name) => name.clone(),
        None => derived_json_name(field.name()),
    }
}

/// protoc's rule: drop each underscore and upper-case the letter after it.
fn derived_json_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper_next = false;
    for c in name.chars() {
        if c == '_' {
            upper_next = true;
        } else if upper_next {
            out.push(c.to_ascii_uppercase());
            upper_next = false;
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derives_lower_camel_case_like_protoc() {
        assert_eq!(derived_json_name("user_id"), "userId");
        assert_eq!(derived_json_name("a__b_"), "aB");
        assert_eq!(derived_json_name("already"), "already");
    }

    #[test]
    fn declared_json_name_wins() {
        let field =
            FieldDescriptorProto { name: Some("user_id".into()), json_name: Some("uid".into()), ..Default::default() };
        assert_eq!(json_name(&field), "uid");
    }
}

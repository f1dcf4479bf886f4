//! A flat, name-keyed view of a `FileDescriptorSet`, built without trusting it:
//! duplicate names keep their first definition and nothing is resolved eagerly,
//! so nonsense descriptors index fine and compare deterministically.

use std::collections::BTreeMap;

use prost_types::{
    DescriptorProto, EnumDescriptorProto, FileDescriptorProto, FileDescriptorSet, ServiceDescriptorProto,
};

/// An element together with the file that declares it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry<'a, T> {
    pub file: &'a FileDescriptorProto,
    pub proto: &'a T,
}

impl<T> Entry<'_, T> {
    pub fn file_name(&self) -> &str {
        self.file.name()
    }

    pub fn package(&self) -> &str {
        self.file.package()
    }
}

pub(crate) type MessageEntry<'a> = Entry<'a, DescriptorProto>;
pub(crate) type EnumEntry<'a> = Entry<'a, EnumDescriptorProto>;
pub(crate) type ServiceEntry<'a> = Entry<'a, ServiceDescriptorProto>;

#[derive(Debug, Default)]
pub(crate) struct Index<'a> {
    pub files: BTreeMap<&'a str, &'a FileDescriptorProto>,
    pub services: BTreeMap<String, ServiceEntry<'a>>,
    pub messages: BTreeMap<String, MessageEntry<'a>>,
    pub enums: BTreeMap<String, EnumEntry<'a>>,
    /// Package-relative name -> fully-qualified names, to recognise an element
    /// that moved to another package rather than disappeared.
    local_names: BTreeMap<String, Vec<String>>,
}

impl<'a> Index<'a> {
    pub fn build(set: &'a FileDescriptorSet) -> Self {
        let mut index = Index::default();
        for file in &set.file {
            index.files.entry(file.name()).or_insert(file);
            index.add_file(file);
        }
        index
    }

    fn add_file(&mut self, file: &'a FileDescriptorProto) {
        let package = file.package();
        for service in &file.service {
            let fq = qualify(package, service.name());
            self.note_local(package, &fq);
            self.services.entry(fq).or_insert(Entry { file, proto: service });
        }
        for r#enum in &file.enum_type {
            self.add_enum(file, package, r#enum);
        }
        // An explicit stack instead of recursion: a hand-built descriptor can
        // nest arbitrarily deep.
        let mut pending: Vec<(String, &'a DescriptorProto)> =
            file.message_type.iter().map(|message| (package.to_owned(), message)).collect();
        while let Some((scope, message)) = pending.pop() {
            let fq = qualify(&scope, message.name());
            for r#enum in &message.enum_type {
                self.add_enum(file, &fq, r#enum);
            }
            pending.extend(message.nested_type.iter().map(|nested| (fq.clone(), nested)));
            self.note_local(package, &fq);
            self.messages.entry(fq).or_insert(Entry { file, proto: message });
        }
    }

    fn add_enum(&mut self, file: &'a FileDescriptorProto, scope: &str, r#enum: &'a EnumDescriptorProto) {
        let fq = qualify(scope, r#enum.name());
        self.note_local(file.package(), &fq);
        self.enums.entry(fq).or_insert(Entry { file, proto: r#enum });
    }

    fn note_local(&mut self, package: &str, fq: &str) {
        let local = local_name(package, fq).to_owned();
        let fqs = self.local_names.entry(local).or_default();
        if !fqs.iter().any(|known| known == fq) {
            fqs.push(fq.to_owned());
        }
    }

    /// An element of this set, accepted by `is_kind`, with the same
    /// package-relative name as `fq` (declared in `package` in the other set)
    /// but living in a different package.
    pub fn moved_from(&self, package: &str, fq: &str, is_kind: impl Fn(&str) -> bool) -> Option<&str> {
        let local = local_name(package, fq);
        self.local_names.get(local)?.iter().map(String::as_str).find(|candidate| *candidate != fq && is_kind(candidate))
    }

    pub fn message(&self, fq: &str) -> Option<&MessageEntry<'a>> {
        self.messages.get(fq)
    }

    pub fn is_map_entry(&self, fq: &str) -> bool {
        self.message(fq).is_some_and(|entry| is_map_entry(entry.proto))
    }
}

/// `package` + `.` + `name`, without a leading dot for the empty package.
pub(crate) fn qualify(scope: &str, name: &str) -> String {
    if scope.is_empty() { name.to_owned() } else { format!("{scope}.{name}") }
}

pub(crate) fn local_name<'n>(package: &str, fq: &'n str) -> &'n str {
    if package.is_empty() {
        return fq;
    }
    fq.strip_prefix(package).and_then(|rest| rest.strip_prefix('.')).unwrap_or(fq)
}

pub(crate) fn is_map_entry(message: &DescriptorProto) -> bool {
    message.options.as_ref().and_then(|options| options.map_entry).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(name: &str, nested: Vec<DescriptorProto>) -> DescriptorProto {
        DescriptorProto { name: Some(name.into()), nested_type: nested, ..Default::default() }
    }

    #[test]
    fn nested_messages_get_qualified_names_and_duplicates_keep_the_first() {
        let first = FileDescriptorProto {
            name: Some("a.proto".into()),
            package: Some("p".into()),
            message_type: vec![message("Outer", vec![message("Inner", vec![])])],
            ..Default::default()
        };
        let second = FileDescriptorProto {
            name: Some("b.proto".into()),
            package: Some("p".into()),
            message_type: vec![message("Outer", vec![])],
            ..Default::default()
        };
        let set = FileDescriptorSet { file: vec![first, second] };
        let index = Index::build(&set);
        let names: Vec<&str> = index.messages.keys().map(String::as_str).collect();
        assert_eq!(names, ["p.Outer", "p.Outer.Inner"]);
        assert_eq!(index.message("p.Outer").map(|entry| entry.file_name()), Some("a.proto"));
    }

    #[test]
    fn local_names_strip_only_a_whole_package() {
        assert_eq!(local_name("echo.v1", "echo.v1.Echo"), "Echo");
        assert_eq!(local_name("echo.v1", "echo.v10.Echo"), "echo.v10.Echo");
        assert_eq!(local_name("", "Echo"), "Echo");
    }
}

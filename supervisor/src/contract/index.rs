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
    /// Per kind, package-relative name -> fully-qualified names, to recognise an
    /// element that moved to another package rather than disappeared. Each name is
    /// noted once, when its kind's map first takes it: a set of many same-named
    /// elements (a thousand packages each with a message `X`) must not cost the
    /// square of their number, here or when looking for one that moved.
    local_names: [BTreeMap<String, Vec<String>>; 3],
}

/// What kind of element a name is of, for [`Index::moved_from`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Service = 0,
    Message = 1,
    Enum = 2,
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
            if !self.services.contains_key(&fq) {
                self.note_local(Kind::Service, package, &fq);
                self.services.insert(fq, Entry { file, proto: service });
            }
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
            if !self.messages.contains_key(&fq) {
                self.note_local(Kind::Message, package, &fq);
                self.messages.insert(fq, Entry { file, proto: message });
            }
        }
    }

    fn add_enum(&mut self, file: &'a FileDescriptorProto, scope: &str, r#enum: &'a EnumDescriptorProto) {
        let fq = qualify(scope, r#enum.name());
        if !self.enums.contains_key(&fq) {
            self.note_local(Kind::Enum, file.package(), &fq);
            self.enums.insert(fq, Entry { file, proto: r#enum });
        }
    }

    /// Called once per name of a kind: its kind's map did not have it yet.
    fn note_local(&mut self, kind: Kind, package: &str, fq: &str) {
        let local = local_name(package, fq).to_owned();
        self.local_names[kind as usize].entry(local).or_default().push(fq.to_owned());
    }

    /// An element of this set of kind `kind` with the same package-relative name
    /// as `fq` (declared in `package` in the other set) but living in a different
    /// package: the first declared. At most two candidates are looked at, since
    /// each name is listed once.
    pub fn moved_from(&self, kind: Kind, package: &str, fq: &str) -> Option<&str> {
        let local = local_name(package, fq);
        self.local_names[kind as usize].get(local)?.iter().map(String::as_str).find(|candidate| *candidate != fq)
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

    /// One file per package, each with a message `X`, `packages` times over (a plugin may
    /// declare about 35,000 within the 1 MiB descriptor limit).
    fn same_named(packages: usize, prefix: &str) -> FileDescriptorSet {
        let file = |i: usize| FileDescriptorProto {
            name: Some(format!("{prefix}{i}.proto")),
            package: Some(format!("{prefix}{i}")),
            message_type: vec![message("X", vec![])],
            ..Default::default()
        };
        FileDescriptorSet { file: (0..packages).map(file).collect() }
    }

    #[test]
    fn many_same_named_elements_index_and_compare_without_a_square_cost() {
        // Each message's name was compared with every one noted before under the same
        // package-relative name: 60,000 took 1.8e9 comparisons a side, seconds of the
        // daemon's one thread at a reload in release (about 24 s in a debug build, as this test
        // runs). Linear, it takes a fraction of a second; the bound is only against the
        // square.
        const N: usize = 60_000;
        let (old, new) = (same_named(N, "p"), same_named(N, "q"));
        let started = std::time::Instant::now();
        let index = Index::build(&old);
        assert_eq!(index.local_names[Kind::Message as usize]["X"].len(), N, "every package's X is noted once");
        assert_eq!(
            index.moved_from(Kind::Message, "q7", "q7.X"),
            Some("p0.X"),
            "the first declared that is not itself"
        );
        assert_eq!(index.moved_from(Kind::Message, "p0", "p0.X"), Some("p1.X"));
        assert_eq!(index.moved_from(Kind::Enum, "q7", "q7.X"), None, "a message is no enum that moved");
        let report = crate::contract::diff(&old, &new, crate::contract::Scope::All);
        assert_eq!(report.breaking().count(), N, "every message deleted (each hinted as moved)");
        let took = started.elapsed();
        assert!(
            took < std::time::Duration::from_secs(5),
            "indexing and comparing {N} same-named messages took {took:?}"
        );
    }

    #[test]
    fn local_names_strip_only_a_whole_package() {
        assert_eq!(local_name("echo.v1", "echo.v1.Echo"), "Echo");
        assert_eq!(local_name("echo.v1", "echo.v10.Echo"), "echo.v10.Echo");
        assert_eq!(local_name("", "Echo"), "Echo");
    }
}

//! File-level checks (package, file options) for the files that declare
//! something the scope covers. Files pair up by name, as in buf.

use std::collections::BTreeSet;

use super::options::{keep_all, options_differ};
use super::{Sides, Sink};
use crate::contract::location::Element;
use crate::contract::rule::Rule;

pub(super) fn compare_files(sides: &Sides<'_, '_>, sink: &mut Sink) {
    for name in files_in_scope(sides) {
        let (Some(old), Some(new)) = (sides.old.files.get(name), sides.new.files.get(name)) else {
            continue;
        };
        if old.package() != new.package() {
            sink.push(
                Rule::FileSamePackage,
                name,
                Element::File,
                format!(
                    "file `{name}` changed package from `{}` to `{}`, \
                     which renames every type and service in it",
                    old.package(),
                    new.package()
                ),
            );
        }
        if options_differ(old.options.as_ref(), new.options.as_ref(), keep_all) {
            sink.push(Rule::OptionsChanged, name, Element::File, format!("options of file `{name}` changed"));
        }
    }
}

fn files_in_scope<'s>(sides: &'s Sides<'_, '_>) -> BTreeSet<&'s str> {
    let old = sides.old;
    let selection = &sides.old_selection;
    let services = selection.services.iter().filter_map(|name| old.services.get(name).map(|entry| entry.file_name()));
    let messages = selection.messages.iter().filter_map(|name| old.messages.get(name).map(|entry| entry.file_name()));
    let enums = selection.enums.iter().filter_map(|name| old.enums.get(name).map(|entry| entry.file_name()));
    services.chain(messages).chain(enums).collect()
}

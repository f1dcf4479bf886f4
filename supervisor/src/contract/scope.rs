//! Which part of the old contract a comparison must protect.

/// What the new contract must still honour.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Scope {
    /// Every service, message and enum of the old descriptor set.
    #[default]
    All,
    /// Only these fully-qualified services (the ones a plugin must serve) and
    /// the messages and enums reachable from their methods; changes elsewhere
    /// are ignored because no caller of the plugin can observe them.
    Services(Vec<String>),
}

impl Scope {
    /// Accepts `.pkg.Service` as well as `pkg.Service`, as configs often copy
    /// names out of descriptors where they carry the leading dot.
    pub fn services<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Scope::Services(names.into_iter().map(|name| strip_dot(name.as_ref()).to_owned()).collect())
    }
}

pub(crate) fn strip_dot(name: &str) -> &str {
    name.strip_prefix('.').unwrap_or(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leading_dots_are_dropped() {
        assert_eq!(
            Scope::services([".echo.v1.Echo", "a.B"]),
            Scope::Services(vec!["echo.v1.Echo".into(), "a.B".into()])
        );
    }
}

//! Detecting option-only changes, which are reported but never break.

/// True when the options differ once `ignore` has cleared the options that a
/// dedicated rule already judges. An absent options message equals an empty one.
pub(super) fn options_differ<T>(old: Option<&T>, new: Option<&T>, ignore: impl Fn(&mut T)) -> bool
where
    T: Clone + Default + PartialEq,
{
    let normalise = |options: Option<&T>| {
        let mut options = options.cloned().unwrap_or_default();
        ignore(&mut options);
        options
    };
    normalise(old) != normalise(new)
}

/// For options no rule looks into.
pub(super) fn keep_all<T>(_: &mut T) {}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_types::MethodOptions;

    #[test]
    fn absent_equals_default_and_ignored_options_do_not_count() {
        let deprecated = MethodOptions { deprecated: Some(true), ..Default::default() };
        let idempotent = MethodOptions { idempotency_level: Some(1), ..Default::default() };
        assert!(!options_differ(None, Some(&MethodOptions::default()), keep_all));
        assert!(options_differ(None, Some(&deprecated), keep_all));
        assert!(!options_differ(None, Some(&idempotent), |options: &mut MethodOptions| {
            options.idempotency_level = None;
        }));
    }
}

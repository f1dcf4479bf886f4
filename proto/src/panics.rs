//! What a caught panic said, for the supervisor and the SDK alike, each of which reports
//! panics it contains (a handler's, a verifier's, a config load's) by their message.

use std::any::Any;

/// The message a panic's payload carries: `panic!`'s text, literal or formatted; `None`
/// for any other payload (`std::panic::panic_any`).
pub fn message(payload: &(dyn Any + Send)) -> Option<&str> {
    payload.downcast_ref::<&str>().copied().or_else(|| payload.downcast_ref::<String>().map(String::as_str))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_literal_or_formatted_panic_says_its_text_and_any_other_payload_nothing() {
        let caught = |f: fn()| std::panic::catch_unwind(f).unwrap_err();
        assert_eq!(super::message(caught(|| panic!("plain")).as_ref()), Some("plain"));
        assert_eq!(super::message(caught(|| panic!("n = {}", 7)).as_ref()), Some("n = 7"));
        assert_eq!(super::message(caught(|| std::panic::panic_any(7u8)).as_ref()), None);
    }
}

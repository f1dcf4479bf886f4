//! A plugin's own words (the message of a status it answered the handshake, init or a
//! health check with) made fit to keep and show: cut to [`MAX_SAID`] bytes, with control
//! characters escaped. Kept whole, they could forge a line of the daemon's log or rewrite
//! an operator's terminal (a newline, an escape sequence), and a message of megabytes,
//! repeated in status, events and retries, would swell the daemon and make `status`
//! answers larger than a client takes.

/// The most of a plugin's message that is kept, in bytes.
pub const MAX_SAID: usize = 1024;

/// `text` cut to [`MAX_SAID`] bytes (at a character's boundary, saying how long it was)
/// with its control characters escaped (`\n`, `\u{1b}`) as in the plugins' log lines
/// ([`crate::observe::forward::clean`]).
pub fn plugin_said(text: &str) -> String {
    if text.len() <= MAX_SAID {
        return crate::observe::forward::clean(text);
    }
    let cut = (0..=MAX_SAID).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
    format!("{}... ({} bytes in all)", crate::observe::forward::clean(&text[..cut]), text.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_cannot_start_a_line_or_move_the_cursor() {
        let forged = "bye\n2026-12-04T21:07:16Z  INFO supervisor stopping\x1b[31m";
        assert_eq!(plugin_said(forged), "bye\\n2026-12-04T21:07:16Z  INFO supervisor stopping\\u{1b}[31m");
    }

    #[test]
    fn a_long_message_is_cut_at_a_character_and_says_its_length() {
        let long = "é".repeat(5_000_000);
        let said = plugin_said(&long);
        assert!(said.len() <= MAX_SAID + 40, "{} bytes kept", said.len());
        assert!(said.ends_with("... (10000000 bytes in all)"), "{}", &said[said.len() - 40..]);
        assert_eq!(plugin_said("short and plain"), "short and plain");
    }
}

//! Colour on a terminal only: an instance's state in green (running), yellow
//! (starting, stopping: on its way) or red (backoff, failed: needs a look),
//! when stdout is a terminal and `NO_COLOR` is unset. Otherwise the output is
//! the very same bytes without the codes: padding is always counted on the
//! plain text, so a coloured line is the plain line with codes around words.

use std::io::IsTerminal;

const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[33m";
const RED: &str = "\x1b[31m";
const RESET: &str = "\x1b[0m";

/// Whether what goes to stdout is coloured: a terminal, and no `NO_COLOR`
/// (no-color.org: set to anything but the empty string turns colour off).
pub fn wanted() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// The colour of an instance state, if it has one (stopped has none).
fn of_state(state: &str) -> Option<&'static str> {
    match state {
        "running" => Some(GREEN),
        "backoff" | "failed" => Some(RED),
        // Stopping is an instance draining its calls.
        "starting" | "stopping" | "draining" => Some(YELLOW),
        _ => None,
    }
}

/// `state`, coloured when `on`.
pub fn state(state: &str, on: bool) -> String {
    match of_state(state) {
        Some(code) if on => format!("{code}{state}{RESET}"),
        _ => state.to_owned(),
    }
}

/// `state` coloured when `on`, then padded with spaces to `width` columns as
/// `format!("{state:<width$}")` pads the plain word.
pub fn state_padded(s: &str, width: usize, on: bool) -> String {
    let pad = width.saturating_sub(s.chars().count());
    format!("{}{}", state(s, on), " ".repeat(pad))
}

/// `text` without its colour codes (SGR sequences, `ESC [ ... m`).
#[cfg(test)]
pub fn strip(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' && chars.peek() == Some(&'[') {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// `text` cut to `columns` visible characters; colour codes are kept (and
/// closed, when the cut falls inside a coloured word).
pub fn fit(text: &str, columns: usize) -> String {
    let mut out = String::with_capacity(text.len());
    let mut shown = 0;
    let mut chars = text.chars().peekable();
    let mut open = false;
    while let Some(c) = chars.next() {
        if c == '\x1b' && chars.peek() == Some(&'[') {
            let mut code = String::from(c);
            for c in chars.by_ref() {
                code.push(c);
                if c == 'm' {
                    break;
                }
            }
            open = code != RESET;
            out.push_str(&code);
            continue;
        }
        if shown == columns {
            break;
        }
        out.push(c);
        shown += 1;
    }
    if open {
        out.push_str(RESET);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_are_coloured_by_what_they_ask_of_the_operator() {
        assert_eq!(state("running", true), "\x1b[32mrunning\x1b[0m");
        assert_eq!(state("backoff", true), "\x1b[31mbackoff\x1b[0m");
        assert_eq!(state("failed", true), "\x1b[31mfailed\x1b[0m");
        assert_eq!(state("starting", true), "\x1b[33mstarting\x1b[0m");
        assert_eq!(state("stopping", true), "\x1b[33mstopping\x1b[0m");
        assert_eq!(state("stopped", true), "stopped", "nothing to look at");
        assert_eq!(state("running", false), "running");
    }

    #[test]
    fn a_coloured_cell_is_the_plain_cell_with_codes_around_the_word() {
        for s in ["running", "backoff", "stopped", "starting"] {
            let plain = format!("{s:<10}|");
            let coloured = format!("{}|", state_padded(s, 10, true));
            assert_eq!(strip(&coloured), plain);
            assert_eq!(format!("{}|", state_padded(s, 10, false)), plain);
            assert_eq!(strip(&coloured).chars().count(), 11);
        }
    }

    #[test]
    fn a_line_is_cut_to_the_terminal_by_what_shows() {
        let line = format!("echo-0  {}  12.5", state("running", true));
        assert_eq!(strip(&fit(&line, 100)), "echo-0  running  12.5");
        assert_eq!(fit(&line, 11), "echo-0  \x1b[32mrun\x1b[0m", "closed inside the word");
        assert_eq!(fit(&line, 6), "echo-0");
        assert_eq!(fit("plain", 3), "pla");
    }
}

//! Text from outside (a job's command line, names inside a tar) shown to
//! a person: control characters could move the cursor, recolour or clear
//! the terminal, or forge a line of output, so they are shown escaped.

use std::fmt::Write;

/// `text` with every control character (and the backslash, so that an
/// escape stays unambiguous) written as Rust writes it in a string literal:
/// `\n`, `\t`, `\u{1b}`, `\\`. Everything else, non-ASCII letters included,
/// is kept.
pub fn control(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() || c == '\\' {
            let _ = write!(out, "{}", c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out
}

/// Bytes that may not be UTF-8 (a path in a tar): valid UTF-8 as
/// [`control`] shows it, each invalid byte as `\xNN`.
pub fn bytes(raw: &[u8]) -> String {
    let mut out = String::with_capacity(raw.len());
    for chunk in raw.utf8_chunks() {
        out += &control(chunk.valid());
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert_eq!(control("sh -c 'echo hi'"), "sh -c 'echo hi'");
        assert_eq!(control("a\nb\t\u{1b}[2J\\"), "a\\nb\\t\\u{1b}[2J\\\\");
        assert_eq!(control("grüße"), "grüße");
        assert_eq!(bytes(b"ok/\xff\xfe\n"), "ok/\\xff\\xfe\\n");
    }
}

//! Making text from outside (names in a tar, a job's command line, any
//! foreign bytes) safe to print, for every caller.
//!
//! Such text is arbitrary bytes: printed raw into an error, a log line or
//! a table, an ESC sequence rewrites the user's terminal, a CR or newline
//! forges a line, a bidi control reorders what is shown, and bytes that
//! are not UTF-8 are lost or mangled.

/// `raw` with printable UTF-8 kept as it is and everything else spelled out:
/// `\\` for a backslash (so an escape in the output cannot be forged by the
/// input), `\n`, `\r`, `\t`, `\u{1b}` for other control characters and for
/// Unicode format characters (bidi overrides, zero-width marks, line
/// separators), and `\xff` for each byte that is not part of valid UTF-8.
pub fn escaped(raw: &[u8]) -> String {
    let mut out = String::with_capacity(raw.len());
    for chunk in raw.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if c.is_control() || is_format(c) => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
                c => out.push(c),
            }
        }
        for byte in chunk.invalid() {
            out.push_str(&format!("\\x{byte:02x}"));
        }
    }
    out
}

/// An error message from elsewhere (the tar crate's quote entry names),
/// passed through `escaped`.
pub fn escaped_error(e: &dyn std::fmt::Display) -> String {
    escaped(e.to_string().as_bytes())
}

/// Unicode format characters (general category Cf) and the line and
/// paragraph separators: invisible, but they change how the text around
/// them is shown (CVE-2021-42574, "Trojan Source").
fn is_format(c: char) -> bool {
    matches!(
        c,
        '\u{ad}'
            | '\u{600}'..='\u{605}'
            | '\u{61c}'
            | '\u{6dd}'
            | '\u{70f}'
            | '\u{180e}'
            | '\u{200b}'..='\u{200f}'
            | '\u{2028}'..='\u{202e}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206f}'
            | '\u{feff}'
            | '\u{fff9}'..='\u{fffb}'
            | '\u{e0001}'
            | '\u{e0020}'..='\u{e007f}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_text_is_kept_and_the_rest_spelled_out() {
        assert_eq!(escaped(b"usr/lib/caf\xc3\xa9 x.txt"), "usr/lib/café x.txt");
        assert_eq!(escaped(b"a\nb\rc\td"), r"a\nb\rc\td");
        assert_eq!(escaped(b"\x1b[31mred\x07"), r"\u{1b}[31mred\u{7}");
        assert_eq!(escaped(b"bad\xff\xfe utf8"), r"bad\xff\xfe utf8");
        assert_eq!(escaped("\u{202e}txt.exe".as_bytes()), r"\u{202e}txt.exe");
        assert_eq!(escaped("\u{85}".as_bytes()), r"\u{85}");
        // A literal backslash-n in a name is not a newline in the output.
        assert_eq!(escaped(br"a\nb"), r"a\\nb");
        assert_eq!(escaped(b"it's \"quoted\""), "it's \"quoted\"");
    }
}

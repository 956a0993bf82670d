//! The writer of text log lines: no value in an event (a file name, an error that
//! quotes one) can break its line, so no uploader can forge a log line (SPEC §6).
//!
//! The text formatter writes values as they are (`%path.display()`), and its own ANSI
//! sanitising escapes only terminal escapes, not `\n` or `\r`. Escaping here, on the
//! formatted event, covers every call site at once, including messages that embed a
//! value through `{e}`. This relies on tracing-subscriber's fmt layer formatting each
//! event into one buffer and handing it over with one `write_all` (its
//! `fmt_layer.rs`, `on_event`), so that one `write` call here is one whole event.
//! The JSON format escapes through serde_json and does not use this writer: `\x7f`
//! would not be a valid JSON escape.

use std::borrow::Cow;
use std::io::{self, Write};

/// Writes each event to `inner` with its control characters escaped.
pub struct Escaping<W> {
    inner: W,
    /// Whether the formatter's own colours (SGR sequences) are let through.
    ansi: bool,
}

impl<W: Write> Escaping<W> {
    pub fn new(inner: W, ansi: bool) -> Escaping<W> {
        Escaping { inner, ansi }
    }
}

/// The writer for standard error, one per event.
pub fn stderr(ansi: bool) -> Escaping<io::Stderr> {
    Escaping::new(io::stderr(), ansi)
}

impl<W: Write> Write for Escaping<W> {
    fn write(&mut self, event: &[u8]) -> io::Result<usize> {
        // One write_all, so that the line reaches stderr in one piece, as unescaped.
        self.inner.write_all(&escape_event(event, self.ansi))?;
        Ok(event.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// `event` with every control character but its final newline written as a visible
/// escape: `\n`, `\r`, `\t`, `\x1b` for the other C0 ones and DEL, `\u{85}` for C1
/// ones. With `ansi`, a colour sequence (`ESC [ digits and ; m`) stays as it is: only
/// the formatter makes those, as it sanitises the terminal escapes in values.
pub fn escape_event(event: &[u8], ansi: bool) -> Cow<'_, [u8]> {
    let body = event.strip_suffix(b"\n").unwrap_or(event);
    if !needs_escape(body) {
        return Cow::Borrowed(event);
    }
    let mut out = Vec::with_capacity(event.len() + 16);
    let mut i = 0;
    while i < body.len() {
        i += escape_at(body, i, ansi, &mut out);
    }
    out.extend_from_slice(&event[body.len()..]);
    Cow::Owned(out)
}

/// The first byte of U+0080–U+00BF in UTF-8; U+0080–U+009F are the C1 controls.
const C1_LEAD: u8 = 0xc2;

/// Whether `body` holds a control character: most events hold none, and are written
/// without a copy.
fn needs_escape(body: &[u8]) -> bool {
    body.iter().enumerate().any(|(i, &b)| {
        b.is_ascii_control() || (b == C1_LEAD && matches!(body.get(i + 1), Some(0x80..=0x9f)))
    })
}

/// Writes the (possibly escaped) piece of `body` at `i` to `out`; returns its length.
fn escape_at(body: &[u8], i: usize, ansi: bool, out: &mut Vec<u8>) -> usize {
    let b = body[i];
    match b {
        b'\n' => out.extend_from_slice(b"\\n"),
        b'\r' => out.extend_from_slice(b"\\r"),
        b'\t' => out.extend_from_slice(b"\\t"),
        0x1b if ansi => {
            let len = colour_len(&body[i..]);
            if len > 0 {
                out.extend_from_slice(&body[i..i + len]);
                return len;
            }
            out.extend_from_slice(b"\\x1b");
        }
        _ if b.is_ascii_control() => out.extend_from_slice(format!("\\x{b:02x}").as_bytes()),
        C1_LEAD => match body.get(i + 1) {
            Some(&next @ 0x80..=0x9f) => {
                // U+0080 + (next - 0x80): the code point is the second byte itself.
                out.extend_from_slice(format!("\\u{{{next:x}}}").as_bytes());
                return 2;
            }
            _ => out.push(b),
        },
        _ => out.push(b),
    }
    1
}

/// The length of the SGR sequence (`ESC [ 0-9 ; … m`) `text` begins with, or 0.
fn colour_len(text: &[u8]) -> usize {
    let Some(rest) = text.strip_prefix(b"\x1b[") else {
        return 0;
    };
    let params = rest
        .iter()
        .take_while(|b| b.is_ascii_digit() || **b == b';')
        .count();
    match rest.get(params) {
        Some(b'm') => 2 + params + 1,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(event: &str, ansi: bool) -> String {
        String::from_utf8(escape_event(event.as_bytes(), ansi).into_owned()).expect("UTF-8")
    }

    #[test]
    fn a_newline_inside_an_event_is_escaped_and_the_last_one_kept() {
        let event =
            "2026-05-01T10:00:00Z  INFO done file=evil\n2026-01-01T00:00:00Z  INFO forged.json\n";
        let out = escaped(event, false);
        assert_eq!(
            out,
            "2026-05-01T10:00:00Z  INFO done file=evil\\n2026-01-01T00:00:00Z  INFO forged.json\n"
        );
        assert_eq!(out.lines().count(), 1);
    }

    #[test]
    fn every_control_character_is_escaped() {
        assert_eq!(
            escaped("a\rb\tc\0d\x7fe\x08f\n", false),
            "a\\rb\\tc\\x00d\\x7fe\\x08f\n"
        );
        assert_eq!(escaped("x\u{85}y\u{9f}z", false), "x\\u{85}y\\u{9f}z");
        // A trailing newline is the event's own only once: two are one escaped.
        assert_eq!(escaped("a\n\n", false), "a\\n\n");
    }

    #[test]
    fn other_text_is_untouched_and_not_copied() {
        let event = "Користувач ivan@mail.net: ¢ \u{a0} \\n ok\n".as_bytes();
        assert!(matches!(escape_event(event, false), Cow::Borrowed(_)));
        assert!(matches!(escape_event(b"", true), Cow::Borrowed(_)));
    }

    #[test]
    fn colours_pass_only_when_ansi_is_on() {
        let event = "\x1b[2m2026\x1b[0m \x1b[32m INFO\x1b[0m x=\x1b]0;title\x07\n";
        assert_eq!(
            escaped(event, true),
            "\x1b[2m2026\x1b[0m \x1b[32m INFO\x1b[0m x=\\x1b]0;title\\x07\n"
        );
        assert_eq!(escaped("\x1b[1mA\x1b[0m\n", false), "\\x1b[1mA\\x1b[0m\n");
        // An unfinished sequence at the end is escaped, not passed on.
        assert_eq!(escaped("a\x1b[12", true), "a\\x1b[12");
    }

    #[test]
    fn one_write_is_one_escaped_event() {
        let mut out = Vec::new();
        let mut writer = Escaping::new(&mut out, false);
        writer.write_all(b"a\nb\n").expect("written");
        writer.write_all(b"c\n").expect("written");
        assert_eq!(out, b"a\\nb\nc\n");
    }
}

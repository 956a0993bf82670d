//! Log lines on standard error (SPEC §6): the subscriber, how each event becomes a
//! line, and journald's priorities.
//!
//! **Escaping.** No value in an event (a file name, an error that quotes one) can
//! break its line, so no uploader can forge a log line. The text formatter writes
//! values as they are (`%path.display()`), and its own ANSI sanitising escapes only
//! terminal escapes, not `\n` or `\r`. Escaping here, on the formatted event, covers
//! every call site at once, including messages that embed a value through `{e}`.
//! This relies on tracing-subscriber's fmt layer formatting each event into one
//! buffer and handing it over with one `write_all` to a writer made for that event
//! (its `fmt_layer.rs`, `on_event`), so that one `write` call here is one whole event.
//! The JSON format escapes through serde_json and is not escaped again: `\x7f` would
//! not be a valid JSON escape.
//!
//! **journald.** Under systemd, standard error is often a stream into the journal,
//! and journald takes a line that begins `<N>` as priority N (`SyslogLevelPrefix=`,
//! on by default; sd-daemon(3)). Without it every line, errors included, would be
//! stored at the unit's default priority and `journalctl -p warning` would show
//! nothing. The prefix is written only when stderr *is* that stream: systemd puts its
//! device and inode in `JOURNAL_STREAM` (systemd.exec(5)), and a variable inherited
//! by a process whose stderr was redirected (`2>file`, a pipe) names another file.
//! journald stamps each entry itself, so that mode has no timestamp, and never
//! colours. JSON lines get the prefix too: journald removes it, so the stored
//! message is the JSON object, and its priority is filterable like any other.

use std::borrow::Cow;
use std::fmt::Display;
use std::io::{self, IsTerminal, Write};
use std::sync::OnceLock;
use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// Installs the global subscriber: `RUST_LOG` if it is set and valid, else `level`
/// (a `tracing` directive), on stderr, as text or with `json` as JSON lines. (A flag
/// rather than the command line's own type, which is the `cli` module's to move.)
pub fn init(level: &str, json: bool) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let journal = journal();
    let style = Style {
        escape: !json,
        ansi: !journal && io::stderr().is_terminal(),
        journal,
    };
    let layer = tracing_subscriber::fmt::layer()
        .with_ansi(style.ansi)
        .with_writer(Lines { style });
    // Each combination is its own formatter type; boxed, they are one.
    let layer: Box<dyn Layer<Registry> + Send + Sync> = match (json, journal) {
        (false, false) => layer.boxed(),
        (false, true) => layer.without_time().boxed(),
        // Flattened, so that a line's fields are top-level keys beside `level`
        // (`jq 'select(.status == "ERROR")'`), as README's "Logs" documents them.
        (true, false) => layer.json().flatten_event(true).boxed(),
        (true, true) => layer.json().flatten_event(true).without_time().boxed(),
    };
    tracing_subscriber::registry()
        .with(layer)
        .with(filter)
        .init();
}

/// Whether standard error is the journal's stream: `JOURNAL_STREAM` (`DEVICE:INODE`)
/// names the file that fd 2 is. Asked once: neither changes while the process runs.
pub fn journal() -> bool {
    static JOURNAL: OnceLock<bool> = OnceLock::new();
    *JOURNAL.get_or_init(|| {
        std::env::var("JOURNAL_STREAM")
            .ok()
            .is_some_and(|stream| names_stderr(&stream))
    })
}

/// Whether `stream`, in `JOURNAL_STREAM`'s `DEVICE:INODE` form, is the file on fd 2.
fn names_stderr(stream: &str) -> bool {
    let Some((dev, ino)) = stream.split_once(':') else {
        return false;
    };
    rustix::fs::fstat(io::stderr())
        .is_ok_and(|st| dev.parse() == Ok(st.st_dev) && ino.parse() == Ok(st.st_ino))
}

/// An error said outside `tracing` (before it is set up, or as a command's last
/// word), as `userdrop: error: ...`. In the journal it is one entry at priority 3, so
/// that the reason a service failed to start is what `journalctl -p err` shows;
/// elsewhere it is written as it is, as a person at a terminal reads it best.
pub fn print_error(error: &dyn Display) {
    let text = format!("userdrop: error: {error}\n");
    let line = if journal() {
        frame(text.as_bytes(), Style::JOURNAL_TEXT, Some(Level::ERROR))
    } else {
        Cow::Borrowed(text.as_bytes())
    };
    // Nowhere left to say it if stderr itself fails.
    let _ = io::stderr().lock().write_all(&line);
}

/// Text of several lines that is not ours to escape (clap's usage message), for the
/// journal: each line at priority 3, so that none of it falls to the default, and no
/// empty entries for its blank lines.
pub fn print_error_lines(text: &str) {
    let mut err = io::stderr().lock();
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        let _ = err
            .write_all(priority(Level::ERROR))
            .and_then(|()| writeln!(err, "{line}"));
    }
}

/// How events become lines on stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Style {
    /// Control characters escaped: text lines (JSON ones are already).
    pub escape: bool,
    /// The formatter's own colours let through.
    pub ansi: bool,
    /// Each line begins with its journald priority.
    pub journal: bool,
}

impl Style {
    const JOURNAL_TEXT: Style = Style {
        escape: true,
        ansi: false,
        journal: true,
    };
}

/// The fmt layer's writer: one [`Line`] an event, told the event's level.
#[derive(Clone, Copy, Debug)]
struct Lines {
    style: Style,
}

impl<'a> MakeWriter<'a> for Lines {
    type Writer = Line<io::Stderr>;

    fn make_writer(&'a self) -> Self::Writer {
        Line::new(io::stderr(), self.style, None)
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        Line::new(io::stderr(), self.style, Some(*meta.level()))
    }
}

/// Writes each event to `inner` framed by [`frame`].
pub struct Line<W> {
    inner: W,
    style: Style,
    /// Unknown only when the formatter asks for a writer without an event: then the
    /// journal gives the line its default priority.
    level: Option<Level>,
}

impl<W: Write> Line<W> {
    pub fn new(inner: W, style: Style, level: Option<Level>) -> Line<W> {
        Line {
            inner,
            style,
            level,
        }
    }
}

impl<W: Write> Write for Line<W> {
    fn write(&mut self, event: &[u8]) -> io::Result<usize> {
        // One write_all, so that the line reaches stderr in one piece, as unframed.
        self.inner
            .write_all(&frame(event, self.style, self.level))?;
        Ok(event.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// `event` as it is written in `style`: escaped, then in the journal behind the
/// priority of `level`.
pub fn frame(event: &[u8], style: Style, level: Option<Level>) -> Cow<'_, [u8]> {
    let body = if style.escape {
        escape_event(event, style.ansi)
    } else {
        Cow::Borrowed(event)
    };
    let Some(level) = level.filter(|_| style.journal) else {
        return body;
    };
    // The formatter pads the level word (` INFO`) to line up after a timestamp; with
    // no timestamp the pad would begin the journal's message.
    let pad = body.iter().take_while(|&&b| b == b' ').count();
    let prefix = priority(level);
    let mut line = Vec::with_capacity(prefix.len() + body.len() - pad);
    line.extend_from_slice(prefix);
    line.extend_from_slice(&body[pad..]);
    Cow::Owned(line)
}

/// The syslog priority journald reads at the start of a line (sd-daemon(3)).
fn priority(level: Level) -> &'static [u8] {
    match level {
        Level::ERROR => b"<3>",
        Level::WARN => b"<4>",
        Level::INFO => b"<6>",
        _ => b"<7>",
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

    const TEXT: Style = Style {
        escape: true,
        ansi: false,
        journal: false,
    };

    fn framed(event: &str, style: Style, level: Level) -> String {
        String::from_utf8(frame(event.as_bytes(), style, Some(level)).into_owned()).expect("UTF-8")
    }

    #[test]
    fn one_write_is_one_escaped_event() {
        let mut out = Vec::new();
        let mut writer = Line::new(&mut out, TEXT, Some(Level::INFO));
        writer.write_all(b"a\nb\n").expect("written");
        writer.write_all(b"c\n").expect("written");
        assert_eq!(out, b"a\\nb\nc\n");
    }

    #[test]
    fn in_the_journal_each_line_begins_with_its_priority_and_not_a_pad() {
        let journal = Style::JOURNAL_TEXT;
        assert_eq!(
            framed(" INFO x: a\n", journal, Level::INFO),
            "<6>INFO x: a\n"
        );
        assert_eq!(
            framed(" WARN x: a\n", journal, Level::WARN),
            "<4>WARN x: a\n"
        );
        assert_eq!(
            framed("ERROR x: a\n", journal, Level::ERROR),
            "<3>ERROR x: a\n"
        );
        assert_eq!(framed("DEBUG x\n", journal, Level::DEBUG), "<7>DEBUG x\n");
        assert_eq!(framed("TRACE x\n", journal, Level::TRACE), "<7>TRACE x\n");
        // A name cannot start a second entry, which journald would read at its own
        // priority.
        assert_eq!(
            framed(" INFO f=a\n<3>forged\n", journal, Level::INFO),
            "<6>INFO f=a\\n<3>forged\n"
        );
        let json = Style {
            escape: false,
            ..journal
        };
        assert_eq!(
            framed("{\"level\":\"WARN\"}\n", json, Level::WARN),
            "<4>{\"level\":\"WARN\"}\n"
        );
    }

    #[test]
    fn outside_the_journal_lines_have_no_priority() {
        assert_eq!(framed(" INFO x\n", TEXT, Level::ERROR), " INFO x\n");
        let mut out = Vec::new();
        let mut writer = Line::new(&mut out, Style::JOURNAL_TEXT, None);
        writer.write_all(b" INFO x\n").expect("written");
        assert_eq!(out, b" INFO x\n");
    }

    #[test]
    fn a_journal_stream_is_matched_only_by_device_and_inode() {
        let st = rustix::fs::fstat(io::stderr()).expect("fd 2 is open under the test harness");
        assert!(names_stderr(&format!("{}:{}", st.st_dev, st.st_ino)));
        for other in [
            format!("{}:{}", st.st_dev, st.st_ino.wrapping_add(1)),
            format!("{}", st.st_dev),
            format!("{}:{}:", st.st_dev, st.st_ino),
            format!(" {}:{}", st.st_dev, st.st_ino),
            String::new(),
        ] {
            assert!(!names_stderr(&other), "{other:?}");
        }
    }
}

//! Reading a request file: UTF-8 and JSON syntax, the top-level shape, and the users
//! one at a time.
//!
//! A file is walked twice, each time streamed from the file in chunks, so memory does
//! not grow with the file. [`envelope`] checks the whole document cheaply (every user
//! skipped as an opaque value), so that a file with a syntax error anywhere is rejected
//! before anything of it is applied. [`for_each_user`] then streams the users array,
//! taking one user at a time as raw JSON text, so no `Vec` of a million users is ever
//! built and `balance` keeps the exact digits it was written with.

use crate::messages::{JsonKind, Message};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;
use std::io::{self, BufReader, Read};
use xxhash_rust::xxh3::Xxh3;

/// The request's token, as far as its type goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Token {
    Absent,
    Text(String),
    /// Present but not a string: never accepted.
    NotText,
}

/// What the first, checking pass learns about a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    pub token: Token,
    pub users: u64,
}

/// One element of `users`: the fields of an object, each as its raw JSON text, in the
/// order written; or the kind of a non-object element.
#[derive(Debug)]
pub enum Element<'a> {
    Object(Vec<(Cow<'a, str>, &'a RawValue)>),
    /// An object with a key that is not valid Unicode (a lone surrogate escape).
    BadKey,
    Other(JsonKind),
}

/// Why a request could not be read to its end.
#[derive(Debug)]
pub enum Unread {
    /// The file's own fault: it gets an `ERROR` response with this message.
    Bad(Message),
    /// Reading failed (the disk, permissions): nobody's request is at fault.
    Io(io::Error),
}

/// A request file as its bytes pass by, in chunks: drops the UTF-8 byte-order mark,
/// checks UTF-8 (so that the error can say where), enforces the size limit, and can
/// hash what it reads. Nothing of the file is kept, so memory does not grow with it.
pub struct Source<R> {
    inner: R,
    limit: u64,
    read: u64,
    started: bool,
    hasher: Option<Box<Xxh3>>,
    /// The start of a UTF-8 sequence cut by the end of the last chunk.
    pending: [u8; 4],
    pending_len: usize,
    /// Lines seen, and bytes since the last line feed: where an invalid byte is.
    line: u64,
    column: u64,
    problem: Option<Message>,
}

impl<R: Read> Source<R> {
    /// Reads `inner`, failing once more than `limit` bytes came out of it.
    pub fn new(inner: R, limit: u64) -> Source<R> {
        Source {
            inner,
            limit,
            read: 0,
            started: false,
            hasher: None,
            pending: [0; 4],
            pending_len: 0,
            line: 1,
            column: 0,
            problem: None,
        }
    }

    /// Also hashes every byte read (xxh3-128), for [`Source::hash`].
    pub fn hashing(mut self) -> Source<R> {
        self.hasher = Some(Box::new(Xxh3::new()));
        self
    }

    /// The hash of the bytes read so far, as 32 hex digits.
    pub fn hash(&self) -> String {
        let digest = self.hasher.as_ref().map_or(0, |h| h.digest128());
        format!("{digest:032x}")
    }

    /// Whether reading stopped on the text's own fault (not UTF-8, too large).
    pub fn is_bad(&self) -> bool {
        self.problem.is_some()
    }

    fn fail(&mut self, problem: Message) -> io::Error {
        self.problem = Some(problem);
        io::Error::other("the request is not readable as JSON text")
    }

    /// Advances the position over valid text.
    fn advance(&mut self, text: &[u8]) {
        match text.iter().rposition(|&b| b == b'\n') {
            Some(last) => {
                self.line += text.iter().filter(|&&b| b == b'\n').count() as u64;
                self.column = (text.len() - last - 1) as u64;
            }
            None => self.column += text.len() as u64,
        }
    }

    fn not_utf8(&self, valid_before: &[u8]) -> Message {
        let mut at = (self.line, self.column);
        for &b in valid_before {
            at = if b == b'\n' {
                (at.0 + 1, 0)
            } else {
                (at.0, at.1 + 1)
            };
        }
        Message::NotUtf8 {
            line: at.0,
            column: at.1 + 1,
        }
    }
}

impl<R: Read> Read for Source<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.problem.is_some() {
            return Err(io::Error::other("the request is not readable as JSON text"));
        }
        loop {
            // A UTF-8 sequence cut by the end of the last chunk was held back, so
            // that the parser never sees half a character; it goes out first now.
            let carry = self.pending_len;
            if buf.len() <= carry {
                return Err(io::Error::other("read buffer too small"));
            }
            buf[..carry].copy_from_slice(&self.pending[..carry]);
            let mut n = self.inner.read(&mut buf[carry..])?;
            self.read += n as u64;
            if self.read > self.limit {
                let problem = Message::TooLarge {
                    size: self.read,
                    limit: self.limit,
                };
                return Err(self.fail(problem));
            }
            if let Some(h) = &mut self.hasher {
                h.update(&buf[carry..carry + n]);
            }
            if !self.started {
                // Regular files return whole chunks, so a mark is never split.
                self.started = true;
                if buf[..n].starts_with(BOM) {
                    buf.copy_within(BOM.len()..n, 0);
                    n -= BOM.len();
                }
            }
            if n == 0 {
                if carry > 0 {
                    let problem = self.not_utf8(&[]);
                    return Err(self.fail(problem));
                }
                return Ok(0);
            }
            let total = carry + n;
            match std::str::from_utf8(&buf[..total]) {
                Ok(_) => {
                    self.pending_len = 0;
                    self.advance(&buf[..total]);
                    return Ok(total);
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    if e.error_len().is_some() {
                        let problem = self.not_utf8(&buf[..valid]);
                        return Err(self.fail(problem));
                    }
                    self.pending_len = total - valid;
                    self.pending[..total - valid].copy_from_slice(&buf[valid..total]);
                    self.advance(&buf[..valid]);
                    if valid > 0 {
                        return Ok(valid);
                    }
                }
            }
        }
    }
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// How big a chunk is read at a time.
const CHUNK: usize = 256 * 1024;

/// Checks the whole document and its top-level shape, without looking into users.
/// Reads `source` to its end.
pub fn envelope<R: Read>(source: &mut Source<R>) -> Result<Envelope, Unread> {
    let mut de =
        serde_json::Deserializer::from_reader(BufReader::with_capacity(CHUNK, &mut *source));
    let walk = Walk {
        on_user: None,
        passed: None,
    };
    let result = walk
        .deserialize(&mut de)
        .and_then(|env| de.end().map(|()| env));
    drop(de);
    result.map_err(|e| unread(source, e))
}

/// [`envelope`] of a text in memory, with no size limit.
pub fn envelope_of(text: &str) -> Result<Envelope, Unread> {
    envelope(&mut Source::new(text.as_bytes(), u64::MAX))
}

fn unread<R>(source: &mut Source<R>, e: serde_json::Error) -> Unread {
    if let Some(problem) = source.problem.take() {
        return Unread::Bad(problem);
    }
    match e.classify() {
        serde_json::error::Category::Io => Unread::Io(io::Error::from(e)),
        _ => Unread::Bad(file_error(&e)),
    }
}

/// A callback asked the walk to stop; the caller keeps the reason.
#[derive(Debug)]
pub struct Halt;

/// Why the walk of [`for_each_user`] ended early.
#[derive(Debug)]
pub enum Stop {
    /// The callback said so.
    Halt,
    /// The text is not what [`envelope`] accepted: the file changed, or reading failed.
    Unread(Unread),
}

/// Calls `on_user` for each element of `users` in order, with its index. Run it on a
/// text that [`envelope`] accepted: then it fails only on a [`Halt`], or when the file
/// changed under it or could not be read again.
pub fn for_each_user<R: Read>(
    source: &mut Source<R>,
    mut on_user: impl FnMut(u64, Element<'_>) -> Result<(), Halt>,
) -> Result<(), Stop> {
    let mut halted = false;
    let mut callback = |index: u64, element: Element<'_>| {
        let r = on_user(index, element);
        halted = r.is_err();
        r
    };
    let mut de =
        serde_json::Deserializer::from_reader(BufReader::with_capacity(CHUNK, &mut *source));
    let walk = Walk {
        on_user: Some(&mut callback),
        passed: None,
    };
    let result = walk.deserialize(&mut de).and_then(|_| de.end());
    drop(de);
    match result {
        Ok(()) => Ok(()),
        Err(_) if halted => Err(Stop::Halt),
        Err(e) => Err(Stop::Unread(unread(source, e))),
    }
}

/// How much of a text in memory is checked (UTF-8, hash) at a time, and how far the
/// parser runs before the pages behind it are given back.
const WINDOW: usize = 8 * 1024 * 1024;

/// A request held in memory (a small file) or mapped (the store's private copy): both
/// passes parse it from the slice, which serde_json does several times faster than
/// through `io::Read` (issue 13: the streaming first pass alone took as long as the
/// floor's whole typed parse). `release(offset)` is told how far the text was passed:
/// a mapping drops those pages, so memory stays flat in the file's size.
pub struct Text<'a> {
    pub bytes: &'a [u8],
    pub release: &'a (dyn Fn(usize) + Sync),
}

impl Text<'_> {
    fn parsed(&self) -> &[u8] {
        self.bytes.strip_prefix(BOM).unwrap_or(self.bytes)
    }

    /// The hook that gives back what the parser passed, every [`WINDOW`].
    fn passing(&self) -> impl FnMut(*const u8) + '_ {
        let base = self.bytes.as_ptr() as usize;
        let mut released = 0;
        move |at: *const u8| {
            let offset = (at as usize).saturating_sub(base);
            if offset >= released + WINDOW {
                (self.release)(offset);
                released = offset;
            }
        }
    }
}

/// [`envelope`] and the hash of a text in memory, when the text is good. `None` for
/// anything else (too large, not UTF-8, not the shape): the caller then runs the
/// streaming [`envelope`], whose messages (line, column, reason) are the reference.
pub fn envelope_in(text: &Text<'_>, limit: u64) -> Option<(Envelope, String)> {
    if text.bytes.len() as u64 > limit {
        return None;
    }
    let mut hasher = Xxh3::new();
    let mut at = 0;
    while at < text.bytes.len() {
        let end = (at + WINDOW).min(text.bytes.len());
        let window = &text.bytes[at..end];
        let valid = match std::str::from_utf8(window) {
            Ok(_) => window.len(),
            // A character cut by the window's end is checked with the next window.
            Err(e) if e.error_len().is_none() && end < text.bytes.len() => e.valid_up_to(),
            Err(_) => return None,
        };
        hasher.update(&window[..valid]);
        at += valid;
        (text.release)(at);
    }
    let hash = format!("{:032x}", hasher.digest128());
    let mut passed = text.passing();
    let mut de = serde_json::Deserializer::from_slice(text.parsed());
    let walk = Walk {
        on_user: None,
        passed: Some(&mut passed),
    };
    let envelope = walk
        .deserialize(&mut de)
        .and_then(|env| de.end().map(|()| env));
    (text.release)(text.bytes.len());
    Some((envelope.ok()?, hash))
}

/// [`for_each_user`] over a text in memory that [`envelope_in`] accepted.
pub fn for_each_user_in(
    text: &Text<'_>,
    mut on_user: impl FnMut(u64, Element<'_>) -> Result<(), Halt>,
) -> Result<(), Stop> {
    let mut halted = false;
    let mut callback = |index: u64, element: Element<'_>| {
        let r = on_user(index, element);
        halted = r.is_err();
        r
    };
    let mut passed = text.passing();
    let mut de = serde_json::Deserializer::from_slice(text.parsed());
    let walk = Walk {
        on_user: Some(&mut callback),
        passed: Some(&mut passed),
    };
    let result = walk.deserialize(&mut de).and_then(|_| de.end());
    (text.release)(text.bytes.len());
    match result {
        Ok(()) => Ok(()),
        Err(_) if halted => Err(Stop::Halt),
        Err(e) => Err(Stop::Unread(Unread::Bad(file_error(&e)))),
    }
}

/// The store's private copy of a request, mapped read-only (see [`Text`]). Only the
/// daemon's own copy in the spool is mapped, never a request: an uploader could
/// truncate a request under the mapping, and a read past the new end is a SIGBUS.
pub struct Mapped {
    ptr: *mut std::ffi::c_void,
    len: usize,
}

// SAFETY: the mapping is read-only and owned; `release` only drops pages, which the
// next read faults in again from the file with the same bytes.
unsafe impl Send for Mapped {}
unsafe impl Sync for Mapped {}

impl Mapped {
    /// Maps all of `file`; `None` for an empty file (nothing to map).
    pub fn new(file: &std::fs::File) -> io::Result<Option<Mapped>> {
        let len = usize::try_from(file.metadata()?.len()).map_err(io::Error::other)?;
        if len == 0 {
            return Ok(None);
        }
        use rustix::mm::{MapFlags, ProtFlags, mmap};
        // SAFETY: a fresh private read-only mapping of a file we own; see the type.
        let ptr = unsafe {
            mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ,
                MapFlags::PRIVATE,
                file,
                0,
            )
        }?;
        Ok(Some(Mapped { ptr, len }))
    }

    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes for as long as `self` lives.
        unsafe { std::slice::from_raw_parts(self.ptr.cast::<u8>(), self.len) }
    }

    /// Gives back the pages before `offset`: the page cache keeps the file, and a
    /// later read faults them in again, so only the process's resident size changes.
    pub fn release(&self, offset: usize) {
        let page = rustix::param::page_size();
        let end = offset.min(self.len) / page * page;
        if end > 0 {
            // SAFETY: within our mapping; `LinuxDontNeed` on a private file mapping that
            // was never written only unmaps pages, which refault with the same bytes.
            let _ =
                unsafe { rustix::mm::madvise(self.ptr, end, rustix::mm::Advice::LinuxDontNeed) };
        }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: unmapping the region `new` mapped, once.
        let _ = unsafe { rustix::mm::munmap(self.ptr, self.len) };
    }
}

/// The fields of an object's raw text; `None` when a key is not valid Unicode.
pub fn object_fields(raw: &RawValue) -> Option<Vec<(Cow<'_, str>, &RawValue)>> {
    serde_json::from_str::<Fields<'_>>(raw.get())
        .ok()
        .map(|f| f.0)
}

/// A raw value, told apart by its first character.
pub enum Value<'a> {
    Null,
    Bool(bool),
    Number(&'a str),
    String(Cow<'a, str>),
    Array,
    Object(&'a RawValue),
    /// A string whose escapes do not decode (a lone UTF-16 surrogate).
    BadString,
}

impl Value<'_> {
    pub fn kind(&self) -> JsonKind {
        match self {
            Value::Null => JsonKind::Null,
            Value::Bool(_) => JsonKind::Boolean,
            Value::Number(_) => JsonKind::Number,
            Value::String(_) | Value::BadString => JsonKind::String,
            Value::Array => JsonKind::Array,
            Value::Object(_) => JsonKind::Object,
        }
    }
}

/// Classifies a raw value that serde_json produced (so it is valid JSON, trimmed).
pub fn value(raw: &RawValue) -> Value<'_> {
    let text = raw.get().trim();
    match text.as_bytes().first() {
        Some(b'n') => Value::Null,
        Some(b't') => Value::Bool(true),
        Some(b'f') => Value::Bool(false),
        Some(b'[') => Value::Array,
        Some(b'{') => Value::Object(raw),
        Some(b'"') => {
            let inner = &text[1..text.len() - 1];
            if inner.contains('\\') {
                // serde_json's syntax check lets lone surrogates (`\ud800`) through;
                // decoding them fails.
                match serde_json::from_str::<String>(text) {
                    Ok(decoded) => Value::String(Cow::Owned(decoded)),
                    Err(_) => Value::BadString,
                }
            } else {
                Value::String(Cow::Borrowed(inner))
            }
        }
        _ => Value::Number(text),
    }
}

fn file_error(e: &serde_json::Error) -> Message {
    let (line, column) = (e.line() as u64, e.column() as u64);
    let full = e.to_string();
    let suffix = format!(" at line {line} column {column}");
    let reason = full.strip_suffix(&suffix).unwrap_or(&full).to_owned();
    match e.classify() {
        serde_json::error::Category::Data => Message::BadShape {
            line,
            column,
            reason,
        },
        _ => Message::BadJson {
            line,
            column,
            reason,
        },
    }
}

type OnUser<'f> = &'f mut dyn FnMut(u64, Element<'_>) -> Result<(), Halt>;

/// Told where each user of a text in memory begins, so that the pages before it can
/// be given back (see [`Mapped`]).
type Passed<'f> = &'f mut dyn FnMut(*const u8);

/// The top-level object. With no callback it only counts users. With `passed` the
/// text is a slice, and users are borrowed from it rather than copied out.
struct Walk<'f> {
    on_user: Option<OnUser<'f>>,
    passed: Option<Passed<'f>>,
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = Envelope;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Envelope, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = Envelope;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object with a \"users\" array")
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<Envelope, A::Error> {
        let mut token = Token::Absent;
        let mut token_seen = false;
        let mut users = None;
        while let Some(key) = map.next_key::<Key<'de>>()? {
            match &*key.0 {
                "users" => {
                    if users.is_some() {
                        return Err(de::Error::custom("the users key is given more than once"));
                    }
                    users = Some(map.next_value_seed(Users {
                        on_user: self.on_user.take(),
                        passed: self.passed.take(),
                    })?);
                }
                "token" => {
                    if token_seen {
                        return Err(de::Error::custom("the token key is given more than once"));
                    }
                    token_seen = true;
                    token = match map.next_value::<TokenValue>()? {
                        TokenValue(Some(t)) => Token::Text(t),
                        TokenValue(None) => Token::NotText,
                    };
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let users = users.ok_or_else(|| de::Error::missing_field("users"))?;
        Ok(Envelope { token, users })
    }
}

struct Users<'f> {
    on_user: Option<OnUser<'f>>,
    passed: Option<Passed<'f>>,
}

impl<'de> DeserializeSeed<'de> for Users<'_> {
    type Value = u64;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<u64, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Users<'_> {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"users\" to be an array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<u64, A::Error> {
        let mut n = 0u64;
        match (self.on_user, self.passed) {
            // A slice: each user borrowed, no copy of its text.
            (on_user, Some(passed)) => {
                let mut on_user = on_user;
                while let Some(raw) = seq.next_element::<&'de RawValue>()? {
                    if let Some(on_user) = on_user.as_mut() {
                        on_user(n, element(raw)).map_err(|Halt| de::Error::custom("halted"))?;
                    }
                    passed(raw.get().as_ptr());
                    n += 1;
                }
            }
            (None, None) => {
                while seq.next_element::<IgnoredAny>()?.is_some() {
                    n += 1;
                }
            }
            (Some(on_user), None) => {
                // Taken raw first: serde_json checks a raw value's syntax only, so no
                // number too large for f64 and no bad escape can fail the walk; each
                // is judged later as a problem of this one user.
                while let Some(raw) = seq.next_element::<Box<RawValue>>()? {
                    on_user(n, element(&raw)).map_err(|Halt| de::Error::custom("halted"))?;
                    n += 1;
                }
            }
        }
        Ok(n)
    }
}

/// A map key, borrowed from the file unless it holds escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// `token`: a string, or anything else (which is never a valid token).
struct TokenValue(Option<String>);

impl<'de> serde::Deserialize<'de> for TokenValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(d)?;
        Ok(TokenValue(match value(&raw) {
            Value::String(s) => Some(s.into_owned()),
            _ => None,
        }))
    }
}

/// One element of `users`, told apart by kind.
pub fn element(raw: &RawValue) -> Element<'_> {
    match value(raw) {
        Value::Object(raw) => match object_fields(raw) {
            Some(fields) => Element::Object(fields),
            None => Element::BadKey,
        },
        other => Element::Other(other.kind()),
    }
}

/// The fields of an object, each value kept raw.
struct Fields<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> serde::Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
                let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(key) = map.next_key::<Key<'de>>()? {
                    fields.push((key.0, map.next_value::<&'de RawValue>()?));
                }
                Ok(Fields(fields))
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(bytes: &[u8]) -> Result<Envelope, Message> {
        match envelope(&mut Source::new(bytes, u64::MAX)) {
            Ok(e) => Ok(e),
            Err(Unread::Bad(m)) => Err(m),
            Err(Unread::Io(e)) => panic!("{e}"),
        }
    }

    fn in_memory(bytes: &[u8], limit: u64) -> Option<(Envelope, String)> {
        envelope_in(
            &Text {
                bytes,
                release: &|_| {},
            },
            limit,
        )
    }

    /// The slice path agrees with the streaming one on every good text (envelope and
    /// hash), and declines every bad one, so that the streaming reader says why.
    #[test]
    fn the_slice_path_agrees_with_the_stream_or_declines() {
        let texts: [&[u8]; 9] = [
            b"{\"users\":[]}",
            b"\xEF\xBB\xBF{\"token\":\"t\",\"users\":[{\"email\":\"a@b.c\"},1,null]}",
            b"{\"users\":[{\"title\":\"\xC3\xA9\\u00e9\"}],\"extra\":{\"x\":[1,2]}}",
            b"{\"users\":[{\"title\":\"\xC3\"}]}",
            b"{\"users\":[1,]}",
            b"{\"token\":1,\"users\":[]}",
            b"[1]",
            b"{\"users\":[]} x",
            b"{}",
        ];
        for text in texts {
            let mut source = Source::new(text, u64::MAX).hashing();
            let streamed = envelope(&mut source).ok().map(|e| (e, source.hash()));
            assert_eq!(
                in_memory(text, u64::MAX),
                streamed,
                "{:?}",
                String::from_utf8_lossy(text)
            );
        }
        assert_eq!(in_memory(b"{\"users\":[]}", 5), None, "over the limit");
    }

    #[test]
    fn users_from_a_mapped_copy_are_the_users_of_the_stream() {
        use std::io::Write;
        let mut file = tempfile::tempfile().unwrap();
        let mut text = String::from("{\"users\":[");
        for i in 0..50_000 {
            text.push_str(&format!(
                "{}{{\"email\":\"u{i}@x.io\",\"title\":\"T {i}\"}}",
                if i > 0 { "," } else { "" }
            ));
        }
        text.push_str("]}");
        file.write_all(text.as_bytes()).unwrap();
        let mapped = Mapped::new(&file).unwrap().unwrap();
        let release = |offset: usize| mapped.release(offset);
        let mapped_text = Text {
            bytes: mapped.bytes(),
            release: &release,
        };
        let (envelope, _) = envelope_in(&mapped_text, u64::MAX).unwrap();
        assert_eq!(envelope.users, 50_000);
        let collect = |walk: &mut dyn FnMut(OnUser<'_>)| {
            let mut seen = Vec::new();
            walk(&mut |i, e| {
                let Element::Object(fields) = e else {
                    panic!("an object")
                };
                seen.push((i, fields[0].1.get().to_owned()));
                Ok(())
            });
            seen
        };
        let from_map = collect(&mut |f| for_each_user_in(&mapped_text, f).unwrap());
        let streamed = collect(&mut |f| {
            for_each_user(&mut Source::new(text.as_bytes(), u64::MAX), f).unwrap()
        });
        assert_eq!(from_map, streamed);
    }

    /// Hands out one byte per read, so every UTF-8 sequence is cut between chunks.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match (self.0.split_first(), buf.first_mut()) {
                (Some((&b, rest)), Some(slot)) => {
                    *slot = b;
                    self.0 = rest;
                    Ok(1)
                }
                _ => Ok(0),
            }
        }
    }

    fn trickled(bytes: &[u8]) -> Result<Envelope, Message> {
        match envelope(&mut Source::new(Trickle(bytes), u64::MAX)) {
            Ok(e) => Ok(e),
            Err(Unread::Bad(m)) => Err(m),
            Err(Unread::Io(e)) => panic!("{e}"),
        }
    }

    #[test]
    fn bom_is_dropped_and_bad_utf8_located() {
        assert_eq!(env(b"\xEF\xBB\xBF{\"users\":[]}").unwrap().users, 0);
        for read in [env, trickled] {
            assert_eq!(
                read(b"{\n  \"a\": \"\xff\"}").unwrap_err(),
                Message::NotUtf8 { line: 2, column: 9 }
            );
            // Valid multi-byte text, then a sequence cut short by a quote, then by the end.
            assert_eq!(
                read(
                    "{\"users\":[],\"x\":\"ї😀"
                        .as_bytes()
                        .iter()
                        .copied()
                        .chain(*b"\xE2\x82\"}")
                        .collect::<Vec<u8>>()
                        .as_slice()
                )
                .unwrap_err(),
                Message::NotUtf8 {
                    line: 1,
                    column: 24
                }
            );
            assert_eq!(
                read(b"{\"users\":[]} \xE2\x82").unwrap_err(),
                Message::NotUtf8 {
                    line: 1,
                    column: 14
                }
            );
            assert_eq!(
                read("{\"users\":[], \"ї😀\": 1}".as_bytes()).unwrap().users,
                0
            );
        }
    }

    #[test]
    fn the_size_limit_holds_while_reading() {
        let text = br#"{"users":[{"email":"a@b.co"}]}"#;
        match envelope(&mut Source::new(&text[..], 10)) {
            Err(Unread::Bad(Message::TooLarge { limit: 10, size })) => assert!(size > 10),
            other => panic!("{other:?}"),
        }
        assert!(envelope(&mut Source::new(&text[..], text.len() as u64)).is_ok());
    }

    #[test]
    fn the_hash_covers_every_byte() {
        let mut a = Source::new(&br#"{"users":[]}"#[..], u64::MAX).hashing();
        let mut b = Source::new(&br#"{"users":[] }"#[..], u64::MAX).hashing();
        envelope(&mut a).unwrap();
        envelope(&mut b).unwrap();
        assert_ne!(a.hash(), b.hash());
        assert_eq!(a.hash().len(), 32);
    }

    #[test]
    fn shapes() {
        let env = envelope_of(r#"{"token":"t","users":[{},1,[2]],"x":{}}"#).unwrap();
        assert_eq!(env.users, 3);
        assert_eq!(env.token, Token::Text("t".into()));
        assert_eq!(
            envelope_of(r#"{"users":[],"token":5}"#).unwrap().token,
            Token::NotText
        );
        for bad in [
            r#"[]"#,
            r#"{}"#,
            r#"{"users":{}}"#,
            r#"{"users":[],"users":[]}"#,
        ] {
            assert!(
                matches!(envelope_of(bad), Err(Unread::Bad(Message::BadShape { .. }))),
                "{bad}"
            );
        }
        match envelope_of("{\"users\": [\n  {\"a\": 1,}\n]}") {
            Err(Unread::Bad(Message::BadJson {
                line: 2, column, ..
            })) => assert_eq!(column, 11),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            envelope_of(r#"{"users":[]} x"#),
            Err(Unread::Bad(Message::BadJson { .. }))
        ));
        assert!(matches!(
            envelope_of(""),
            Err(Unread::Bad(Message::BadJson { .. }))
        ));
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = format!(r#"{{"users":[{}]}}"#, "[".repeat(100_000));
        assert!(envelope_of(&deep).is_err());
        let deep_obj = format!(r#"{{"users":[{{"a":{}}}]}}"#, "[".repeat(100_000));
        assert!(envelope_of(&deep_obj).is_err());
    }

    fn kinds(text: &str) -> Vec<String> {
        let mut kinds = Vec::new();
        for_each_user(&mut Source::new(text.as_bytes(), u64::MAX), |i, e| {
            kinds.push(format!("{i} {e:?}"));
            Ok(())
        })
        .unwrap();
        kinds
    }

    #[test]
    fn odd_elements_never_fail_the_walk() {
        let text = r#"{"users":[1e400,-1e400,"\ud800",{"\ud800":1},{"a":1e400}]}"#;
        assert_eq!(envelope_of(text).unwrap().users, 5);
        let kinds = kinds(text);
        assert_eq!(kinds.len(), 5);
        assert!(kinds[3].contains("BadKey"), "{kinds:?}");
        assert!(kinds[4].contains("1e400"), "{kinds:?}");
    }

    #[test]
    fn streams_users_with_raw_fields() {
        let seen = kinds(r#"{"users":[{"email":"a\u0040b.co","balance":-0.10},"x"]}"#);
        assert_eq!(seen.len(), 2);
        assert!(
            seen[0].starts_with("0 ") && seen[0].contains("-0.10"),
            "{seen:?}"
        );
        assert!(
            seen[1].starts_with("1 ") && seen[1].contains("String"),
            "{seen:?}"
        );
    }

    #[test]
    fn a_halt_is_told_from_a_changed_text() {
        let mut source = Source::new(&br#"{"users":[1,2,3]}"#[..], u64::MAX);
        let r = for_each_user(&mut source, |i, _| if i == 1 { Err(Halt) } else { Ok(()) });
        assert!(matches!(r, Err(Stop::Halt)));
        let mut source = Source::new(&br#"{"users":[1,2"#[..], u64::MAX);
        let r = for_each_user(&mut source, |_, _| Ok(()));
        assert!(matches!(r, Err(Stop::Unread(Unread::Bad(_)))));
    }
}

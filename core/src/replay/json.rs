//! A validating JSON scanner for documents whose shape the caller knows:
//! the audit event ([`super::event::AuditEvent::parse`]).
//!
//! serde_json tokenises every byte of an event into its visitor calls,
//! including the fields the replay never reads (about 60 % of the replay's
//! instructions went there). This scanner lets the caller walk the objects
//! it knows, hands out strings borrowed from the input, and skips whatever
//! else is there at memory speed: a string is crossed 8 bytes at a time
//! (looking only for `"`, `\` and control characters), nesting is counted
//! without recursion.
//!
//! What it accepts is exactly JSON (RFC 8259), as serde_json checks it:
//! skipped values are validated too (escapes, numbers, literals, commas),
//! so a malformed event is an error whichever field holds the fault. The
//! input is UTF-8 already checked ([`Scanner::new`] takes a `&str`), so
//! strings are not checked again. Errors name the line and column (bytes,
//! 1-based), as serde_json's do.

use std::borrow::Cow;
use std::fmt;

/// Why a document did not scan, and where. Boxed: every reader returns
/// a `Result` with it, and a small error keeps those returns in registers
/// (serde_json boxes its error for the same reason).
#[derive(Clone, PartialEq, Eq)]
pub struct ScanError(Box<ScanErrorInner>);

#[derive(Clone, PartialEq, Eq)]
struct ScanErrorInner {
    what: Cow<'static, str>,
    line: usize,
    column: usize,
}

impl ScanError {
    fn new(what: Cow<'static, str>, line: usize, column: usize) -> Self {
        Self(Box::new(ScanErrorInner { what, line, column }))
    }

    /// What was wrong.
    #[must_use]
    pub fn what(&self) -> &str {
        &self.0.what
    }

    /// 1-based line of the fault (0 when [`Self::what`] names it).
    #[must_use]
    pub fn line(&self) -> usize {
        self.0.line
    }

    /// 1-based column (in bytes) of the fault (0 as for the line).
    #[must_use]
    pub fn column(&self) -> usize {
        self.0.column
    }

    /// serde_json's error (whose text already names the place).
    #[must_use]
    pub fn from_serde(error: &serde_json::Error) -> Self {
        Self::new(Cow::Owned(error.to_string()), 0, 0)
    }
}

impl fmt::Debug for ScanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScanError")
            .field("what", &self.0.what)
            .field("line", &self.0.line)
            .field("column", &self.0.column)
            .finish()
    }
}

impl fmt::Display for ScanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = &self.0;
        if e.line == 0 {
            return f.write_str(&e.what);
        }
        write!(f, "{} at line {} column {}", e.what, e.line, e.column)
    }
}

impl std::error::Error for ScanError {}

/// 1-based line and column of byte `at`.
fn line_column(bytes: &[u8], at: usize) -> (usize, usize) {
    let before = bytes.get(..at).unwrap_or(bytes);
    let line = 1 + memchr::memchr_iter(b'\n', before).count();
    let column = 1 + before.len() - memchr::memrchr(b'\n', before).map_or(0, |nl| nl + 1);
    (line, column)
}

#[cfg(any(test, not(target_arch = "x86_64")))]
const ONES: u64 = 0x0101_0101_0101_0101;
#[cfg(any(test, not(target_arch = "x86_64")))]
const HIGHS: u64 = 0x8080_8080_8080_8080;

#[cfg(any(test, not(target_arch = "x86_64")))]
/// Bit 7 of the lowest byte of `word` that is `"`, `\` or below 0x20 is
/// set (higher bits may be set spuriously; only the lowest one counts).
#[inline(always)]
fn string_stops(word: u64) -> u64 {
    let quote = word ^ (ONES * u64::from(b'"'));
    let backslash = word ^ (ONES * u64::from(b'\\'));
    let zero_quote = quote.wrapping_sub(ONES) & !quote;
    let zero_backslash = backslash.wrapping_sub(ONES) & !backslash;
    let control = word.wrapping_sub(ONES * 0x20) & !word;
    (zero_quote | zero_backslash | control) & HIGHS
}

/// The index of the first `"`, `\` or control byte among the 16 at
/// `chunk`, if any: SSE2 (every x86_64 has it) compares all 16 at once;
/// elsewhere two words go through [`string_stops`].
#[inline(always)]
fn first_stop16(chunk: &[u8; 16]) -> Option<usize> {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{
            _mm_cmpeq_epi8, _mm_loadu_si128, _mm_max_epu8, _mm_movemask_epi8, _mm_or_si128,
            _mm_set1_epi8,
        };
        // SAFETY: SSE2 is part of every x86_64 target (these intrinsics
        // need nothing else), and `chunk` is 16 readable bytes, which
        // `loadu` reads with no alignment required.
        let mask = unsafe {
            let v = _mm_loadu_si128(chunk.as_ptr().cast());
            let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"'.cast_signed()));
            let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\'.cast_signed()));
            // Unsigned `b <= 0x1f`: the maximum with 0x1f is 0x1f.
            let limit = _mm_set1_epi8(0x1f);
            let control = _mm_cmpeq_epi8(_mm_max_epu8(v, limit), limit);
            _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(quote, backslash), control))
        };
        (mask != 0).then(|| mask.trailing_zeros() as usize)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        first_stop16_words(chunk)
    }
}

/// [`first_stop16`] a word at a time (SWAR), for other architectures.
#[cfg(any(test, not(target_arch = "x86_64")))]
#[inline(always)]
fn first_stop16_words(chunk: &[u8; 16]) -> Option<usize> {
    let (low, high) = chunk.split_at(8);
    [low, high].iter().enumerate().find_map(|(i, half)| {
        let mut word = [0u8; 8];
        word.copy_from_slice(half);
        let stops = string_stops(u64::from_le_bytes(word));
        (stops != 0).then(|| i * 8 + (stops.trailing_zeros() / 8) as usize)
    })
}

/// The position of the first `"`, `\` or control byte at or after `pos`
/// (16 bytes at a time), or the start of the last 15 bytes, whichever
/// comes first; the caller checks the bytes from there one by one.
#[inline(always)]
fn next_stop(bytes: &[u8], mut pos: usize) -> usize {
    while let Some(chunk) = bytes.get(pos..pos + 16) {
        let chunk: &[u8; 16] = chunk.try_into().unwrap_or(&[b'"'; 16]);
        if let Some(i) = first_stop16(chunk) {
            return pos + i;
        }
        pos += 16;
    }
    pos
}

/// Appends `s` to `out` as a JSON string, quotes included, escaped exactly
/// as serde_json escapes it (`\"`, `\\`, `\b`, `\f`, `\n`, `\r`, `\t`, other
/// control bytes as `\u00xx`; everything else as it is), so a hand-written
/// record line is byte-identical to serde's. Runs without a byte to escape
/// are found 16 bytes at a time and copied whole.
pub fn push_escaped(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut run = 0;
    let mut pos = 0;
    loop {
        pos = next_stop(bytes, pos);
        // The tail, or the byte the chunk stopped at.
        let Some(&b) = bytes.get(pos) else {
            break;
        };
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            0x0c => b"\\f",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x00..=0x1f => &[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ],
            _ => {
                pos += 1;
                continue;
            }
        };
        out.extend_from_slice(&bytes[run..pos]);
        out.extend_from_slice(escape);
        pos += 1;
        run = pos;
    }
    out.extend_from_slice(&bytes[run..]);
    out.push(b'"');
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// A cursor over one JSON document.
pub struct Scanner<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Scanner<'a> {
    /// A scanner at the start of `text`.
    #[must_use]
    pub fn new(text: &'a str) -> Self {
        Self { text, pos: 0 }
    }

    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    /// An error at the current position.
    #[must_use]
    #[cold]
    pub fn error(&self, what: impl Into<Cow<'static, str>>) -> ScanError {
        let (line, column) = line_column(self.bytes(), self.pos.min(self.text.len()));
        ScanError::new(what.into(), line, column)
    }

    fn eof(&self, inside: &str) -> ScanError {
        self.error(format!("EOF while parsing {inside}"))
    }

    #[inline(always)]
    fn peek_byte(&self) -> Option<u8> {
        self.bytes().get(self.pos).copied()
    }

    /// Skips whitespace and returns the next byte (not consumed).
    #[inline(always)]
    pub fn peek(&mut self) -> Option<u8> {
        while let Some(b) = self.peek_byte() {
            // Every byte above the space is not whitespace: one compare
            // for the common byte.
            if b > b' ' || !matches!(b, b' ' | b'\n' | b'\t' | b'\r') {
                return Some(b);
            }
            self.pos += 1;
        }
        None
    }

    /// Requires the end of the document (whitespace only after the value).
    ///
    /// # Errors
    /// Anything else is "trailing characters".
    pub fn finish(&mut self) -> Result<(), ScanError> {
        match self.peek() {
            None => Ok(()),
            Some(_) => Err(self.error("trailing characters")),
        }
    }

    /// Consumes `null` when it comes next: true then.
    ///
    /// # Errors
    /// An `n` that does not start `null`.
    #[inline(always)]
    pub fn null(&mut self) -> Result<bool, ScanError> {
        if self.peek() == Some(b'n') {
            self.literal(b"null")?;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    fn literal(&mut self, word: &'static [u8]) -> Result<(), ScanError> {
        let end = self.pos + word.len();
        match self.bytes().get(self.pos..end) {
            Some(found) if found == word => {
                self.pos = end;
                Ok(())
            }
            _ => {
                // Point at the first byte that differs.
                let same = self
                    .bytes()
                    .get(self.pos..)
                    .unwrap_or_default()
                    .iter()
                    .zip(word)
                    .take_while(|(a, b)| a == b)
                    .count();
                self.pos += same;
                if self.pos >= self.text.len() {
                    Err(self.eof("a value"))
                } else {
                    Err(self.error("expected ident"))
                }
            }
        }
    }

    /// Walks an object, calling `field` with the scanner positioned at
    /// each member's value, which `field` must consume.
    ///
    /// # Errors
    /// Not an object, a malformed member, or `field`'s error.
    #[inline(always)]
    pub fn object(
        &mut self,
        what: &'static str,
        mut field: impl FnMut(&mut Self, &str) -> Result<(), ScanError>,
    ) -> Result<(), ScanError> {
        match self.peek() {
            Some(b'{') => {}
            Some(_) => return Err(self.error(format!("expected an object ({what})"))),
            None => return Err(self.eof("a value")),
        }
        if !self.open_object()? {
            return Ok(());
        }
        loop {
            let key = self.string_text()?;
            self.colon()?;
            if self.peek().is_none() {
                return Err(self.eof("a value"));
            }
            field(self, &key)?;
            if !self.more(b'}')? {
                return Ok(());
            }
        }
    }

    /// Consumes the `{` at the cursor: true when a member follows (the
    /// cursor is then on its key), false for `{}` (consumed).
    #[inline(always)]
    fn open_object(&mut self) -> Result<bool, ScanError> {
        self.pos += 1;
        match self.peek() {
            Some(b'}') => {
                self.pos += 1;
                Ok(false)
            }
            Some(b'"') => Ok(true),
            Some(_) => Err(self.error("key must be a string")),
            None => Err(self.eof("an object")),
        }
    }

    /// The `:` after a member's key, consumed.
    #[inline(always)]
    fn colon(&mut self) -> Result<(), ScanError> {
        // Compact JSON (what the API server writes) has no whitespace here.
        if self.peek_byte() == Some(b':') {
            self.pos += 1;
            return Ok(());
        }
        match self.peek() {
            Some(b':') => {
                self.pos += 1;
                Ok(())
            }
            Some(_) => Err(self.error("expected `:`")),
            None => Err(self.eof("an object")),
        }
    }

    /// After a member (`close` is `}`) or an element (`close` is `]`):
    /// consumes the `,` that says another follows (true; for a member the
    /// cursor is then on its key) or `close` (false).
    #[inline(always)]
    fn more(&mut self, close: u8) -> Result<bool, ScanError> {
        let in_object = close == b'}';
        // Compact JSON: `,"` or the close, with no whitespace around.
        let bytes = self.bytes();
        match bytes.get(self.pos) {
            Some(b',') if bytes.get(self.pos + 1) == Some(&b'"') => {
                self.pos += 1;
                return Ok(true);
            }
            Some(&c) if c == close => {
                self.pos += 1;
                return Ok(false);
            }
            _ => {}
        }
        match self.peek() {
            Some(b',') => {
                self.pos += 1;
                match self.peek() {
                    Some(c) if c == close => Err(self.error("trailing comma")),
                    Some(b'"') => Ok(true),
                    Some(_) if in_object => Err(self.error("key must be a string")),
                    None if in_object => Err(self.eof("an object")),
                    _ => Ok(true),
                }
            }
            Some(c) if c == close => {
                self.pos += 1;
                Ok(false)
            }
            Some(_) if in_object => Err(self.error("expected `,` or `}`")),
            Some(_) => Err(self.error("expected `,` or `]`")),
            None if in_object => Err(self.eof("an object")),
            None => Err(self.eof("a list")),
        }
    }

    /// Walks an array, calling `element` with the scanner positioned at
    /// each element, which `element` must consume.
    ///
    /// # Errors
    /// Not an array, a malformed array, or `element`'s error.
    #[inline(always)]
    pub fn array(
        &mut self,
        what: &'static str,
        mut element: impl FnMut(&mut Self) -> Result<(), ScanError>,
    ) -> Result<(), ScanError> {
        match self.peek() {
            Some(b'[') => self.pos += 1,
            Some(_) => return Err(self.error(format!("expected an array ({what})"))),
            None => return Err(self.eof("a value")),
        }
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            if self.peek().is_none() {
                return Err(self.eof("a list"));
            }
            element(self)?;
            if !self.more(b']')? {
                return Ok(());
            }
        }
    }

    /// A string, decoded: borrowed from the input when it has no escapes.
    ///
    /// # Errors
    /// Not a string, or a malformed one (control character, bad escape,
    /// a lone surrogate in a `\u` escape, no closing quote).
    #[inline(always)]
    pub fn string_text(&mut self) -> Result<Cow<'a, str>, ScanError> {
        match self.plain_string() {
            Some(text) => Ok(Cow::Borrowed(text)),
            None => self.string_text_slow(),
        }
    }

    /// The common string, read inline: no escape, no control byte, and
    /// 15 bytes or more of input after its closing quote. `None` (and the
    /// cursor untouched) for anything else, which the slow path reads.
    #[inline(always)]
    fn plain_string(&mut self) -> Option<&'a str> {
        let bytes = self.bytes();
        if bytes.get(self.pos) != Some(&b'"') {
            return None;
        }
        let mut pos = self.pos + 1;
        loop {
            let chunk: &[u8; 16] = bytes.get(pos..pos + 16)?.try_into().ok()?;
            if let Some(i) = first_stop16(chunk) {
                pos += i;
                break;
            }
            pos += 16;
        }
        if bytes.get(pos) != Some(&b'"') {
            return None;
        }
        let inner = bytes.get(self.pos + 1..pos)?;
        // SAFETY: `bytes` are a `&str`'s, and `inner` runs from just
        // after one ASCII `"` to just before another: both ends are
        // character boundaries, so it is UTF-8 (the checked `str::get`
        // was a call per string).
        let text = unsafe { std::str::from_utf8_unchecked(inner) };
        self.pos = pos + 1;
        Some(text)
    }

    #[inline(never)]
    fn string_text_slow(&mut self) -> Result<Cow<'a, str>, ScanError> {
        let (start, end, escaped) = self.string_span()?;
        let inner = self
            .text
            .get(start + 1..end - 1)
            .ok_or_else(|| self.error("string boundary inside a character"))?;
        if escaped {
            self.unescape(start + 1, inner).map(Cow::Owned)
        } else {
            Ok(Cow::Borrowed(inner))
        }
    }

    /// A string as the input wrote it, quotes and escapes included
    /// (checked, not decoded).
    ///
    /// # Errors
    /// As [`Self::string_text`], surrogates aside (checked when decoded).
    #[inline]
    pub fn string_raw(&mut self) -> Result<&'a str, ScanError> {
        let (start, end, _) = self.string_span()?;
        self.text
            .get(start..end)
            .ok_or_else(|| self.error("string boundary inside a character"))
    }

    /// Scans the string at the cursor: its span, quotes included, and
    /// whether it holds escapes. Escapes are checked for syntax.
    #[inline(always)]
    fn string_span(&mut self) -> Result<(usize, usize, bool), ScanError> {
        let start = match self.peek() {
            Some(b'"') => self.pos,
            Some(_) => return Err(self.error("invalid type: expected a string")),
            None => return Err(self.eof("a value")),
        };
        let bytes = self.bytes();
        let mut pos = start + 1;
        let mut escaped = false;
        loop {
            // 16 bytes at a time to the next `"`, `\` or control byte.
            pos = next_stop(bytes, pos);
            // The tail, or the stop byte the chunk found.
            loop {
                match bytes.get(pos) {
                    None => {
                        self.pos = pos;
                        return Err(self.eof("a string"));
                    }
                    Some(b'"') => {
                        self.pos = pos + 1;
                        return Ok((start, pos + 1, escaped));
                    }
                    Some(b'\\') => {
                        escaped = true;
                        self.pos = pos + 1;
                        pos = self.escape_syntax()?;
                        break;
                    }
                    Some(&b) if b < 0x20 => {
                        self.pos = pos;
                        return Err(self.error(
                            "control character (\\u0000-\\u001F) found while parsing a string",
                        ));
                    }
                    Some(_) => pos += 1,
                }
            }
        }
    }

    /// Checks the escape after a `\` (the cursor is on its letter) and
    /// returns the position after it.
    fn escape_syntax(&mut self) -> Result<usize, ScanError> {
        match self.peek_byte() {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => Ok(self.pos + 1),
            Some(b'u') => {
                self.pos += 1;
                self.hex4()?;
                Ok(self.pos)
            }
            Some(_) => Err(self.error("invalid escape")),
            None => Err(self.eof("a string")),
        }
    }

    /// Four hex digits at the cursor, consumed.
    fn hex4(&mut self) -> Result<u16, ScanError> {
        let mut value = 0u16;
        for _ in 0..4 {
            let digit = match self.peek_byte() {
                Some(b @ b'0'..=b'9') => b - b'0',
                Some(b @ b'a'..=b'f') => b - b'a' + 10,
                Some(b @ b'A'..=b'F') => b - b'A' + 10,
                Some(_) => return Err(self.error("invalid escape")),
                None => return Err(self.eof("a string")),
            };
            value = value * 16 + u16::from(digit);
            self.pos += 1;
        }
        Ok(value)
    }

    /// Decodes `inner` (a string's content, escapes checked, starting at
    /// byte `at` of the input).
    fn unescape(&mut self, at: usize, inner: &str) -> Result<String, ScanError> {
        let end = self.pos;
        let mut out = String::with_capacity(inner.len());
        let mut rest = inner;
        let mut offset = at;
        while let Some(backslash) = rest.find('\\') {
            out.push_str(rest.get(..backslash).unwrap_or_default());
            let escape = rest.as_bytes().get(backslash + 1).copied();
            let mut taken = 2;
            match escape {
                Some(b'"') => out.push('"'),
                Some(b'\\') => out.push('\\'),
                Some(b'/') => out.push('/'),
                Some(b'b') => out.push('\u{8}'),
                Some(b'f') => out.push('\u{c}'),
                Some(b'n') => out.push('\n'),
                Some(b'r') => out.push('\r'),
                Some(b't') => out.push('\t'),
                _ => {
                    // `\uXXXX`, possibly a surrogate pair.
                    self.pos = offset + backslash + 2;
                    let first = self.hex4()?;
                    taken = 6;
                    let c = match first {
                        0xD800..=0xDBFF => {
                            let pair = rest.as_bytes().get(backslash + 6..backslash + 8);
                            if pair != Some(b"\\u") {
                                return Err(self.error("lone leading surrogate in hex escape"));
                            }
                            self.pos += 2;
                            let second = self.hex4()?;
                            if !(0xDC00..=0xDFFF).contains(&second) {
                                return Err(self.error("lone leading surrogate in hex escape"));
                            }
                            taken = 12;
                            let code = 0x1_0000
                                + ((u32::from(first) - 0xD800) << 10)
                                + (u32::from(second) - 0xDC00);
                            char::from_u32(code)
                        }
                        0xDC00..=0xDFFF => {
                            return Err(self.error("lone leading surrogate in hex escape"));
                        }
                        other => char::from_u32(u32::from(other)),
                    };
                    out.push(c.unwrap_or(char::REPLACEMENT_CHARACTER));
                }
            }
            offset += backslash + taken;
            rest = rest.get(backslash + taken..).unwrap_or_default();
        }
        out.push_str(rest);
        self.pos = end;
        Ok(out)
    }

    /// An integer that fits an `i64`.
    ///
    /// # Errors
    /// Not a number, a malformed one, a fraction or exponent, or out of range.
    pub fn i64(&mut self) -> Result<i64, ScanError> {
        if let Some(value) = self.small_natural() {
            return Ok(value);
        }
        let start = match self.peek() {
            Some(b'-' | b'0'..=b'9') => self.pos,
            Some(_) => return Err(self.error("invalid type: expected an integer")),
            None => return Err(self.eof("a value")),
        };
        let integral = self.number()?;
        // serde_json reads `-0` as the float -0.0, to keep its sign.
        if !integral || self.text.get(start..self.pos) == Some("-0") {
            self.pos = start;
            return Err(self.error("invalid type: floating point, expected an integer"));
        }
        let digits = self.text.get(start..self.pos).unwrap_or_default();
        digits.parse::<i64>().map_err(|_| {
            self.pos = start;
            self.error("integer out of range for i64")
        })
    }

    /// The common integer (a response code), read inline: 0, or 1 to 18
    /// digits without a leading zero, then a byte that ends a number.
    /// `None` (the cursor untouched) for anything else, which [`Self::i64`]
    /// reads the long way.
    #[inline(always)]
    fn small_natural(&mut self) -> Option<i64> {
        let bytes = self.bytes();
        let mut pos = self.pos;
        let mut value: i64 = 0;
        match bytes.get(pos) {
            Some(b'0') => pos += 1,
            Some(&b @ b'1'..=b'9') => {
                value = i64::from(b - b'0');
                pos += 1;
                while let Some(&b @ b'0'..=b'9') = bytes.get(pos) {
                    if pos - self.pos >= 18 {
                        return None;
                    }
                    value = value * 10 + i64::from(b - b'0');
                    pos += 1;
                }
            }
            _ => return None,
        }
        if matches!(bytes.get(pos), Some(b'0'..=b'9' | b'.' | b'e' | b'E')) {
            return None;
        }
        self.pos = pos;
        Some(value)
    }

    /// Scans a number; true when it is integral (no fraction, no exponent).
    fn number(&mut self) -> Result<bool, ScanError> {
        if self.peek_byte() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek_byte() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.digits(),
            Some(_) => return Err(self.error("invalid number")),
            None => return Err(self.eof("a value")),
        }
        let mut integral = true;
        if self.peek_byte() == Some(b'.') {
            self.pos += 1;
            integral = false;
            if !matches!(self.peek_byte(), Some(b'0'..=b'9')) {
                return Err(self.number_end_error());
            }
            self.digits();
        }
        if matches!(self.peek_byte(), Some(b'e' | b'E')) {
            self.pos += 1;
            integral = false;
            if matches!(self.peek_byte(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if !matches!(self.peek_byte(), Some(b'0'..=b'9')) {
                return Err(self.number_end_error());
            }
            self.digits();
        }
        Ok(integral)
    }

    fn number_end_error(&self) -> ScanError {
        if self.pos >= self.text.len() {
            self.eof("a value")
        } else {
            self.error("invalid number")
        }
    }

    fn digits(&mut self) {
        while matches!(self.peek_byte(), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
    }

    /// Skips one value of any kind, checking it, and returns its text.
    /// Nesting is counted, not recursed into, so depth costs no stack.
    ///
    /// # Errors
    /// A malformed value.
    pub fn skip(&mut self) -> Result<&'a str, ScanError> {
        let start = match self.peek() {
            Some(_) => self.pos,
            None => return Err(self.eof("a value")),
        };
        // Open brackets, innermost last: true for `{`.
        let mut open = Brackets::default();
        loop {
            // A value at the cursor.
            match self.peek() {
                Some(b'"') => {
                    self.string_span()?;
                }
                Some(b'{') => {
                    if self.open_object()? {
                        open.push(true);
                        self.member_key()?;
                        continue;
                    }
                }
                Some(b'[') => {
                    self.pos += 1;
                    if self.peek() == Some(b']') {
                        self.pos += 1;
                    } else {
                        open.push(false);
                        continue;
                    }
                }
                Some(b't') => self.literal(b"true")?,
                Some(b'f') => self.literal(b"false")?,
                Some(b'n') => self.literal(b"null")?,
                Some(b'-' | b'0'..=b'9') => {
                    self.number()?;
                }
                Some(_) => return Err(self.error("expected value")),
                None => return Err(self.eof("a value")),
            }
            // After a value: close what ends here, or go to the next one.
            loop {
                let Some(in_object) = open.last() else {
                    return Ok(self.text.get(start..self.pos).unwrap_or_default());
                };
                if self.more(if in_object { b'}' } else { b']' })? {
                    if in_object {
                        self.member_key()?;
                    }
                    break;
                }
                open.pop();
            }
        }
    }

    /// A member's key and its `:` (the cursor is on the key's quote).
    fn member_key(&mut self) -> Result<(), ScanError> {
        self.string_span()?;
        self.colon()
    }
}

/// The brackets [`Scanner::skip`] is inside, innermost last (true for
/// `{`): the first 64 as bits, deeper ones in a vector, so skipping a
/// value (most events skip a few nested ones) allocates nothing.
#[derive(Debug, Default)]
struct Brackets {
    bits: u64,
    depth: usize,
    deeper: Vec<bool>,
}

impl Brackets {
    fn push(&mut self, object: bool) {
        if self.depth < 64 {
            let bit = 1u64 << self.depth;
            if object {
                self.bits |= bit;
            } else {
                self.bits &= !bit;
            }
        } else {
            self.deeper.push(object);
        }
        self.depth += 1;
    }

    fn last(&self) -> Option<bool> {
        match self.depth {
            0 => None,
            d if d <= 64 => Some(self.bits & (1u64 << (d - 1)) != 0),
            _ => self.deeper.last().copied(),
        }
    }

    fn pop(&mut self) {
        if self.depth > 64 {
            self.deeper.pop();
        }
        self.depth = self.depth.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn skip_all(text: &str) -> Result<&str, ScanError> {
        let mut s = Scanner::new(text);
        let v = s.skip()?;
        s.finish()?;
        Ok(v)
    }

    #[test]
    fn skips_what_serde_json_accepts_and_rejects_what_it_rejects() {
        let cases = [
            r#"{"a":[1,2.5,-0,1e9,-3E-2,true,false,null,"x\"y\\\/\b\f\n\r\t\u00e9"],"b":{}}"#,
            r#" [ ] "#,
            r#"{"é":"日本語 ünïcödé 🎉","k":{"n":{"m":[[],[{}]]}}}"#,
            r#""a string with no escapes, longer than eight bytes""#,
            "0",
            "{\"a\":1,}",
            "[1,]",
            "[1 2]",
            "{\"a\" 1}",
            "{1:2}",
            "01",
            "1.",
            "1e",
            "-",
            "tru",
            "nul",
            "\"\\x\"",
            "\"\\u12G4\"",
            "\"abc",
            "\"a\u{1}b\"",
            "{\"a\":1",
            "[[[",
            "{\"a\":1}}",
            "\"\\ud800\"",
        ];
        for case in cases {
            let ours = skip_all(case).is_ok();
            let theirs = serde_json::from_str::<serde::de::IgnoredAny>(case).is_ok();
            assert_eq!(ours, theirs, "{case:?}");
        }
    }

    #[test]
    fn reads_integers_like_serde_json() {
        let mut cases: Vec<String> = [
            "0",
            "7",
            "200",
            "-0",
            "-1",
            "01",
            "1.0",
            "1e3",
            "2E0",
            "-",
            "00",
            "1.",
            "0x1",
            "999999999999999999",
            "1000000000000000000",
            "9223372036854775807",
            "9223372036854775808",
            "-9223372036854775808",
            "-9223372036854775809",
            "12345678901234567890",
            "\"1\"",
            "true",
            " 42",
            "42 ",
        ]
        .iter()
        .map(|c| (*c).to_owned())
        .collect();
        // Every length of the inline path and past it.
        for n in 1..=20 {
            cases.push("9".repeat(n));
            cases.push(format!("1{}", "0".repeat(n - 1)));
        }
        for case in &cases {
            for text in [
                case.clone(),
                format!("[{case}]"),
                format!("{{\"c\":{case}}}"),
            ] {
                let ours = if text.starts_with('[') {
                    let mut s = Scanner::new(&text);
                    let mut got = None;
                    s.array("codes", |s| {
                        got = Some(s.i64()?);
                        Ok(())
                    })
                    .and_then(|()| s.finish())
                    .ok()
                    .and(got)
                } else if text.starts_with('{') {
                    let mut s = Scanner::new(&text);
                    let mut got = None;
                    s.object("status", |s, _| {
                        got = Some(s.i64()?);
                        Ok(())
                    })
                    .and_then(|()| s.finish())
                    .ok()
                    .and(got)
                } else {
                    let mut s = Scanner::new(&text);
                    s.i64().and_then(|v| s.finish().map(|()| v)).ok()
                };
                let theirs = if text.starts_with('[') {
                    serde_json::from_str::<[i64; 1]>(&text).ok().map(|[v]| v)
                } else if text.starts_with('{') {
                    serde_json::from_str::<std::collections::BTreeMap<String, i64>>(&text)
                        .ok()
                        .and_then(|m| m.get("c").copied())
                } else {
                    serde_json::from_str::<i64>(&text).ok()
                };
                assert_eq!(ours, theirs, "{text:?}");
            }
        }
    }

    #[test]
    fn decodes_strings_like_serde_json() {
        for case in [
            r#""plain""#,
            r#""tab\tquote\"slash\/back\\""#,
            r#""\u00e9\u65e5\ud83c\udf89""#,
            r#""ünïcödé and then some more bytes""#,
        ] {
            let mut s = Scanner::new(case);
            let ours = s.string_text().unwrap();
            let theirs: String = serde_json::from_str(case).unwrap();
            assert_eq!(ours, theirs, "{case:?}");
        }
        for lone in [r#""\ud800""#, r#""\udc00""#, r#""\ud800\u0041""#] {
            let mut s = Scanner::new(lone);
            assert!(s.string_text().is_err(), "{lone}");
            assert!(serde_json::from_str::<String>(lone).is_err(), "{lone}");
        }
    }

    #[test]
    fn finds_every_stop_byte_in_a_word() {
        // Each stop at each offset of strings of 16 and 40 bytes, so the
        // inline path, the 16-byte loop and the tail all see it.
        for (len, at) in (0..16).map(|at| (16, at)).chain((0..40).map(|at| (40, at))) {
            for stop in [b'"', b'\\', 0x1f, 0x00] {
                let mut body = vec![b'a'; len];
                if let Some(b) = body.get_mut(at) {
                    *b = stop;
                }
                let mut text = vec![b'"'];
                text.extend_from_slice(&body);
                text.push(b'"');
                let text = String::from_utf8(text).unwrap();
                let mut s = Scanner::new(&text);
                let ours = s.string_raw().map(str::len);
                let theirs = serde_json::from_str::<serde::de::IgnoredAny>(&text);
                match stop {
                    b'"' => assert_eq!(ours.unwrap(), at + 2, "{text:?}"),
                    _ => assert_eq!(ours.is_ok(), theirs.is_ok(), "{text:?}"),
                }
                // Decoded, with room after it for the inline path.
                let padded = format!("{text}{}", " ".repeat(20));
                let decoded = Scanner::new(&padded).string_text().map(Cow::into_owned);
                match stop {
                    b'"' => assert_eq!(decoded.unwrap(), "a".repeat(at), "{padded:?}"),
                    _ => assert_eq!(
                        decoded.ok(),
                        serde_json::from_str::<String>(&padded).ok(),
                        "{padded:?}"
                    ),
                }
            }
        }
    }

    /// Both ways of finding a stop byte in 16 agree with a byte-by-byte
    /// search, for every byte value at every offset, behind every filler.
    #[test]
    fn stop_bytes_found_sixteen_at_a_time() {
        let is_stop = |b: u8| b == b'"' || b == b'\\' || b < 0x20;
        for filler in [b'a', 0x20, 0x7f, 0x80, 0xff] {
            for at in 0..16 {
                for b in 0..=255u8 {
                    let mut chunk = [filler; 16];
                    chunk[at] = b;
                    let want = chunk.iter().position(|&c| is_stop(c));
                    assert_eq!(first_stop16(&chunk), want, "{b:#x} at {at} in {filler:#x}");
                    assert_eq!(
                        first_stop16_words(&chunk),
                        want,
                        "{b:#x} at {at} in {filler:#x}"
                    );
                }
            }
        }
    }

    #[test]
    fn integers() {
        for (text, want) in [
            ("200", Some(200)),
            ("-0", None),
            ("-9223372036854775808", Some(i64::MIN)),
            ("9223372036854775808", None),
            ("2.0", None),
            ("2e2", None),
            ("\"2\"", None),
        ] {
            let mut s = Scanner::new(text);
            assert_eq!(s.i64().ok(), want, "{text}");
            assert_eq!(serde_json::from_str::<i64>(text).ok(), want, "{text}");
        }
    }

    #[test]
    fn deep_nesting_costs_no_stack() {
        let deep = "[".repeat(100_000) + &"]".repeat(100_000);
        assert!(skip_all(&deep).is_ok());
        let open = "{\"a\":".repeat(100_000);
        let err = skip_all(&open).unwrap_err();
        assert!(err.what().starts_with("EOF"), "{err}");
    }

    #[test]
    fn mixed_brackets_close_in_order_below_and_past_64_deep() {
        for depth in [1usize, 2, 63, 64, 65, 66, 127, 128, 129, 200] {
            // `{"a":[{"a":[...` alternating, each closed by its own kind.
            let mut text = String::new();
            let mut closers = Vec::new();
            for level in 0..depth {
                if level % 2 == 0 {
                    text.push_str("{\"a\":");
                    closers.push('}');
                } else {
                    text.push('[');
                    closers.push(']');
                }
            }
            text.push('1');
            let good: String = text.clone() + &closers.iter().rev().collect::<String>();
            assert!(skip_all(&good).is_ok(), "depth {depth}");
            assert!(serde_json::from_str::<serde_json::Value>(&good).is_ok() || depth > 127);
            // The wrong closer at each level, innermost first, is an error.
            for wrong_at in [0, depth / 2, depth - 1] {
                let mut c: Vec<char> = closers.iter().rev().copied().collect();
                c[wrong_at] = if c[wrong_at] == '}' { ']' } else { '}' };
                let bad = text.clone() + &c.iter().collect::<String>();
                assert!(
                    skip_all(&bad).is_err(),
                    "depth {depth}, wrong closer {wrong_at}"
                );
            }
        }
    }

    #[test]
    fn errors_name_line_and_column() {
        let err = skip_all("{\n  \"a\": tru }").unwrap_err();
        assert_eq!((err.line(), err.column()), (2, 11), "{err}");
        assert_eq!(err.to_string(), "expected ident at line 2 column 11");
    }
}

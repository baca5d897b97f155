//! Reading inputs as a stream of JSON records, in constant memory.
//!
//! - [`open`] opens a file (or `-` for standard input) and sees from its
//!   first two bytes whether it is gzip (`1f 8b`; concatenated members, as
//!   rotated logs are, are read through); it counts the bytes read from the
//!   file for the progress bar.
//! - [`RecordSource`] yields one record at a time:
//!   - JSON lines (what the API server's log backend writes): one record per
//!     non-empty line; a line that does not parse is reported by the caller
//!     and the next line is read, so one bad line costs one event;
//!   - a JSON document spread over lines (`kubectl get --raw ... | jq .`,
//!     an `EventList`, a JSON array, pretty-printed events): detected when
//!     the first line is an incomplete value, then split by a byte scanner
//!     that yields each element of a top-level object's `items` array (or
//!     of a top-level array) on its own, so a list of any length is never
//!     held whole;
//!   - an `EventList` on one line is expanded by [`RecordSource::expand_list`].
//! - Read errors (a corrupt or truncated gzip stream, an I/O error) end that
//!   file with a [`Problems`] entry naming the file and line; other files go on.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Buffer size for reading files.
const BUFFER_BYTES: usize = 256 * 1024;
/// How many malformed records are kept with their location (all are counted).
pub const MAX_KEPT_PROBLEMS: usize = 100;

/// Errors opening an input.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The file could not be opened.
    #[error("cannot open {path}")]
    OpenInput {
        /// The path.
        path: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The first bytes could not be read.
    #[error("cannot read {path}")]
    ReadInput {
        /// The path.
        path: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

/// Where a record came from: file, 1-based line, and for an element of a
/// list, its 0-based index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Location {
    /// The file as given (shared by every record of the file).
    #[serde(serialize_with = "serialize_file")]
    pub file: Arc<str>,
    /// 1-based line where the record starts.
    pub line: u64,
    /// Index in the list the record is an element of.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub item: Option<u64>,
}

fn serialize_file<S: serde::Serializer>(file: &Arc<str>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(file)
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.line)?;
        if let Some(i) = self.item {
            write!(f, " (items[{i}])")?;
        }
        Ok(())
    }
}

/// A record that could not be used, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Malformed {
    /// Where.
    pub location: Location,
    /// Why.
    pub error: String,
}

/// Malformed records: all counted, the first [`MAX_KEPT_PROBLEMS`] kept.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Problems {
    /// How many.
    pub count: u64,
    /// The first ones, with location.
    pub kept: Vec<Malformed>,
}

impl Problems {
    /// Records one.
    pub fn record(&mut self, location: Location, error: impl Into<String>) {
        self.count += 1;
        if self.kept.len() < MAX_KEPT_PROBLEMS {
            let error = error.into();
            tracing::warn!(%location, %error, "malformed input");
            self.kept.push(Malformed { location, error });
        }
    }
}

/// Counts the bytes read through it.
struct Counting<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// An opened input.
pub struct Opened {
    /// The decoded bytes.
    pub reader: Box<dyn BufRead + Send>,
    /// Bytes read from the file so far (compressed bytes for gzip).
    pub bytes_read: Arc<AtomicU64>,
    /// The file's size, when known.
    pub size: Option<u64>,
    /// Whether it is gzip.
    pub gzip: bool,
}

/// Opens `path` (`-` is standard input), decompressing gzip.
///
/// # Errors
/// [`InputError`] when it cannot be opened or its first bytes read.
pub fn open(path: &Path) -> Result<Opened, InputError> {
    let shown = path.display().to_string();
    let count = Arc::new(AtomicU64::new(0));
    let (raw, size): (Box<dyn Read + Send>, Option<u64>) = if path == Path::new("-") {
        (Box::new(io::stdin()), None)
    } else {
        let file = File::open(path).map_err(|source| InputError::OpenInput {
            path: shown.clone(),
            source,
        })?;
        let size = file.metadata().ok().map(|m| m.len());
        (Box::new(file), size)
    };
    let mut buffered = BufReader::with_capacity(
        BUFFER_BYTES,
        Counting {
            inner: raw,
            count: Arc::clone(&count),
        },
    );
    let head = buffered
        .fill_buf()
        .map_err(|source| InputError::ReadInput {
            path: shown,
            source,
        })?;
    let gzip = head.starts_with(&[0x1f, 0x8b]);
    let reader: Box<dyn BufRead + Send> = if gzip {
        Box::new(BufReader::with_capacity(
            BUFFER_BYTES,
            flate2::bufread::MultiGzDecoder::new(buffered),
        ))
    } else {
        Box::new(buffered)
    };
    Ok(Opened {
        reader,
        bytes_read: count,
        size,
        gzip,
    })
}

enum Mode {
    /// Not yet known: the first non-empty line decides.
    Start,
    Lines,
    Document(Box<Scanner>),
    Done,
}

/// One input file as a stream of JSON records.
pub struct RecordSource {
    file: Arc<str>,
    reader: Box<dyn BufRead + Send>,
    mode: Mode,
    /// Lines read so far.
    line: u64,
    buf: Vec<u8>,
    /// Start and end of the current record in `buf`.
    span: (usize, usize),
    location: Location,
    pending: VecDeque<(Location, Vec<u8>)>,
    from_pending: bool,
    /// The current record is `span` of the reader's own buffer (a whole
    /// line was there): no copy is made, and these bytes are consumed
    /// when the next record is asked for.
    in_reader: bool,
    consume: usize,
}

impl RecordSource {
    /// A source over an opened reader; `file` names it in locations.
    #[must_use]
    pub fn new(file: impl Into<String>, reader: Box<dyn BufRead + Send>) -> Self {
        let file: Arc<str> = file.into().into();
        Self {
            location: Location {
                file: Arc::clone(&file),
                line: 0,
                item: None,
            },
            file,
            reader,
            mode: Mode::Start,
            line: 0,
            buf: Vec::with_capacity(8192),
            span: (0, 0),
            pending: VecDeque::new(),
            from_pending: false,
            in_reader: false,
            consume: 0,
        }
    }

    /// The current record (valid after [`Self::advance`] returned true).
    #[must_use]
    pub fn record(&mut self) -> (&Location, &[u8]) {
        let (start, end) = self.span;
        let bytes = if self.in_reader {
            // The line is still in the reader's buffer (nothing was
            // consumed since `advance` found it), so this does not read.
            self.reader.fill_buf().unwrap_or_default()
        } else {
            &self.buf
        };
        (&self.location, bytes.get(start..end).unwrap_or_default())
    }

    /// JSON lines, the common case: the next whole line in the reader's
    /// buffer, found without copying it. `Some(true)`: a record;
    /// `Some(false)`: the input ended or failed; `None`: no whole line is
    /// buffered (read it the copying way).
    fn next_buffered_line(&mut self, problems: &mut Problems) -> Option<bool> {
        loop {
            let available = match self.reader.fill_buf() {
                Ok(b) => b,
                Err(err) => {
                    self.read_error(problems, &err);
                    return Some(false);
                }
            };
            if available.is_empty() {
                self.mode = Mode::Done;
                return Some(false);
            }
            let end = memchr::memchr(b'\n', available)? + 1;
            let (start, stop) = trim_span(available.get(..end).unwrap_or_default());
            self.line += 1;
            if start == stop {
                self.reader.consume(end);
                continue;
            }
            self.span = (start, stop);
            self.consume = end;
            self.in_reader = true;
            self.location = Location {
                file: Arc::clone(&self.file),
                line: self.line,
                item: None,
            };
            return Some(true);
        }
    }

    /// Lines read so far.
    #[must_use]
    pub fn lines_read(&self) -> u64 {
        self.line
    }

    fn read_error(&mut self, problems: &mut Problems, err: &io::Error) {
        problems.record(
            Location {
                file: Arc::clone(&self.file),
                line: self.line + 1,
                item: None,
            },
            format!("read failed, rest of file skipped: {err}"),
        );
        self.mode = Mode::Done;
    }

    /// Moves to the next record; false at the end of the input.
    pub fn advance(&mut self, problems: &mut Problems) -> bool {
        if let Some((location, bytes)) = self.pending.pop_front() {
            self.location = location;
            self.buf = bytes;
            self.span = (0, self.buf.len());
            self.from_pending = true;
            return true;
        }
        self.from_pending = false;
        if self.in_reader {
            self.reader.consume(self.consume);
            self.in_reader = false;
            self.consume = 0;
        }
        loop {
            match &mut self.mode {
                Mode::Done => return false,
                Mode::Lines => {
                    if let Some(found) = self.next_buffered_line(problems) {
                        return found;
                    }
                }
                Mode::Document(scanner) => {
                    return match scanner.next_value(&mut *self.reader, &mut self.buf, problems) {
                        Ok(Some(location)) => {
                            self.line = scanner.line;
                            self.location = location;
                            self.span = (0, self.buf.len());
                            true
                        }
                        Ok(None) => {
                            self.line = scanner.line;
                            self.mode = Mode::Done;
                            false
                        }
                        Err(err) => {
                            self.line = scanner.line;
                            self.read_error(problems, &err);
                            false
                        }
                    };
                }
                Mode::Start => {}
            }
            self.buf.clear();
            match self.reader.read_until(b'\n', &mut self.buf) {
                Ok(0) => {
                    self.mode = Mode::Done;
                    return false;
                }
                Ok(_) => {}
                Err(err) => {
                    self.read_error(problems, &err);
                    return false;
                }
            }
            self.line += 1;
            let (start, end) = trim_span(&self.buf);
            if start == end {
                continue;
            }
            if matches!(self.mode, Mode::Start) {
                let first = &self.buf[start..end];
                let incomplete = first[0] == b'['
                    || (first[0] == b'{'
                        && serde_json::from_slice::<serde::de::IgnoredAny>(first)
                            .is_err_and(|e| e.is_eof()));
                if incomplete {
                    let mut scanner = Box::new(Scanner::new(Arc::clone(&self.file)));
                    scanner.line = self.line - 1;
                    scanner.prefix = std::mem::take(&mut self.buf);
                    self.mode = Mode::Document(scanner);
                    continue;
                }
                self.mode = Mode::Lines;
            }
            self.span = (start, end);
            self.location = Location {
                file: Arc::clone(&self.file),
                line: self.line,
                item: None,
            };
            return true;
        }
    }

    /// Replaces the current record, an `EventList` on one line, by its
    /// items (each located at the same line with its index). A list that
    /// does not parse is reported.
    pub fn expand_list(&mut self, problems: &mut Problems) {
        #[derive(serde::Deserialize)]
        struct List {
            #[serde(default)]
            items: Option<Vec<serde_json::Value>>,
        }
        let (location, bytes) = self.record();
        let location = location.clone();
        match serde_json::from_slice::<List>(bytes) {
            Ok(list) => {
                let mut items: Vec<(Location, Vec<u8>)> = Vec::new();
                for (i, item) in list.items.unwrap_or_default().into_iter().enumerate() {
                    let mut loc = location.clone();
                    loc.item = Some(i as u64);
                    match serde_json::to_vec(&item) {
                        Ok(bytes) => items.push((loc, bytes)),
                        Err(e) => problems.record(loc, e.to_string()),
                    }
                }
                for entry in items.into_iter().rev() {
                    self.pending.push_front(entry);
                }
            }
            Err(e) => problems.record(location, format!("EventList: {e}")),
        }
    }
}

fn trim_span(b: &[u8]) -> (usize, usize) {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |p| p + 1);
    (start, end.max(start))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Top {
    /// Between top-level values.
    Between,
    /// In a top-level object, capturing it whole.
    Object,
    /// In the `items` array of a top-level object.
    Items,
    /// After the `items` array, skipping the rest of the object.
    AfterItems,
    /// In a top-level array.
    Array,
}

/// Splits a JSON document into values: each top-level object, or each
/// element of a top-level object's `items` array or of a top-level array.
/// It tracks only strings and nesting; the parser judges each value.
struct Scanner {
    file: Arc<str>,
    line: u64,
    prefix: Vec<u8>,
    prefix_pos: usize,
    stack: Vec<u8>,
    in_string: bool,
    escape: bool,
    top: Top,
    /// Depth at which the captured element started (0 = not capturing).
    capture_depth: usize,
    capture_line: u64,
    item: u64,
    /// At depth 1 of a top-level object: the last key and whether a key is expected.
    key: Vec<u8>,
    in_key: bool,
    expect_key: bool,
    after_colon: bool,
    /// Inside a scalar list element (reported once).
    in_scalar: bool,
    /// Line of the last text-outside-values report (one per line).
    junk_line: u64,
}

impl Scanner {
    fn new(file: Arc<str>) -> Self {
        Self {
            file,
            line: 0,
            prefix: Vec::new(),
            prefix_pos: 0,
            stack: Vec::new(),
            in_string: false,
            escape: false,
            top: Top::Between,
            capture_depth: 0,
            capture_line: 0,
            item: 0,
            key: Vec::new(),
            in_key: false,
            expect_key: false,
            after_colon: false,
            in_scalar: false,
            junk_line: 0,
        }
    }

    fn location(&self, item: Option<u64>) -> Location {
        Location {
            file: Arc::clone(&self.file),
            line: self.capture_line,
            item,
        }
    }

    /// The next value into `out`; `None` at the end.
    fn next_value(
        &mut self,
        reader: &mut dyn BufRead,
        out: &mut Vec<u8>,
        problems: &mut Problems,
    ) -> io::Result<Option<Location>> {
        out.clear();
        loop {
            let from_prefix = self.prefix_pos < self.prefix.len();
            let prefix = std::mem::take(&mut self.prefix);
            let chunk: &[u8] = if from_prefix {
                &prefix[self.prefix_pos..]
            } else {
                reader.fill_buf()?
            };
            if chunk.is_empty() {
                if !self.stack.is_empty() {
                    self.capture_line = self.capture_line.max(1);
                    problems.record(
                        self.location(None),
                        format!(
                            "truncated: the input ends inside a value (at line {})",
                            self.line + 1
                        ),
                    );
                    self.stack.clear();
                }
                return Ok(None);
            }
            let mut consumed = chunk.len();
            let mut done: Option<Location> = None;
            for (i, &c) in chunk.iter().enumerate() {
                if let Some(loc) = self.step(c, out, problems) {
                    consumed = i + 1;
                    done = Some(loc);
                    break;
                }
            }
            if from_prefix {
                self.prefix_pos += consumed;
                self.prefix = prefix;
            } else {
                reader.consume(consumed);
            }
            if done.is_some() {
                return Ok(done);
            }
        }
    }

    /// One byte; returns the location when a value is complete in `out`.
    fn step(&mut self, c: u8, out: &mut Vec<u8>, problems: &mut Problems) -> Option<Location> {
        if c == b'\n' {
            self.line += 1;
        }
        let capturing = self.capture_depth > 0;
        if capturing {
            out.push(c);
        }
        if self.in_string {
            if self.escape {
                self.escape = false;
            } else if c == b'\\' {
                self.escape = true;
            } else if c == b'"' {
                self.in_string = false;
                self.in_key = false;
            } else if self.in_key {
                self.key.push(c);
            }
            return None;
        }
        let depth = self.stack.len();
        match c {
            b'"' => {
                self.in_string = true;
                if depth == 1 && self.top != Top::Array && self.expect_key {
                    self.key.clear();
                    self.in_key = true;
                }
                None
            }
            b'{' | b'[' => {
                if depth == 0 {
                    self.capture_line = self.line + 1;
                    if c == b'{' {
                        self.top = Top::Object;
                        self.capture_depth = 1;
                        out.clear();
                        out.push(c);
                        self.expect_key = true;
                    } else {
                        self.top = Top::Array;
                        self.item = 0;
                    }
                    self.stack.push(c);
                    return None;
                }
                if depth == 1
                    && self.top == Top::Object
                    && c == b'['
                    && self.after_colon
                    && self.key == b"items"
                {
                    self.top = Top::Items;
                    self.capture_depth = 0;
                    out.clear();
                    self.item = 0;
                    self.stack.push(c);
                    return None;
                }
                let element_level = (self.top == Top::Items && depth == 2)
                    || (self.top == Top::Array && depth == 1);
                if element_level && !capturing {
                    out.clear();
                    out.push(c);
                    self.capture_depth = depth + 1;
                    self.capture_line = self.line + 1;
                }
                self.after_colon = false;
                self.stack.push(c);
                None
            }
            b'}' | b']' => {
                self.in_scalar = false;
                let open = self.stack.pop();
                let matches = matches!((open, c), (Some(b'{'), b'}') | (Some(b'['), b']'));
                if !matches {
                    self.capture_line = self.line + 1;
                    problems.record(
                        self.location(None),
                        format!(
                            "unexpected {:?}: the document's nesting is broken",
                            c as char
                        ),
                    );
                    self.stack.clear();
                    self.capture_depth = 0;
                    self.top = Top::Between;
                    out.clear();
                    return None;
                }
                let depth = self.stack.len();
                if self.capture_depth > 0 && depth + 1 == self.capture_depth {
                    self.capture_depth = 0;
                    let item = match self.top {
                        Top::Items | Top::Array => {
                            let i = self.item;
                            self.item += 1;
                            Some(i)
                        }
                        _ => None,
                    };
                    if depth == 0 {
                        self.top = Top::Between;
                    }
                    return Some(self.location(item));
                }
                if self.top == Top::Items && depth == 1 {
                    self.top = Top::AfterItems;
                }
                if depth == 0 {
                    self.top = Top::Between;
                }
                None
            }
            b',' => {
                self.in_scalar = false;
                if depth == 1 {
                    self.expect_key = true;
                    self.after_colon = false;
                }
                None
            }
            b':' => {
                if depth == 1 {
                    self.expect_key = false;
                    self.after_colon = true;
                }
                None
            }
            c if c.is_ascii_whitespace() => {
                self.in_scalar = false;
                None
            }
            _ => {
                // A scalar: at element level it is not an event.
                let element_level = (self.top == Top::Items && depth == 2)
                    || (self.top == Top::Array && depth == 1);
                if element_level && !capturing && !self.in_scalar {
                    self.in_scalar = true;
                    self.capture_line = self.line + 1;
                    let item = self.item;
                    self.item += 1;
                    problems.record(self.location(Some(item)), "list element is not an object");
                }
                if depth == 0 && self.junk_line != self.line + 1 {
                    self.junk_line = self.line + 1;
                    self.capture_line = self.line + 1;
                    problems.record(self.location(None), "text outside any JSON value");
                }
                self.after_colon = false;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every record, with its line, read through a reader whose buffer is
    /// `capacity` bytes (so lines straddle and outgrow it).
    fn records(text: &str, capacity: usize) -> Vec<(u64, String)> {
        let reader = BufReader::with_capacity(capacity, io::Cursor::new(text.as_bytes().to_vec()));
        let mut source = RecordSource::new("t.log", Box::new(reader));
        let mut problems = Problems::default();
        let mut out = Vec::new();
        while source.advance(&mut problems) {
            let (location, bytes) = source.record();
            out.push((location.line, String::from_utf8_lossy(bytes).into_owned()));
        }
        assert_eq!(problems.count, 0, "{:?}", problems.kept);
        out
    }

    #[test]
    fn lines_read_in_place_or_copied_are_the_same_records() {
        let long = format!("{{\"a\":\"{}\"}}", "é".repeat(40));
        let text = format!("{{\"x\":1}}\n\n  {{\"é\":2}}\r\n{long}\n\t\n{{\"y\":3}}\n{{\"z\":4}}");
        let want = vec![
            (1, "{\"x\":1}".to_owned()),
            (3, "{\"é\":2}".to_owned()),
            (4, long.clone()),
            (6, "{\"y\":3}".to_owned()),
            (7, "{\"z\":4}".to_owned()),
        ];
        for capacity in [8, 9, 13, 64, 256 * 1024] {
            assert_eq!(records(&text, capacity), want, "buffer of {capacity} bytes");
        }
    }
}

//! Fuzz the fanotify side's parsers of kernel output: the event buffer a
//! `read(2)` of the group returns, and `/proc/<pid>/stat` (whose comm may
//! hold any bytes, spaces and parentheses). Neither may panic; decoded
//! events must lie inside the buffer.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tokenwatch_host::sensor::fanotify::{parse_events, parse_start_ticks, split_stat};

fuzz_target!(|data: &[u8]| {
    let (events, err) = parse_events(data);
    // Every event is at least the 24-byte metadata, so they fit the buffer.
    assert!(events.len() * 24 <= data.len());
    if err.is_none() {
        assert!(data.is_empty() || !events.is_empty());
    }
    let text = String::from_utf8_lossy(data);
    let _ = parse_start_ticks(&text);
    // The comm and the rest are pieces of the line, in order.
    if let Some((comm, rest)) = split_stat(&text) {
        assert!(comm.len() + rest.len() < text.len());
        assert!(text.ends_with(rest));
    }
});

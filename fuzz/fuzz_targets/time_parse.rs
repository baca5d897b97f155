//! Fuzzes `time::parse_nanos`, whose API-server form is read by hand: on
//! any text (lossy UTF-8, so multi-byte characters land at every position)
//! it gives what jiff alone gives (`parse_nanos_reference`), and never
//! panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokenwatch_core::time::{parse_nanos, parse_nanos_reference};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    assert_eq!(parse_nanos(&text), parse_nanos_reference(&text), "{text:?}");
});

//! Fuzz the sensor's parsers of outside input: BTF data, tracepoint
//! `format` files, path-suffix patterns, and raw kernel records. None may
//! panic; a pattern that compiles must match the way it says it does.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tokenwatch_host::sensor::{
    Clock, ProcessTable,
    btf::Btf,
    pattern::{compile, matches},
    tracefs::parse_format,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(btf) = Btf::parse(data) {
        let _ = btf.kernel_offsets();
        let _ = btf.syscall_abi();
    }
    let text = String::from_utf8_lossy(data);
    let _ = parse_format(&text);
    if let Some((pattern, path)) = text.split_once('\n')
        && let Ok(compiled) = compile(pattern)
    {
        // A compiled pattern's tail is always a suffix of anything it matches.
        if matches(path.as_bytes(), &compiled) {
            let tail = &compiled.tail[..compiled.tail_len as usize];
            assert!(path.as_bytes().ends_with(tail));
        }
    }
    if data.len() >= size_of::<monitor_common::Event>() {
        // SAFETY: `Event` is plain old data; any bytes are a valid value.
        let raw: monitor_common::Event = unsafe { std::ptr::read_unaligned(data.as_ptr().cast()) };
        let _ = ProcessTable::new(16).decode(&raw, &Clock::new());
    }
});

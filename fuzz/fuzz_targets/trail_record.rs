//! Fuzzes decoding a stored trail block (plain or LZ4): any bytes, taken as the value of a
//! block key, must decode into records or give an error naming a seq, never
//! panic; a line that decodes must re-hash without panicking, and its
//! entry's index keys (subject, pod, namespaces, JTI) must be readable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokenwatch_host::trail::record::{block_body, decode_block, decode_line, lines};

fuzz_target!(|data: &[u8]| {
    let first_seq = u64::from(data.first().copied().unwrap_or(0));
    match decode_block(first_seq, data) {
        Ok(records) => {
            for r in records {
                let _ = (r.entry.subject(), r.entry.pod_key(), r.entry.namespaces(), r.entry.jti());
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    if let Ok(body) = block_body(first_seq, data) {
        for (i, line) in lines(&body).enumerate() {
            if let Ok(d) = decode_line(first_seq.saturating_add(i as u64), line) {
                let _ = d.recompute_hash();
            }
        }
    }
});

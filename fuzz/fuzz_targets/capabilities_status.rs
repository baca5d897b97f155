//! Fuzz the agent's capability check: any `/proc/<pid>/status` text gives
//! an effective set or `None`, never a panic, and the missing list only
//! names capabilities the agent knows. Seeds: `fuzz/seeds/capabilities_status/`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tokenwatch_host::caps::{NEEDS, mask, missing, parse_cap_eff};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Some(set) = parse_cap_eff(&text) {
        let lacking = missing(set);
        assert!(lacking.iter().all(|n| NEEDS.contains(n)));
        assert!(mask(&lacking) < 1 << NEEDS.len());
    }
});

//! Fuzz the token input and JWT parser: any bytes, as stdin or a file
//! would give them, must parse or fail with an error, never panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tokenwatch_core::identity::{Identity, KeySet, Report, token_from_input};

fuzz_target!(|data: &[u8]| {
    let Ok(token) = token_from_input(data.to_vec()) else {
        return;
    };
    if let Ok(identity) = Identity::from_token(&token, &KeySet::new()) {
        let _ = Report::new(&identity, 1_800_000_000, &[])
            .to_table()
            .to_string();
    }
});

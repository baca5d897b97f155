//! Fuzzes the agent's trail socket: any bytes as a request line get an
//! answer (a status line first, always), never a panic; and any bytes as
//! an answer line are decoded by the client's JSON reader without panic.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tokenwatch_host::trail::{Trail, live};

/// One small trail for the whole run (sled opens a directory once per process).
fn trail() -> &'static Trail {
    static TRAIL: OnceLock<(tempfile::TempDir, Trail)> = OnceLock::new();
    &TRAIL
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("temp dir");
            let trail = Trail::open(dir.path()).expect("trail");
            trail.flush().expect("flush");
            (dir, trail)
        })
        .1
}

fuzz_target!(|data: &[u8]| {
    let mut out = Vec::new();
    live::answer(trail(), data, &mut out).expect("writing to a Vec");
    let status = out.split(|&b| b == b'\n').next().unwrap_or_default();
    let status: live::Status = serde_json::from_slice(status).expect("a status line first");
    if !status.ok {
        assert!(status.error.is_some());
    }
    let _ = serde_json::from_slice::<live::Status>(data);
    let _ = serde_json::from_slice::<live::Request>(data);
});

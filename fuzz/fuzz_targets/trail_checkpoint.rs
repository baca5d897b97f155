//! Fuzzes reading collected checkpoints (issue 17): any bytes, as a file of
//! collected sink output (JSON lines, wrapped JSON, signed notes in text),
//! must give checkpoints or named unreadable lines, never a panic; every
//! checkpoint read must be judged against a trail without panicking, and
//! the same bytes as one note must parse or give an error. Seeds (in
//! `fuzz/seeds/trail_checkpoint`; run with `cargo fuzz run trail_checkpoint fuzz/seeds/trail_checkpoint`) include non-ASCII key names and nodes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokenwatch_core::trail::checkpoint::{
    Checkpoint, CollectedSet, TrailFacts, VerifierKey, judge, needed_seqs, parse_note,
};

fuzz_target!(|data: &[u8]| {
    let mut set = CollectedSet::default();
    set.read("fuzz", data);
    for u in &set.unreadable {
        assert!(u.source.starts_with("fuzz:"));
    }
    let keys: Vec<VerifierKey> = Vec::new();
    let facts = TrailFacts {
        origin: set.checkpoints.first().map(|c| c.checkpoint.origin.clone()),
        last_seq: 10,
        anchor: Some((2, "00".repeat(32))),
        hashes: set
            .checkpoints
            .iter()
            .map(|c| (c.checkpoint.seq, c.checkpoint.hash.clone()))
            .collect(),
    };
    let _ = needed_seqs(&set, &keys, facts.origin.as_deref());
    let report = judge(&set, &keys, &facts);
    let _ = serde_json::to_string(&report);
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(note) = parse_note(text) {
            let _ = Checkpoint::parse_body(&note.text);
        }
        let _ = VerifierKey::parse(text);
        let _ = Checkpoint::parse_body(text);
    }
});

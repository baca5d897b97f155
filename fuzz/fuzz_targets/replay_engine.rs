//! Fuzzes the whole audit-log replay: the bytes are written to a file and
//! replayed as an audit log (records, events, attributes, decisions,
//! token timelines, stolen-token signals, minting, default detections,
//! subject summaries, role suggestions and all three renderings). Any input
//! must give a report (bad records located), never a panic; every listed
//! event's hand-written JSON line is the one serde writes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokenwatch_core::rbac::{RbacObjects, Snapshot};
use tokenwatch_core::replay::decide::Policy;
use tokenwatch_core::replay::report::{self, EventList};
use tokenwatch_core::replay::{Options, html, replay, roles};

fuzz_target!(|data: &[u8]| {
    let Ok(mut file) = tempfile::NamedTempFile::new() else {
        return;
    };
    if std::io::Write::write_all(&mut file, data).is_err() {
        return;
    }
    let mut policy = Policy::fixed(Snapshot::build(RbacObjects::default()), "empty".into());
    let options = Options {
        audits: vec![file.path().to_path_buf()],
        collect_calls: true,
        ..Options::default()
    };
    let mut events = EventList::new(50);
    let (mut by_hand, mut by_serde) = (Vec::new(), Vec::new());
    let Ok(report) = replay(&options, &mut policy, &mut |e| {
        by_hand.clear();
        by_serde.clear();
        report::write_event_line(&mut by_hand, e).expect("a Vec takes every write");
        report::write_json_line(&mut by_serde, "event", &e.to_record()).expect("a Vec takes every write");
        assert_eq!(by_hand, by_serde);
        events.push(e);
    }) else {
        return;
    };
    let mut sink = Vec::new();
    let _ = report::write_json_tail(&mut sink, &report);
    let _ = report::write_table(&mut sink, &report, &events);
    let _ = html::render(&report, &events, "fuzz");
    let suggestions = roles::suggest_roles(&report, &policy);
    for s in &suggestions {
        // Suggestions made from the observed calls always pass their check.
        assert_eq!(s.check, "ok", "{s:?}");
    }
    let _ = roles::to_yaml(&suggestions);
});

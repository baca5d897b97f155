//! Fuzzes the audit-event parser and the record splitter: any bytes, read
//! as an audit log (JSON lines, EventList, array; the splitter and the
//! one-line EventList expansion included), must give events or located
//! problems, never a panic; every event that parses must yield attributes
//! (or a reason why not), a recorded decision and a time without panicking,
//! and be decided against a snapshot. The hand-written event reader must
//! agree with the serde derive it replaced (`AuditEvent::parse_reference`):
//! the same event, or an error from both; the one accepted difference is a
//! struct written as a JSON array, which only the derive reads.
#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;
use tokenwatch_core::rbac::authorizer::decide;
use tokenwatch_core::rbac::{RbacObjects, Snapshot, UserInfo};
use tokenwatch_core::replay::attributes::attributes;
use tokenwatch_core::replay::event::{AuditEvent, EventTimes};
use tokenwatch_core::replay::input::{Problems, RecordSource};

fuzz_target!(|data: &[u8]| {
    let snapshot = Snapshot::build(RbacObjects::default());
    let mut problems = Problems::default();
    let mut source = RecordSource::new("fuzz.log", Box::new(Cursor::new(data.to_vec())));
    let mut records = 0;
    while source.advance(&mut problems) && records < 10_000 {
        records += 1;
        let (_, bytes) = source.record();
        let parsed = AuditEvent::parse(bytes);
        match (&parsed, AuditEvent::parse_reference(bytes)) {
            (Ok(ours), Ok(theirs)) => assert_eq!(ours, &theirs),
            (Err(_), Err(_)) => {}
            (Ok(ours), Err(e)) => panic!("reader accepted what serde refused ({e}): {ours:?}"),
            (Err(e), Ok(_)) => assert!(
                e.what().starts_with("expected an object"),
                "reader refused what serde accepted: {e}"
            ),
        }
        let times = EventTimes::parse(bytes).ok();
        if parsed.is_ok() {
            assert_eq!(times, serde_json::from_slice::<EventTimes<'_>>(bytes).ok());
        }
        let Ok(event) = parsed else {
            continue;
        };
        if event.kind() == "EventList" {
            source.expand_list(&mut problems);
            continue;
        }
        let _ = event.recorded();
        let _ = event.time_nanos();
        let _ = event.stage().decides();
        if let Some(user) = event.effective_user() {
            let _ = (user.jti(), user.pod_uid(), user.pod_name());
            if let Ok(a) = attributes(&event) {
                let info = UserInfo::new(user.name(), user.group_names().map(str::to_owned).collect());
                let d = decide(&snapshot, &a.as_attributes(), &info);
                let _ = d.reason().to_string();
            }
        }
    }
});

//! Fuzz the cgroup path parser: any path must give an attribution, never
//! panic, and a pod attribution must carry a well-formed pod UID.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tokenwatch_host::node::{Attribution, parse_cgroup_path, parse_mountinfo_cgroup2};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Attribution::Pod { pod_uid, .. } = parse_cgroup_path(&text) {
        assert!(pod_uid.len() == 36 || pod_uid.len() == 32, "{pod_uid}");
        assert!(pod_uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'));
    }
    let _ = parse_mountinfo_cgroup2(&text);
});

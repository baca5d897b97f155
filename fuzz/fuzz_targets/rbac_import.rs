//! Fuzzes the RBAC importer: any bytes, read as YAML or JSON, must give an
//! import report or an error, never a panic; whatever imports must build
//! into a snapshot that answers a request and lists risk.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokenwatch_core::rbac::authorizer::decide;
use tokenwatch_core::rbac::import::import_str;
use tokenwatch_core::rbac::{Attributes, Snapshot, UserInfo, risk};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(report) = import_str("fuzz.yaml", text) else {
        return;
    };
    let snapshot = Snapshot::build(report.objects);
    let user = UserInfo::service_account("default", "fuzz");
    let attrs = Attributes::resource("get", "", "pods", "default", "x");
    let decision = decide(&snapshot, &attrs, &user);
    let _ = decision.reason().to_string();
    let _ = risk::rank(&snapshot);
});

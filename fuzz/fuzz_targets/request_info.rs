//! Fuzzes `request_info::parse` (the API server's RequestInfo): any method
//! and URL, read from the bytes as `METHOD\nURL` (lossy UTF-8, so multi-byte
//! characters land at every position), must give attributes or a parse
//! error, never a panic; a resource request always has a version and a
//! prefix, and the apiPrefix is only ever `api` or `apis`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokenwatch_core::rbac::request_info::parse;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (method, url) = text.split_once('\n').unwrap_or(("GET", &text));
    if let Ok(info) = parse(method, url) {
        assert!(matches!(info.api_prefix.as_str(), "" | "api" | "apis"));
        if info.is_resource_request {
            assert!(!info.api_version.is_empty() || url.contains("//"));
            assert!(!info.api_prefix.is_empty());
        }
    }
});

//! `tokenwatch watch` refuses bad configurations with one clear line and
//! exit code 2, before touching the kernel where it can. (Its events are
//! tested on the real kernel in `tests/`.)

use std::process::Command;

fn watch(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tokenwatch"))
        .arg("watch")
        .args(args)
        .output()
        .expect("run tokenwatch");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_one_line_error(stderr: &str, needle: &str) {
    let lines: Vec<_> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {stderr}");
    assert!(lines[0].starts_with("tokenwatch: "), "{stderr}");
    assert!(lines[0].contains(needle), "{stderr} lacks {needle}");
}

#[test]
fn a_bad_suffix_pattern_is_named() {
    let (code, stderr) = watch(&["--token-path-suffix", "a/x*/token", "--duration", "1s"]);
    assert_eq!(code, 2);
    assert_one_line_error(&stderr, "`*` must be a whole path component");
}

#[test]
fn a_missing_watch_file_is_named() {
    let (code, stderr) = watch(&["--watch-file", "/nonexistent/token", "--duration", "1s"]);
    assert_eq!(code, 2);
    // Without root the privilege check comes first; either way one clear line.
    assert!(
        stderr.contains("/nonexistent/token") || stderr.contains("needs root"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn missing_btf_or_privileges_are_one_line() {
    let (code, stderr) = watch(&["--btf", "/nonexistent/vmlinux", "--duration", "1s"]);
    assert_eq!(code, 2);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        assert_one_line_error(&stderr, "cannot read kernel BTF at /nonexistent/vmlinux");
    } else {
        assert_one_line_error(&stderr, "the sensor needs root");
    }
}

#[test]
fn an_unresolvable_endpoint_is_named() {
    let (code, stderr) = watch(&[
        "--apiserver",
        "no-such-host.invalid:6443",
        "--duration",
        "1s",
    ]);
    assert_eq!(code, 2);
    assert_one_line_error(
        &stderr,
        "cannot resolve API-server endpoint no-such-host.invalid:6443",
    );
}

//! `tokenwatch agent` refuses a bad configuration with one clear line and
//! exit code 2. (The running agent is tested on a simulated node in `tests/`.)

use std::process::Command;

fn agent(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tokenwatch"))
        .arg("agent")
        .args(args)
        .output()
        .expect("run tokenwatch");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn an_unknown_config_key_is_named_with_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, "listen = \"127.0.0.1:0\"\n[sinks]\nstdot = true\n").unwrap();
    let (code, stderr) = agent(&["--config", path.to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.starts_with("tokenwatch: invalid config file"),
        "{stderr}"
    );
    assert!(stderr.contains("stdot"), "{stderr}");
}

#[test]
fn a_missing_config_file_is_named() {
    let (code, stderr) = agent(&["--config", "/nonexistent/agent.toml"]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("cannot read the config file /nonexistent/agent.toml"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn unreadable_rbac_files_stop_the_start_with_their_name() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stderr) = agent(&[
        "--data-dir",
        dir.path().join("data").to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--rbac",
        "/nonexistent/policy.yaml",
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("loading the RBAC snapshot") && stderr.contains("/nonexistent/policy.yaml"),
        "{stderr}"
    );
}

//! `replay -o html` in headless Chromium: the page renders (its script
//! runs and counts the rows) and shows the expected timeline rows, flags,
//! events and subjects. Without `/usr/bin/chromium` the test is skipped,
//! unless `TOKENWATCH_REQUIRE_EBPF=1` (CI's strict mode) makes that a failure.

use tokenwatch_test_support::incident as replay_common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use replay_common::*;

const CHROMIUM: &str = "/usr/bin/chromium";

fn chromium_available() -> bool {
    if Path::new(CHROMIUM).exists() {
        return true;
    }
    assert!(
        std::env::var("TOKENWATCH_REQUIRE_EBPF").as_deref() != Ok("1"),
        "{CHROMIUM} is missing and TOKENWATCH_REQUIRE_EBPF=1 forbids skipping the HTML test \
         (apt-get install -y chromium)"
    );
    eprintln!("SKIPPING replay_html: {CHROMIUM} is missing (apt-get install -y chromium)");
    false
}

/// Runs Chromium headless with `args` on `url`, with a timeout; returns stdout.
fn chromium(profile: &Path, args: &[&str], url: &str) -> String {
    let mut child = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start chromium");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium did not finish within 90 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().expect("output");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn html_report_renders_in_chromium_with_the_expected_rows() {
    if !chromium_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let inc = write_incident(dir.path());
    let out = Command::new(env!("CARGO_BIN_EXE_tokenwatch"))
        .arg("replay")
        .arg("--trail")
        .arg(dir.path().join("trail.jsonl"))
        .arg("--audit")
        .arg(dir.path().join("audit.log"))
        .arg("--rbac")
        .arg(dir.path().join("rbac.yaml"))
        .args(["-o", "html"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let html = String::from_utf8(out.stdout).unwrap();
    // Self-contained: nothing fetched from elsewhere.
    assert!(!html.contains("src=\"http") && !html.contains("href=\"http"));
    for raw in &inc.raw_tokens {
        assert!(!html.contains(raw.as_str()));
    }
    let page = dir.path().join("incident.html");
    std::fs::write(&page, &html).unwrap();
    let url = format!("file://{}", page.display());

    let dom = chromium(&dir.path().join("profile"), &["--dump-dom"], &url);
    // The script ran: it counted the rows (8 web calls + 3 web reads/uses +
    // 1 worker call + 2 worker reads/uses; 6 events; 2 subjects).
    assert!(
        dom.contains("data-rows=\"22\""),
        "script did not run or rows differ:\n{dom}"
    );
    let timeline_rows = dom.matches("class=\"timeline-row").count();
    assert_eq!(timeline_rows, 14, "{dom}");
    let foreign = dom.matches("flag-foreign-ip").count();
    assert_eq!(foreign, 5);
    for want in [
        "python3 (pid 4242, uid 1000) in pod shop/web-0 on node-a",
        "cat (pid 6666, uid 1000) in pod shop/debug-7 on node-a",
        "data-kind=\"foreign-source-ip\"",
        "data-kind=\"use-after-flagged-read\"",
        "data-kind=\"permission-probing\"",
        THIEF_IP,
        "list secrets -&gt; 200",
        "pods/exec shop/web-0",
        "data-outcome=\"drift\"",
        "data-subject=\"system:serviceaccount:shop:worker\"",
        "holds read-secrets cluster-wide",
    ] {
        assert!(
            dom.contains(want),
            "missing {want:?} in the rendered page:\n{dom}"
        );
    }
    assert_eq!(dom.matches("class=\"event-row").count(), 6);

    // And it paints: a screenshot is a real, non-trivial PNG.
    let shot = dir.path().join("shot.png");
    chromium(
        &dir.path().join("profile2"),
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1400,2000",
        ],
        &url,
    );
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
    assert!(png.len() > 20_000, "screenshot is {} bytes", png.len());
}

/// Minting, the stolen-token signals and a default detection, in the page.
#[test]
fn html_report_shows_detections_and_minting_in_chromium() {
    if !chromium_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let t = |s: u32| format!("2025-06-01T10:00:{s:02}.000000Z");
    let sa = |jti: &str| {
        serde_json::json!({"username": "system:serviceaccount:shop:web", "groups": ["system:serviceaccounts", "system:authenticated"],
            "extra": {"authentication.kubernetes.io/credential-id": [format!("JTI={jti}")], "authentication.kubernetes.io/pod-name": ["web-0"], "authentication.kubernetes.io/pod-uid": ["uid-web-0"]}})
    };
    let ev = |s: u32,
              user: serde_json::Value,
              verb: &str,
              uri: &str,
              obj: serde_json::Value,
              ips: &[&str],
              ann: serde_json::Value| {
        serde_json::json!({"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Request", "auditID": format!("h-{s}"),
            "stage": "ResponseComplete", "requestURI": uri, "verb": verb, "user": user, "sourceIPs": ips, "objectRef": obj,
            "responseStatus": {"code": 200}, "requestReceivedTimestamp": t(s), "stageTimestamp": t(s), "annotations": ann})
    };
    let mut mint = ev(
        1,
        serde_json::json!({"username": "mallory@example.com", "groups": ["system:authenticated"]}),
        "create",
        "/api/v1/namespaces/shop/serviceaccounts/web/token",
        serde_json::json!({"resource": "serviceaccounts", "subresource": "token", "namespace": "shop", "name": "web"}),
        &["192.0.2.10"],
        serde_json::json!({"authorization.k8s.io/decision": "allow", "authentication.kubernetes.io/issued-credential-id": "JTI=minted-1"}),
    );
    mint["requestObject"] = serde_json::json!({"spec": {"audiences": ["https://kubernetes.default.svc"], "expirationSeconds": 86400}});
    let pods = serde_json::json!({"resource": "pods", "namespace": "shop"});
    let allow = serde_json::json!({"authorization.k8s.io/decision": "allow"});
    let lines = [
        mint,
        ev(
            2,
            sa("minted-1"),
            "list",
            "/api/v1/namespaces/shop/pods",
            pods.clone(),
            &["10.244.1.5"],
            allow.clone(),
        ),
        ev(
            3,
            sa("minted-1"),
            "list",
            "/api/v1/namespaces/shop/pods",
            pods.clone(),
            &["203.0.113.50", "10.0.0.99"],
            allow.clone(),
        ),
        ev(
            4,
            sa("minted-1"),
            "get",
            "/api/v1/namespaces/shop/pods/db-0/exec?command=sh",
            serde_json::json!({"resource": "pods", "subresource": "exec", "namespace": "shop", "name": "db-0"}),
            &["10.0.0.99"],
            allow,
        ),
    ];
    let audit = dir.path().join("audit.log");
    std::fs::write(
        &audit,
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tokenwatch"))
        .args(["replay", "--no-progress", "-o", "html", "--audit"])
        .arg(&audit)
        .output()
        .unwrap();
    assert!(out.status.success());
    let page = dir.path().join("detections.html");
    std::fs::write(&page, &out.stdout).unwrap();
    let dom = chromium(
        &dir.path().join("profile"),
        &["--dump-dom"],
        &format!("file://{}", page.display()),
    );
    assert!(dom.contains("data-rows=\""), "script did not run:\n{dom}");
    for want in [
        "class=\"minted\" data-expected=\"false\"",
        "by <b>mallory@example.com</b> for shop/web",
        "audiences https://kubernetes.default.svc, lifetime 86400 s",
        "data-kind=\"minted-outside-kubelet\"",
        "data-kind=\"multiple-source-addresses\"",
        "data-kind=\"claimed-source-address\"",
        "class=\"detection-row sev-high\" data-kind=\"exec-by-service-account\"",
        "data-what=\"mint\"",
        "flag-claimed-address",
        "203.0.113.50",
    ] {
        assert!(
            dom.contains(want),
            "missing {want:?} in the rendered page:\n{dom}"
        );
    }
}

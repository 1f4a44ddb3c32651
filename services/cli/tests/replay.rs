//! `payoff replay` end to end: real files in canonical proto3 JSON, the real binary.

use assert_cmd::Command;
use serde_json::Value;

const EXAMPLE_PROGRAM: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../deploy/examples/program.json"
);
const WHATIF_PROGRAM: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../deploy/examples/program-whatif.json"
);
const EXAMPLE_EVENTS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../deploy/examples/events.jsonl"
);

fn payoff() -> Command {
    Command::cargo_bin("payoff").expect("payoff binary")
}

fn replay(args: &[&str]) -> Value {
    let out = payoff()
        .arg("replay")
        .arg("--quiet")
        .args(args)
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "replay failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

/// Runs a replay that must fail, and returns what it printed on standard error.
fn replay_error(program: &str, events: &str) -> String {
    let out = payoff()
        .args([
            "replay",
            "--quiet",
            "--program",
            program,
            "--events",
            events,
        ])
        .output()
        .expect("runs");
    assert!(!out.status.success(), "replay should have failed");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const PROGRAM: &str = r#"{
  "version": "1",
  "effectiveFrom": "2026-01-01T00:00:00Z",
  "campaigns": [{
    "id": "spring", "currency": "USD",
    "plans": [{ "id": "rev", "cpsPercent": { "rate": "0.10" }, "hold": "86400s" }]
  }],
  "creators": [{ "id": "anna" }],
  "links": [{ "code": "anna-1", "creatorId": "anna", "campaignId": "spring" }],
  "promoCodes": [{ "code": "ANNA10", "creatorId": "anna", "campaignId": "spring" }]
}"#;

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("write");
    path.to_string_lossy().into_owned()
}

#[test]
fn ten_percent_of_an_eighty_dollar_order_is_eight_dollars() {
    let dir = tempfile::tempdir().unwrap();
    let program = write(&dir, "p.json", PROGRAM);
    let events = write(
        &dir,
        "e.jsonl",
        concat!(
            r#"{"eventId":"c1","occurredAt":"2026-11-02T10:00:00Z","click":{"visitorId":"v1","linkCode":"anna-1"}}"#,
            "\n\n",
            r#"{"eventId":"o1","occurredAt":"2026-11-02T10:05:00Z","order":{"visitorId":"v1","orderId":"A-1","amount":{"amount":"80.00","currency":"USD"}}}"#,
            "\n"
        ),
    );
    let report = replay(&["--program", &program, "--events", &events]);
    let entries = report["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["kind"], "accrual");
    assert_eq!(entries[0]["amount"]["amount"], "8.00");
    assert_eq!(entries[0]["status"], "pending");
    assert_eq!(report["balances"][0]["pending"]["amount"], "8.00");

    // A day later the hold has ended: approved.
    let later = replay(&[
        "--program",
        &program,
        "--events",
        &events,
        "--as-of",
        "2026-11-03T10:05:00Z",
    ]);
    assert_eq!(later["entries"][0]["status"], "approved");
    assert_eq!(later["balances"][0]["approved"]["amount"], "8.00");
    assert_eq!(later["balances"][0]["available"]["amount"], "8.00");

    // As of before the order, nothing.
    let before = replay(&[
        "--program",
        &program,
        "--events",
        &events,
        "--as-of",
        "2026-11-02T10:04:59Z",
    ]);
    assert_eq!(before["entries"].as_array().unwrap().len(), 0);
}

#[test]
fn a_bad_line_stops_with_its_number_field_and_rule() {
    let dir = tempfile::tempdir().unwrap();
    let program = write(&dir, "p.json", PROGRAM);
    let events = write(
        &dir,
        "e.jsonl",
        concat!(
            r#"{"eventId":"c1","occurredAt":"2026-11-02T10:00:00Z","click":{"visitorId":"v1","linkCode":"anna-1"}}"#,
            "\n",
            r#"{"eventId":"o1","occurredAt":"2026-11-02T10:05:00Z","order":{"visitorId":"v1","orderId":"A-1","amount":{"amount":"80.001","currency":"USD"}}}"#,
            "\n"
        ),
    );
    let stderr = replay_error(&program, &events);
    assert!(stderr.contains("line 2"), "{stderr}");
    assert!(
        stderr.contains("order.amount.amount: precision"),
        "{stderr}"
    );
}

#[test]
fn a_bad_program_names_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let program = write(
        &dir,
        "p.json",
        &PROGRAM.replace(r#""rate": "0.10""#, r#""rate": "ten""#),
    );
    let events = write(&dir, "e.jsonl", "");
    let stderr = replay_error(&program, &events);
    assert!(
        stderr.contains("campaigns[0].plans[0].cps_percent.rate: malformed_decimal"),
        "{stderr}"
    );
}

#[test]
fn the_example_replays_identically_twice() {
    let first = payoff()
        .args([
            "replay",
            "--quiet",
            "--program",
            EXAMPLE_PROGRAM,
            "--events",
            EXAMPLE_EVENTS,
        ])
        .output()
        .unwrap();
    let second = payoff()
        .args([
            "replay",
            "--quiet",
            "--program",
            EXAMPLE_PROGRAM,
            "--events",
            EXAMPLE_EVENTS,
        ])
        .output()
        .unwrap();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert_eq!(first.stdout, second.stdout);
    let report: Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(report["counts"]["duplicates"], 1);
    assert_eq!(report["counts"]["flagged"]["self_referral"], 1);
    assert!(
        report["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "reversal")
    );
    assert!(
        report["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "base_fee")
    );
    assert!(
        report["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "bonus")
    );
}

#[test]
fn what_if_diff_is_what_if_minus_base() {
    let rows = replay(&[
        "--program",
        EXAMPLE_PROGRAM,
        "--events",
        EXAMPLE_EVENTS,
        "--diff",
        WHATIF_PROGRAM,
    ]);
    let rows = rows.as_array().unwrap();
    assert!(!rows.is_empty());
    let dec = |v: &Value| {
        v.as_str()
            .unwrap()
            .parse::<rust_decimal::Decimal>()
            .unwrap()
    };
    for row in rows {
        assert_eq!(
            dec(&row["difference"]),
            dec(&row["what_if"]) - dec(&row["base"])
        );
    }
    // The what-if raises spring-glow's revenue share from 10% to 12%: someone earns more.
    assert!(
        rows.iter()
            .any(|r| dec(&r["difference"]) > rust_decimal::Decimal::ZERO)
    );
}

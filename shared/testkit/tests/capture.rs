//! The capture and the scanner end to end, in a directory of their own so
//! the planted lines never reach the suite's logs: lines logged through the
//! capture (event and span fields) land in this process's file; the
//! `scan-test-logs` binary reports a planted ID number, legacy ID number,
//! mobile number, configured secret and bearer token by file:line and rule,
//! masked, and fails; masked forms pass; an empty directory fails too.

#![expect(clippy::unwrap_used, reason = "test helper: a failure is a failed test")]

use std::path::{Path, PathBuf};
use std::process::Command;

use jyt_testkit::logscan::{self, Rule};

fn scanner(dir: &Path, min_lines: &str) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_scan-test-logs"))
        .arg("--dir")
        .arg(dir)
        .args(["--min-lines", min_lines])
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn planted_personal_data_and_secrets_are_reported_and_masked_forms_pass() {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let dir = tmp.join(format!("scan-proof-{}", uuid::Uuid::new_v4().simple()));
    let file = jyt_testkit::logs::capture_into(&dir).expect("this process is captured");

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let secrets = logscan::collect_secrets(&root);
    // The channel apps' secret the system tests configure, read from
    // tests/support, not copied here.
    let app_secret = secrets
        .iter()
        .find(|s| s.source.starts_with("tests/support/city.rs"))
        .expect("tests/support's channel app secret is collected")
        .value
        .clone();

    let id_number = "11010519491231002X";
    let legacy = "110105491231002";
    let phone = "13012348255";
    tracing::info!(id_number, "registered");
    tracing::warn!("notification to {phone} failed");
    tracing::info!(old_card = legacy, "legacy number converted");
    let span = tracing::info_span!("request", app_secret = %app_secret);
    span.in_scope(|| tracing::info!("inside a span with a secret field"));
    tracing::error!(header = "Bearer 0123456789abcdef0123", "rejected");
    tracing::info!(
        phone = "130****8255",
        id_number = "1101**********1234",
        "masked forms"
    );
    let logs = jyt_testkit::logs::read_own();
    assert!(logs.lines().all(|l| l.starts_with('{')), "JSON lines: {logs}");
    let line_of = |message: &str| {
        1 + logs
            .lines()
            .position(|l| l.contains(message))
            .unwrap_or_else(|| panic!("{message:?} not captured:\n{logs}"))
    };
    let masked_line = logs.lines().nth(line_of("masked forms") - 1).unwrap();
    assert!(
        logscan::scan_line(masked_line, &secrets).is_empty(),
        "{masked_line}"
    );

    let scan = logscan::scan_dir(&dir, &secrets).unwrap();
    assert_eq!(scan.files, [(file.to_path_buf(), logs.lines().count())]);
    let found: Vec<(usize, Rule)> = scan.findings.iter().map(|f| (f.line, f.hit.rule)).collect();
    assert_eq!(
        found,
        [
            (line_of("registered"), Rule::IdNumber),
            (line_of("notification to"), Rule::Mobile),
            (line_of("legacy number converted"), Rule::LegacyIdNumber),
            (line_of("inside a span"), Rule::ConfiguredSecret),
            (line_of("rejected"), Rule::BearerToken),
        ]
    );

    let (code, report) = scanner(&dir, "1");
    assert_eq!(code, Some(1), "{report}");
    let at = |message: &str| format!("{}:{}: ", file.display(), line_of(message));
    for expected in [
        format!("{}resident-id-number 1101**********002X", at("registered")),
        format!("{}mobile-number 130****8255", at("notification to")),
        format!(
            "{}legacy-15-digit-id-number 1101*******1002",
            at("legacy number converted")
        ),
        format!(
            "{}configured-secret {}",
            at("inside a span"),
            logscan::mask(&app_secret)
        ),
        format!("{}bearer-token 01********(20 chars)", at("rejected")),
    ] {
        assert!(report.contains(&expected), "{expected} not in:\n{report}");
    }
    assert!(
        !report.contains(&at("masked forms")),
        "masked forms reported:\n{report}"
    );
    for raw in [id_number, legacy, phone, &app_secret, "0123456789abcdef0123"] {
        assert!(!report.contains(raw), "{raw} printed unmasked:\n{report}");
    }

    // A capture that wrote nothing, or too little, fails.
    let empty = tmp.join(format!("scan-empty-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&empty).unwrap();
    let (code, report) = scanner(&empty, "1");
    assert_eq!(code, Some(2), "{report}");
    assert!(report.contains("no log file"), "{report}");
    std::fs::write(empty.join("quiet-1.jsonl"), "{\"fields\":{\"message\":\"ok\"}}\n").unwrap();
    let (code, report) = scanner(&empty, "1000");
    assert_eq!(code, Some(2), "{report}");
    assert!(report.contains("fewer than 1000"), "{report}");
    let (code, report) = scanner(&empty, "1");
    assert_eq!(code, Some(0), "{report}");
}

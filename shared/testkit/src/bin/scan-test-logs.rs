//! Scan every log file the test suite captured (see `jyt_testkit::logs`)
//! for personal data and secrets (`jyt_testkit::logscan`), after
//! `cargo test --workspace`; `scripts/scan-test-logs.sh` runs it.
//!
//! ```text
//! scan-test-logs [--dir DIR] [--root WORKSPACE] [--min-lines N] [--expect BINARY]...
//!                [--show N] [--list-secrets]
//! ```
//!
//! `--dir` defaults to the captures' own default (`JYT_TEST_LOG_DIR`, else
//! `test-logs` in the target directory); `--root` (where the secrets are
//! read from) to this workspace. It fails (exit 1) on any finding, printing
//! file:line, the rule and the masked value, and (exit 2) when the capture
//! looks broken: no log file, fewer than `--min-lines` lines in all, or no
//! file from a test binary named with `--expect` (e.g. `system`), so a
//! capture that stopped working cannot pass silently.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use jyt_testkit::logscan::{self, Rule};

struct Args {
    dir: PathBuf,
    root: PathBuf,
    min_lines: usize,
    expect: Vec<String>,
    /// How many findings to print in full; the rest are counted.
    shown: usize,
    /// Print each configured secret (masked) and where it was read.
    list_secrets: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        dir: jyt_testkit::logs::log_dir(),
        root: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
            .canonicalize()
            .unwrap_or_else(|_| PathBuf::from(".")),
        min_lines: 1000,
        expect: Vec::new(),
        shown: 200,
        list_secrets: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--dir" => args.dir = PathBuf::from(value()?),
            "--root" => args.root = PathBuf::from(value()?),
            "--min-lines" => args.min_lines = value()?.parse().map_err(|e| format!("--min-lines: {e}"))?,
            "--expect" => args.expect.push(value()?),
            "--show" => args.shown = value()?.parse().map_err(|e| format!("--show: {e}"))?,
            "--list-secrets" => args.list_secrets = true,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("scan-test-logs: {e}");
            ExitCode::from(3)
        }
    }
}

fn run() -> Result<ExitCode, String> {
    let args = parse_args()?;
    let secrets = logscan::collect_secrets(&args.root);
    if secrets.is_empty() {
        return Err(format!(
            "no configured secret found under {}",
            args.root.display()
        ));
    }
    let scan = logscan::scan_dir(&args.dir, &secrets).map_err(|e| format!("{}: {e}", args.dir.display()))?;
    let mut out = std::io::stdout().lock();
    let mut say = |line: String| writeln!(out, "{line}").map_err(|e| e.to_string());

    say(format!(
        "scan-test-logs: {} log files, {} lines in {}; {} configured secrets from {}",
        scan.files.len(),
        scan.lines,
        args.dir.display(),
        secrets.len(),
        args.root.display()
    ))?;
    if args.list_secrets {
        for secret in &secrets {
            say(format!(
                "  secret {}  from {}",
                logscan::mask(&secret.value),
                secret.source
            ))?;
        }
    }
    for (file, lines) in &scan.files {
        say(format!("  {lines:>9} lines  {}", file.display()))?;
    }

    let mut broken = Vec::new();
    if scan.files.is_empty() {
        broken.push("no log file: the capture is not running (jyt_testkit::logs)".to_owned());
    }
    if scan.lines < args.min_lines {
        broken.push(format!(
            "only {} log lines in all, fewer than {}: the capture looks broken",
            scan.lines, args.min_lines
        ));
    }
    for name in &args.expect {
        let prefix = format!("{name}-");
        let found = scan.files.iter().any(|(f, lines)| {
            *lines > 0
                && f.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
        });
        if !found {
            broken.push(format!("no log lines from the `{name}` test binary"));
        }
    }

    for finding in scan.findings.iter().take(args.shown) {
        say(format!("{finding}"))?;
    }
    if scan.findings.len() > args.shown {
        say(format!("... and {} more", scan.findings.len() - args.shown))?;
    }
    for problem in &broken {
        say(format!("scan-test-logs: FAIL: {problem}"))?;
    }
    if !scan.findings.is_empty() {
        let counts: Vec<String> = scan
            .by_rule()
            .iter()
            .map(|(rule, n): (&Rule, &usize)| format!("{rule}: {n}"))
            .collect();
        say(format!(
            "scan-test-logs: FAIL: {} findings in {} lines ({})",
            scan.findings.len(),
            scan.lines,
            counts.join(", ")
        ))?;
        return Ok(ExitCode::from(1));
    }
    if !broken.is_empty() {
        return Ok(ExitCode::from(2));
    }
    say(format!(
        "scan-test-logs: no ID number, phone number or secret in {} lines",
        scan.lines
    ))?;
    Ok(ExitCode::SUCCESS)
}

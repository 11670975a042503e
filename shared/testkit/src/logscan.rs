//! Scanning captured log lines for personal data and secrets: what
//! `scripts/scan-test-logs.sh` runs over the whole suite's logs, and what
//! `tests/logs` runs over its own.
//!
//! The rules ([`Rule`]): resident ID numbers (18 characters with a valid
//! ISO 7064 MOD 11-2 check digit and a plausible birth date, and legacy
//! 15-digit ones with a plausible date), mainland mobile numbers
//! (`1[3-9]` and nine digits, also after `86`), each not part of a longer
//! run of digits nor of a long hex identifier (trace ids, UUIDs); every
//! secret the tests and the settings files configure ([`collect_secrets`]);
//! and the shapes of secrets minted while the tests run: bearer tokens,
//! `Authorization`/`X-Signature`/password/secret values, e-card tokens,
//! argon2 hashes, database URLs with a password. Masked forms
//! (`138****5678`, `110105********0021`) never match. Platform card numbers
//! are not personal data here (they are printed on the card and shown in
//! the README's examples), so no rule looks for them.
//!
//! A finding never carries the value itself, only its masked form.

use std::collections::BTreeMap;
use std::fmt;
use std::io::BufRead;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// What a finding matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rule {
    /// 18-character resident ID number with a valid check digit.
    IdNumber,
    /// Legacy 15-digit resident ID number.
    LegacyIdNumber,
    /// Mainland mobile number.
    Mobile,
    /// A secret the tests or the settings configure, by value.
    ConfiguredSecret,
    /// `Bearer <token>`.
    BearerToken,
    /// A value under a key that holds a credential (`authorization`,
    /// `x-signature`, `password`, `secret`, ...).
    CredentialField,
    /// An e-card token (base64url, version 1, 98 characters).
    EcardToken,
    /// An argon2 password hash.
    PasswordHash,
    /// A database or Redis URL with a password in it.
    UrlPassword,
}

impl Rule {
    pub fn name(self) -> &'static str {
        match self {
            Rule::IdNumber => "resident-id-number",
            Rule::LegacyIdNumber => "legacy-15-digit-id-number",
            Rule::Mobile => "mobile-number",
            Rule::ConfiguredSecret => "configured-secret",
            Rule::BearerToken => "bearer-token",
            Rule::CredentialField => "credential-field",
            Rule::EcardToken => "ecard-token",
            Rule::PasswordHash => "password-hash",
            Rule::UrlPassword => "url-password",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A secret to look for, and where it was found (for the report).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secret {
    pub value: String,
    pub source: String,
}

/// One rule matching in one line: the rule, the value's masked form, and
/// for a configured secret where that secret came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub rule: Rule,
    pub masked: String,
    pub source: Option<String>,
}

/// A hit, located.
#[derive(Debug, Clone)]
pub struct Finding {
    pub file: PathBuf,
    pub line: usize,
    pub hit: Hit,
    /// The line with every matched value masked, cut to a readable length.
    pub context: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {} {}",
            self.file.display(),
            self.line,
            self.hit.rule,
            self.hit.masked
        )?;
        if let Some(source) = &self.hit.source {
            write!(f, " (from {source})")?;
        }
        write!(f, "\n    {}", self.context)
    }
}

pub use jyt_domain::id_number::id_check_char;

fn two_digits(b: &[u8]) -> u32 {
    u32::from(b[0] - b'0') * 10 + u32::from(b[1] - b'0')
}

/// A division code (first digit 1 to 8) and a month and day that exist.
fn plausible_id(area_and_date: &[u8], month_day: &[u8]) -> bool {
    matches!(area_and_date[0], b'1'..=b'8')
        && (1..=12).contains(&two_digits(&month_day[..2]))
        && (1..=31).contains(&two_digits(&month_day[2..4]))
}

fn is_id_number(b: &[u8]) -> bool {
    b.len() == 18
        && b[..17].iter().all(u8::is_ascii_digit)
        && id_check_char(&b[..17]) == Some(b[17].to_ascii_uppercase())
        && matches!(&b[6..8], b"18" | b"19" | b"20")
        && plausible_id(b, &b[10..14])
}

fn is_legacy_id_number(b: &[u8]) -> bool {
    b.len() == 15 && b.iter().all(u8::is_ascii_digit) && plausible_id(b, &b[8..12])
}

fn is_mobile(b: &[u8]) -> bool {
    let b = match b.len() {
        13 if b.starts_with(b"86") => &b[2..],
        _ => b,
    };
    b.len() == 11 && b[0] == b'1' && (b'3'..=b'9').contains(&b[1]) && b.iter().all(u8::is_ascii_digit)
}

/// `11010519491231002X` → `1101**********002X`; `13812345678` →
/// `138****5678`; anything else keeps two characters and its length.
pub fn mask(value: &str) -> String {
    let n = value.chars().count();
    let digits = value.bytes().filter(u8::is_ascii_digit).count();
    if value.is_ascii() && digits + 1 >= n && (n == 15 || n == 18) {
        return format!("{}{}{}", &value[..4], "*".repeat(n - 8), &value[n - 4..]);
    }
    if value.is_ascii() && digits == n && (n == 11 || n == 13) {
        return format!("{}****{}", &value[..n - 8], &value[n - 4..]);
    }
    let head: String = value.chars().take(2).collect();
    format!("{head}{}({n} chars)", "*".repeat(n.saturating_sub(2).min(8)))
}

/// Every hit in one line, against `secrets` (values of fewer than 6
/// characters are ignored: they would match ordinary words).
pub fn scan_line(line: &str, secrets: &[Secret]) -> Vec<Hit> {
    hits_in(line, secrets).into_iter().map(|(hit, _)| hit).collect()
}

/// A hit and where its value is in the line (for masking the line).
type Located = (Hit, Range<usize>);

fn hits_in(line: &str, secrets: &[Secret]) -> Vec<Located> {
    let mut hits = Vec::new();
    digit_hits(line, &mut hits);
    let matched: Vec<&Secret> = secrets
        .iter()
        .filter(|s| s.value.len() >= 6 && line.contains(s.value.as_str()))
        .collect();
    for secret in &matched {
        // One hit per value: not again for a part of a longer secret.
        let part_of_longer = matched
            .iter()
            .any(|other| other.value.len() > secret.value.len() && other.value.contains(&secret.value));
        if !part_of_longer {
            let at = line.find(secret.value.as_str()).unwrap_or(0);
            let hit = Hit {
                rule: Rule::ConfiguredSecret,
                masked: mask(&secret.value),
                source: Some(secret.source.clone()),
            };
            hits.push((hit, at..at + secret.value.len()));
        }
    }
    shape_hits(line, &mut hits);
    hits
}

/// ID numbers and mobile numbers: maximal runs of digits (an 18-character
/// ID number may end in `X`) not glued to other digits, not the fraction
/// or integer part of a decimal, and not inside a long hex token.
fn digit_hits(line: &str, hits: &mut Vec<Located>) {
    let b = line.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let mut end = i;
        if end - start == 17 && end < b.len() && (b[end] == b'X' || b[end] == b'x') {
            end += 1;
        }
        let len = end - start;
        if !matches!(len, 11 | 13 | 15 | 18) {
            continue;
        }
        let decimal_before = start >= 2 && b[start - 1] == b'.' && b[start - 2].is_ascii_digit();
        let decimal_after = end + 1 < b.len() && b[end] == b'.' && b[end + 1].is_ascii_digit();
        if decimal_before || decimal_after || in_hex_token(b, start, end) || in_uuid(b, start, end) {
            continue;
        }
        let run = &b[start..end];
        let rule = if is_id_number(run) {
            Rule::IdNumber
        } else if is_legacy_id_number(run) {
            Rule::LegacyIdNumber
        } else if is_mobile(run) {
            Rule::Mobile
        } else {
            continue;
        };
        hits.push(located(line, rule, start..end));
        i = end;
    }
}

/// The run sits in a longer token of hex digits and dashes, at least 16
/// long and with a hex letter in it: a trace or span id, a UUID, a digest.
fn in_hex_token(b: &[u8], start: usize, end: usize) -> bool {
    let hexish = |c: u8| c.is_ascii_hexdigit() || c == b'-';
    let mut s = start;
    while s > 0 && (b[s - 1].is_ascii_alphanumeric() || b[s - 1] == b'-') {
        s -= 1;
    }
    let mut e = end;
    while e < b.len() && (b[e].is_ascii_alphanumeric() || b[e] == b'-') {
        e += 1;
    }
    let token = &b[s..e];
    (s < start || e > end)
        && token.len() >= 16
        && token.iter().all(|c| hexish(*c))
        && token.iter().any(u8::is_ascii_alphabetic)
}

/// The run sits inside a UUID (8-4-4-4-12 hex digits), whatever the UUID
/// is glued to: ids such as `fasth-01a23046-ad70-761f-9be7-d13112346330`
/// (a hospital code, then a UUIDv7) hold 11 random digits now and then.
fn in_uuid(b: &[u8], start: usize, end: usize) -> bool {
    const UUID_LEN: usize = 36;
    let is_uuid = |s: &[u8]| {
        s.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
    };
    let first = end.saturating_sub(UUID_LEN);
    (first..=start).any(|s| s + UUID_LEN <= b.len() && is_uuid(&b[s..s + UUID_LEN]))
}

fn token_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b'~' | b'+' | b'/' | b'=')
}

/// A value that is plainly not a credential: empty, masked or redacted.
fn masked_or_redacted(value: &str) -> bool {
    let lower = value.to_ascii_lowercase();
    value.is_empty()
        || value.contains('*')
        || lower.contains("redacted")
        || lower == "none"
        || lower == "null"
}

/// Keys whose value is a credential, as they appear in JSON logs or in
/// `Debug` output of headers and settings.
const CREDENTIAL_KEYS: &[&str] = &[
    "authorization",
    "x-signature",
    "password",
    "previous_secret",
    "ecard_secret",
    "secret",
    "ecard_token",
    "session_token",
    "token",
];

/// A hit for the value at `range` of `line`.
fn located(line: &str, rule: Rule, range: Range<usize>) -> Located {
    let hit = Hit {
        rule,
        masked: mask(&line[range.clone()]),
        source: None,
    };
    (hit, range)
}

fn shape_hits(line: &str, hits: &mut Vec<Located>) {
    let lower = line.to_ascii_lowercase();
    let b = line.as_bytes();

    // Bearer tokens anywhere.
    let mut from = 0;
    while let Some(at) = lower[from..].find("bearer ") {
        let start = from + at + "bearer ".len();
        let end = start + b[start..].iter().take_while(|c| token_char(**c)).count();
        let value = &line[start..end];
        if value.len() >= 8 && !masked_or_redacted(value) {
            hits.push(located(line, Rule::BearerToken, start..end));
        }
        from = end.max(start);
    }

    // `"key":"value"`, `key: value`, `key=value`, `"key": "value"`.
    for key in CREDENTIAL_KEYS {
        let mut from = 0;
        while let Some(at) = lower[from..].find(key) {
            let key_start = from + at;
            let key_end = key_start + key.len();
            from = key_end;
            // A whole key: not the tail or head of a longer name.
            let glued_before = key_start > 0 && {
                let c = b[key_start - 1];
                c.is_ascii_alphanumeric() || c == b'_' || c == b'-'
            };
            let glued_after = b
                .get(key_end)
                .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_');
            if glued_before || glued_after {
                continue;
            }
            let mut i = key_end;
            if b.get(i) == Some(&b'"') {
                i += 1;
            }
            while b.get(i) == Some(&b' ') {
                i += 1;
            }
            if !matches!(b.get(i), Some(b':' | b'=')) {
                continue;
            }
            i += 1;
            while b.get(i) == Some(&b' ') {
                i += 1;
            }
            // A value given as a string (possibly JSON-escaped inside a
            // message: `\"`), or bare.
            while matches!(b.get(i), Some(b'"' | b'\\')) {
                i += 1;
            }
            let end = i + b[i..].iter().take_while(|c| token_char(**c)).count();
            let value = &line[i..end];
            // `Secret([REDACTED])`: a type's name, not a value.
            if b.get(end) == Some(&b'(') {
                continue;
            }
            if (value.len() >= 8 || (*key == "password" && value.len() >= 4)) && !masked_or_redacted(value) {
                let (mut hit, range) = located(line, Rule::CredentialField, i..end);
                hit.masked = format!("{key}={}", hit.masked);
                hits.push((hit, range));
            }
        }
    }

    // E-card tokens: base64url of version 1 (`AQ…`), 98 characters.
    let mut from = 0;
    while let Some(at) = line[from..].find("AQ") {
        let start = from + at;
        from = start + 2;
        let url_safe = |c: &u8| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_';
        if start > 0 && url_safe(&b[start - 1]) {
            continue;
        }
        let len = b[start..].iter().take_while(|c| url_safe(c)).count();
        if len == 98 {
            hits.push(located(line, Rule::EcardToken, start..start + len));
        }
    }

    if let Some(at) = line.find("$argon2") {
        let end = at
            + b[at..]
                .iter()
                .take_while(|c| token_char(**c) || **c == b'$' || **c == b',')
                .count();
        hits.push(located(line, Rule::PasswordHash, at..end));
    }

    // scheme://user:password@host
    let mut from = 0;
    while let Some(at) = line[from..].find("://") {
        let start = from + at + 3;
        from = start;
        let authority_len = b[start..]
            .iter()
            .take_while(|c| !matches!(c, b'/' | b'"' | b' ' | b'\\' | b'?' | b'#'))
            .count();
        let authority = &line[start..start + authority_len];
        if let Some((userinfo, _host)) = authority.rsplit_once('@')
            && let Some((user, password)) = userinfo.split_once(':')
            && !masked_or_redacted(password)
        {
            let at = start + user.len() + 1;
            hits.push(located(line, Rule::UrlPassword, at..at + password.len()));
        }
    }
}

/// What one scan saw.
#[derive(Debug, Default)]
pub struct Scan {
    /// Each file and its number of lines.
    pub files: Vec<(PathBuf, usize)>,
    pub lines: usize,
    pub findings: Vec<Finding>,
}

impl Scan {
    /// How many findings per rule.
    pub fn by_rule(&self) -> BTreeMap<Rule, usize> {
        let mut counts = BTreeMap::new();
        for f in &self.findings {
            *counts.entry(f.hit.rule).or_insert(0) += 1;
        }
        counts
    }
}

/// Scan every `*.jsonl` file in `dir` (not below it), in name order.
pub fn scan_dir(dir: &Path, secrets: &[Secret]) -> std::io::Result<Scan> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl") && p.is_file())
        .collect();
    files.sort();
    let mut scan = Scan::default();
    for path in files {
        let reader = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(&path)?);
        let mut lines = 0;
        for (number, line) in reader.split(b'\n').enumerate() {
            let line = line?;
            let line = String::from_utf8_lossy(&line);
            lines += 1;
            let hits = hits_in(&line, secrets);
            if hits.is_empty() {
                continue;
            }
            let context = masked_context(&line, &hits, secrets);
            for (hit, _) in hits {
                scan.findings.push(Finding {
                    file: path.clone(),
                    line: number + 1,
                    hit,
                    context: context.clone(),
                });
            }
        }
        scan.lines += lines;
        scan.files.push((path, lines));
    }
    Ok(scan)
}

/// The line with every value found in it masked (every occurrence of a
/// configured secret too), at most 400 characters: enough to find the log
/// site.
fn masked_context(line: &str, hits: &[Located], secrets: &[Secret]) -> String {
    let mut ranges: Vec<&Range<usize>> = hits.iter().map(|(_, r)| r).collect();
    ranges.sort_by_key(|r| (r.start, std::cmp::Reverse(r.end)));
    let mut out = String::with_capacity(line.len());
    let mut done = 0;
    for r in ranges {
        if r.start < done {
            continue;
        }
        out.push_str(&line[done..r.start]);
        out.push_str(&mask(&line[r.clone()]));
        done = r.end;
    }
    out.push_str(&line[done..]);
    for secret in secrets.iter().filter(|s| s.value.len() >= 6) {
        if out.contains(secret.value.as_str()) {
            out = out.replace(secret.value.as_str(), &mask(&secret.value));
        }
    }
    match out.char_indices().nth(400) {
        Some((cut, _)) => format!("{} …", &out[..cut]),
        None => out,
    }
}

// ---- collecting the configured secrets ----------------------------------

/// Where test code and settings live, relative to the workspace root.
const SOURCE_DIRS: &[&str] = &["tests", "services", "shared/testkit/tests", "jyt"];

/// Every secret the tests and the settings files configure, read from the
/// sources rather than copied here:
/// - settings files (`*.toml` under `config/`): values of keys named like a
///   secret (`secret`, `password`, `token`, `*_key`, not hashes or
///   prefixes) and every value in a `keys` table;
/// - Rust sources under test directories (`tests/`, `services/*/tests/`,
///   testkit): string literals that look like a credential (no spaces, at
///   least 8 characters, not a name or a path) on a line that names one
///   (`SECRET`, `password`, `token`), or that say what they are
///   (`"city-ops-test-password"`), and base64 32-byte keys anywhere.
///
/// Values minted while tests run (sessions, e-card tokens, signatures)
/// are found by their shape instead ([`Rule`]).
pub fn collect_secrets(root: &Path) -> Vec<Secret> {
    let root = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    let root = root.as_path();
    let mut files = Vec::new();
    for dir in SOURCE_DIRS {
        walk(&root.join(dir), &mut files);
    }
    files.sort();
    let mut secrets: Vec<Secret> = Vec::new();
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let rel = file.strip_prefix(root).unwrap_or(&file).display().to_string();
        let is_toml = file.extension().is_some_and(|e| e == "toml");
        let in_config = file.components().any(|c| c.as_os_str() == "config");
        // Our own rules name what they look for; they are not secrets.
        let is_rs =
            file.extension().is_some_and(|e| e == "rs") && !file.starts_with(root.join("shared/testkit/src"));
        let found = if is_toml && in_config {
            secrets_in_toml(&text)
        } else if is_rs {
            let test_code = file.components().any(|c| c.as_os_str() == "tests");
            secrets_in_rust(&text, test_code)
        } else {
            Vec::new()
        };
        for (line, value) in found {
            if !secrets.iter().any(|s| s.value == value) {
                secrets.push(Secret {
                    value,
                    source: format!("{rel}:{line}"),
                });
            }
        }
    }
    secrets
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        let name = entry.file_name();
        if name == "target" || name.to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            walk(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs" || e == "toml") {
            files.push(path);
        }
    }
}

/// A 32-byte key in standard base64 (43 characters and `=`).
fn is_base64_key(s: &str) -> bool {
    s.len() == 44
        && s.ends_with('=')
        && s[..43]
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/')
}

fn secret_named(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    let hash_or_id = name.ends_with("_sha256")
        || name.ends_with("_hash")
        || name.ends_with("_prefix")
        || name.ends_with("_id")
        || name.ends_with("_url");
    !hash_or_id
        && (name.contains("secret")
            || name.contains("password")
            || name.contains("passwd")
            || name.contains("token")
            || name.ends_with("_key")
            || name == "key")
}

/// `key = "value"` lines of a settings file; (line number, value).
fn secrets_in_toml(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let mut table = String::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix('[') {
            table = name.trim_end_matches(']').to_ascii_lowercase();
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        if key.trim_start().starts_with('#') {
            continue;
        }
        let value = value.trim();
        let Some(value) = value.strip_prefix('"').and_then(|v| v.split('"').next()) else {
            continue;
        };
        let in_key_table = table.ends_with(".keys") || table.contains("secret");
        if value.len() >= 8 && (secret_named(key.trim()) || in_key_table || is_base64_key(value)) {
            found.push((n + 1, value.to_owned()));
        }
    }
    found
}

/// The string literals of one line (plain `"…"` ones, escapes kept) and
/// the line with them taken out.
fn literals(line: &str) -> (Vec<&str>, String) {
    let mut lits = Vec::new();
    let mut rest = String::new();
    let b = line.as_bytes();
    let mut i = 0;
    let mut outside = 0;
    while i < b.len() {
        if b[i] == b'"' {
            rest.push_str(&line[outside..i]);
            let start = i + 1;
            let mut j = start;
            while j < b.len() && b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            let end = j.min(b.len());
            lits.push(&line[start..end]);
            i = end + 1;
            outside = i.min(b.len());
        } else {
            i += 1;
        }
    }
    rest.push_str(&line[outside.min(line.len())..]);
    (lits, rest)
}

/// Looks like a credential: no spaces, 8 to 256 characters, not an
/// identifier, an environment variable's name, a header name, a path, a
/// URL or URN, or a format string.
fn credential_shaped(s: &str) -> bool {
    let identifier = s
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b':'));
    let header = s.contains('-')
        && s.split('-')
            .all(|p| p.chars().next().is_some_and(|c| c.is_ascii_uppercase()));
    (8..=256).contains(&s.len())
        && !identifier
        && !header
        && !s.contains(char::is_whitespace)
        && !s.contains(['{', '}', '\\', '<', '>', ':'])
        && !s.starts_with('/')
        && !s.contains("://")
        && !s.bytes().all(|c| c.is_ascii_digit())
}

fn says_secret(s: &str) -> bool {
    let lower = s.to_ascii_lowercase();
    (lower.contains("secret") || lower.contains("password") || lower.contains("token"))
        && s.contains('-')
        && !s.contains('_')
}

/// Outside test code (`test_code` false) only literals on a line that
/// names a secret count: command names and messages say "password" too.
fn secrets_in_rust(text: &str, test_code: bool) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("//") {
            continue;
        }
        let (lits, rest) = literals(line);
        if lits.is_empty() {
            continue;
        }
        let names_one = {
            let rest = rest.to_ascii_lowercase();
            ["secret", "password", "passwd", "token", "new_key"]
                .iter()
                .any(|k| rest.contains(k))
        };
        for lit in lits {
            let unescaped = lit.replace("\\\"", "\"");
            if is_base64_key(&unescaped)
                || (credential_shaped(&unescaped) && (names_one || (test_code && says_secret(&unescaped))))
            {
                found.push((n + 1, unescaped));
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(line: &str) -> Vec<Rule> {
        scan_line(line, &[]).into_iter().map(|h| h.rule).collect()
    }

    #[test]
    fn id_numbers_need_a_valid_check_digit_and_a_date() {
        assert_eq!(rules(r#"{"id":"11010519491231002X"}"#), [Rule::IdNumber]);
        assert_eq!(rules("id 11010519491231002x."), [Rule::IdNumber]);
        assert!(rules("id 110105194912310021").is_empty(), "wrong check digit");
        assert!(rules("1101051949123100211").is_empty(), "a longer run");
        assert_eq!(rules("old 110105491231002 card"), [Rule::LegacyIdNumber]);
        assert!(rules("old 110105491331002 card").is_empty(), "month 13");
        assert!(rules("1101**********002X 110105********0021").is_empty());
    }

    #[test]
    fn mobile_numbers_alone_not_in_longer_runs_or_hex() {
        assert_eq!(rules("phone=13812345678"), [Rule::Mobile]);
        assert_eq!(rules("手机13812345678，"), [Rule::Mobile]);
        assert_eq!(rules("+8613812345678"), [Rule::Mobile]);
        assert!(rules("12812345678 138123456789 0.13812345678").is_empty());
        assert!(rules("trace 4bf92f3577b34dae13812345678ce9290e0e473").is_empty());
        assert!(rules("person 01a22f23-bd39-75b3-8535-b17612341131").is_empty());
        assert!(rules("slot fasth-01a23046-ad70-761f-9be7-d13112346330 held").is_empty());
        assert!(rules("slot fasth-01a23046-ad70-761f-9be7-13112346330a").is_empty());
        assert_eq!(rules("fasth-01a23046 13112346330"), [Rule::Mobile]);
        assert_eq!(rules("call-13812345678"), [Rule::Mobile]);
        assert!(rules("138****5678 130****8255").is_empty());
    }

    #[test]
    fn masks_keep_only_the_edges() {
        assert_eq!(mask("11010519491231002X"), "1101**********002X");
        assert_eq!(mask("13012348255"), "130****8255");
        assert_eq!(mask("8613012348255"), "86130****8255");
        assert_eq!(mask("test-app-secret-0123"), "te********(20 chars)");
    }

    #[test]
    fn shapes_of_minted_secrets() {
        let token = format!("AQ{}", "a".repeat(96));
        assert_eq!(rules(&format!("token {token}.")), [Rule::EcardToken]);
        assert_eq!(
            rules("Authorization: Bearer 0123456789abcdef"),
            [Rule::BearerToken]
        );
        assert_eq!(
            rules(r#"{"x-signature":"4740604a56fae092d9a3"}"#),
            [Rule::CredentialField]
        );
        assert_eq!(rules(r#"{"password": "hunter22"}"#), [Rule::CredentialField]);
        assert_eq!(
            rules("postgres://postgres:pw-123@127.0.0.1/db"),
            [Rule::UrlPassword]
        );
        assert_eq!(rules("hash $argon2id$v=19$m=1024"), [Rule::PasswordHash]);
        for fine in [
            r#"{"field":"password","code":"INVALID_FIELD"}"#,
            r#"{"message":"BAD_SIGNATURE"}"#,
            "postgres://postgres@127.0.0.1:5432/db postgres://u:***@h/db",
            r#"{"secret":"[REDACTED]","ecard_token_present":true}"#,
            "password: Secret([REDACTED])",
        ] {
            assert!(rules(fine).is_empty(), "{fine}: {:?}", rules(fine));
        }
    }

    #[test]
    fn configured_secrets_match_by_value() {
        let secrets = [Secret {
            value: "city-ops-test-password".to_owned(),
            source: "x.rs:1".to_owned(),
        }];
        let hits = scan_line("login failed for city-ops-test-password", &secrets);
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].masked, "ci********(22 chars)");
        let line = "x city-ops-test-password y";
        assert_eq!(
            masked_context(line, &hits_in(line, &secrets), &secrets),
            "x ci********(22 chars) y"
        );
        let line = r#"{"message":"Bearer 0123456789abcdef for 13812345678"}"#;
        assert_eq!(
            masked_context(line, &hits_in(line, &[]), &[]),
            r#"{"message":"Bearer 01********(16 chars) for 138****5678"}"#
        );
    }

    #[test]
    fn secrets_are_read_from_rust_and_settings() {
        let rust = r#"
pub const TEST_APP_SECRET: &str = "example-app-secret-0123456789abcdef";
pub const CITY: (&str, &str) = ("ops", "city-password");
    let new_key = "9a/RFTumOf/HIOKzqg5r+sOvu+6NV/k1ONeEvBGboyI=";
    let ops_token = "ops-secret-token";
    .header("Idempotency-Key", "top-up-logs")
    ("JYT_GATEWAY__CHANNEL_APPS__WECHAT__SECRET", new),
    assert_eq!(bad.body["code"], "ECARD_TOKEN_INVALID");
    let path = format!("/v1/cards/{id}/ecard-token");
    assert!(!logs.contains(secret.as_str()), "{secret} leaked into the logs");
"#;
        let values: Vec<String> = secrets_in_rust(rust, true).into_iter().map(|(_, v)| v).collect();
        assert_eq!(
            values,
            [
                "example-app-secret-0123456789abcdef",
                "city-password",
                "9a/RFTumOf/HIOKzqg5r+sOvu+6NV/k1ONeEvBGboyI=",
                "ops-secret-token",
            ]
        );
        let toml = r#"
key_prefix = "jyt"
active_key_id = "demo1"
blind_index_key = "wigY88kYCH+SNwpIDX/K36eRxWI+FreZBqkpAWRu5Jk="
[crypto.keys]
demo1 = "cEIfJwfQSiHB6KeoWdG6pVdmA84oNkASyufu5H0T2CU="
[ecard]
secret = "XxjJ9b/JvRvfa1W68mShcSOquMVhjdhSfK+ij8OIU0U="
token_sha256 = "61112491d046c3f6f8ab801f170d9b2d0c734a17ceff60dee92123fb507cfc3f"
# password_hash = "$argon2id$v=19$..."
"#;
        let values: Vec<String> = secrets_in_toml(toml).into_iter().map(|(_, v)| v).collect();
        assert_eq!(
            values,
            [
                "wigY88kYCH+SNwpIDX/K36eRxWI+FreZBqkpAWRu5Jk=",
                "cEIfJwfQSiHB6KeoWdG6pVdmA84oNkASyufu5H0T2CU=",
                "XxjJ9b/JvRvfa1W68mShcSOquMVhjdhSfK+ij8OIU0U=",
            ]
        );
        assert!(id_check_char(b"11010519491231002").unwrap() == b'X');
    }
}

//! Request signing, both sides: what a channel app computes before sending
//! ([`sign_request`]) and what the gateway checks ([`verify_signature`]).
//! Pure functions with no I/O, so tests and the load generator sign with
//! exactly the code the gateway verifies with.
//!
//! The canonical string is five lines joined by `\n` (no trailing newline):
//!
//! ```text
//! <METHOD>                      upper case, e.g. POST
//! <path>[?<sorted query>]       the path as sent (percent-encoding kept);
//!                               query parameters as sent, split on `&`,
//!                               empty ones dropped, sorted by bytes, joined by `&`
//! <X-Timestamp>                 unix seconds, decimal
//! <X-Nonce>                     16 to 64 of A-Z a-z 0-9 - _
//! <hex SHA-256 of the body>     of the empty string for a request without one
//! ```
//!
//! `X-Signature` is the lower-case hex HMAC-SHA256 of that string, keyed
//! with the app's secret (its UTF-8 bytes).
//!
//! Query parameters are sorted as raw bytes rather than decoded and
//! re-encoded, so there is exactly one way to canonicalise any query and no
//! two encoders can disagree about it.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub const APP_ID: &str = "X-App-Id";
pub const TIMESTAMP: &str = "X-Timestamp";
pub const NONCE: &str = "X-Nonce";
pub const SIGNATURE: &str = "X-Signature";

type HmacSha256 = Hmac<Sha256>;

/// The signed headers of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHeaders {
    pub app_id: String,
    pub timestamp: i64,
    pub nonce: String,
    pub signature: String,
}

impl SignedHeaders {
    /// As `(name, value)` pairs, ready for any HTTP client.
    pub fn pairs(&self) -> [(&'static str, String); 4] {
        [
            (APP_ID, self.app_id.clone()),
            (TIMESTAMP, self.timestamp.to_string()),
            (NONCE, self.nonce.clone()),
            (SIGNATURE, self.signature.clone()),
        ]
    }
}

/// `a=1&&c=3&b=2` → `a=1&b=2&c=3`.
pub fn canonical_query(raw: &str) -> String {
    let mut parts: Vec<&str> = raw.split('&').filter(|p| !p.is_empty()).collect();
    parts.sort_unstable();
    parts.join("&")
}

/// `/v1/x` and `b=2&a=1` → `/v1/x?a=1&b=2`; no `?` without parameters.
pub fn canonical_target(path: &str, query: &str) -> String {
    let q = canonical_query(query);
    if q.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{q}")
    }
}

pub fn body_sha256_hex(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

/// The string that is signed; see the module documentation.
pub fn canonical_string(
    method: &str,
    path: &str,
    query: &str,
    timestamp: i64,
    nonce: &str,
    body: &[u8],
) -> String {
    format!(
        "{}\n{}\n{timestamp}\n{nonce}\n{}",
        method.to_ascii_uppercase(),
        canonical_target(path, query),
        body_sha256_hex(body)
    )
}

fn mac(secret: &[u8], canonical: &str) -> HmacSha256 {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let mut m = <HmacSha256 as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable_mac());
    m.update(canonical.as_bytes());
    m
}

#[cold]
fn unreachable_mac() -> HmacSha256 {
    // Never reached (see `mac`); a fixed key keeps this total without a panic.
    <HmacSha256 as Mac>::new(&Default::default())
}

/// Lower-case hex HMAC-SHA256 of `canonical`.
pub fn signature_hex(secret: &[u8], canonical: &str) -> String {
    hex::encode(mac(secret, canonical).finalize().into_bytes())
}

/// Sign one request: what a channel app does before sending it.
pub fn sign_request(
    app_id: &str,
    secret: &[u8],
    method: &str,
    path_and_query: &str,
    body: &[u8],
    timestamp: i64,
    nonce: &str,
) -> SignedHeaders {
    let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
    let canonical = canonical_string(method, path, query, timestamp, nonce, body);
    SignedHeaders {
        app_id: app_id.to_owned(),
        timestamp,
        nonce: nonce.to_owned(),
        signature: signature_hex(secret, &canonical),
    }
}

/// A fresh random nonce (32 hex characters).
pub fn new_nonce() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Why the signed headers were refused, before any secret is tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderProblem {
    Timestamp,
    Nonce,
}

pub fn parse_timestamp(raw: &str) -> Result<i64, HeaderProblem> {
    if raw.is_empty() || raw.len() > 12 || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HeaderProblem::Timestamp);
    }
    raw.parse().map_err(|_| HeaderProblem::Timestamp)
}

pub fn valid_nonce(raw: &str) -> Result<(), HeaderProblem> {
    let ok = (16..=64).contains(&raw.len())
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok { Ok(()) } else { Err(HeaderProblem::Nonce) }
}

/// Whether `signature` (hex, either case) is the HMAC of `canonical` under
/// any of `secrets`; compared in constant time.
pub fn verify_signature<'a>(
    secrets: impl IntoIterator<Item = &'a [u8]>,
    canonical: &str,
    signature: &str,
) -> bool {
    let Ok(given) = hex::decode(signature.trim()) else {
        return false;
    };
    if given.len() != 32 {
        return false;
    }
    secrets.into_iter().any(|secret| {
        let expected = mac(secret, canonical).finalize().into_bytes();
        bool::from(expected.as_slice().ct_eq(&given))
    })
}

/// A received request's signature, checked as the gateway checks a
/// channel's: the signed headers read through `header` (by name, e.g.
/// [`TIMESTAMP`]), the canonical string of `method`, `path`, `query` and
/// `body`, its HMAC under any of `secrets`. What a receiver of the
/// gateway's signed notices (a channel app, a test's or the load test's
/// endpoint) does with each; whether the timestamp is fresh and the nonce
/// new is the receiver's own to judge.
pub fn verify_request<'h, 's>(
    secrets: impl IntoIterator<Item = &'s [u8]>,
    method: &str,
    path: &str,
    query: &str,
    header: impl Fn(&str) -> Option<&'h str>,
    body: &[u8],
) -> bool {
    let (Some(timestamp), Some(nonce), Some(signature)) =
        (header(TIMESTAMP), header(NONCE), header(SIGNATURE))
    else {
        return false;
    };
    let Ok(timestamp) = parse_timestamp(timestamp) else {
        return false;
    };
    verify_signature(
        secrets,
        &canonical_string(method, path, query, timestamp, nonce, body),
        signature,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECRET: &[u8] = b"demo-wechat-secret-0123456789abcdef";

    #[test]
    fn a_request_signed_with_sign_request_verifies_and_a_changed_one_does_not() {
        let body = br#"{"notice_id":"n-1"}"#;
        let h = sign_request(
            "wechat",
            b"secret-0123456789",
            "POST",
            "/notices?b=2&a=1",
            body,
            1_780_000_000,
            "abcdefabcdefabcd",
        );
        let pairs = h.pairs();
        let header = |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        let secret: &[u8] = b"secret-0123456789";
        assert!(verify_request(
            [secret],
            "POST",
            "/notices",
            "a=1&b=2",
            header,
            body
        ));
        assert!(!verify_request(
            [secret],
            "POST",
            "/notices",
            "a=1&b=2",
            header,
            b"{}"
        ));
        assert!(!verify_request(
            [secret],
            "POST",
            "/other",
            "a=1&b=2",
            header,
            body
        ));
        assert!(!verify_request(
            [&b"another-secret"[..]],
            "POST",
            "/notices",
            "a=1&b=2",
            header,
            body
        ));
        assert!(!verify_request(
            [secret],
            "POST",
            "/notices",
            "a=1&b=2",
            |_: &str| None,
            body
        ));
    }

    /// The README's worked example, value for value.
    #[test]
    fn the_worked_example_of_the_readme() {
        let secret = b"demo-wechat-secret-change-me-0123456789abcdef";
        let body =
            br#"{"slot_id":"pumch-0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b","card_number":"9110000000000005"}"#;
        assert_eq!(
            body_sha256_hex(body),
            "654ed8d8efdb06099934603259acaff2acb24212a72cce944ff4c4cf6634b5ec"
        );
        let nonce = "3f2b8c1d9e7a4b6c5d4e3f2a1b0c9d8e";
        let canonical = canonical_string("post", "/v1/bookings", "", 1_780_000_000, nonce, body);
        assert_eq!(
            canonical,
            "POST\n/v1/bookings\n1780000000\n3f2b8c1d9e7a4b6c5d4e3f2a1b0c9d8e\n\
             654ed8d8efdb06099934603259acaff2acb24212a72cce944ff4c4cf6634b5ec"
        );
        let signed = sign_request(
            "wechat",
            secret,
            "POST",
            "/v1/bookings",
            body,
            1_780_000_000,
            nonce,
        );
        assert_eq!(
            signed.signature,
            "4740604a56fae092d9a363da2bc7d196c5b55923ed839d8bcafe2af104a94ed1"
        );

        let target = "/v1/availability?level=expert&date=2026-12-01&department=%E5%BF%83%E5%86%85";
        let nonce = "9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a";
        let signed = sign_request("wechat", secret, "GET", target, b"", 1_780_000_000, nonce);
        assert_eq!(
            canonical_string(
                "GET",
                "/v1/availability",
                "level=expert&date=2026-12-01&department=%E5%BF%83%E5%86%85",
                1_780_000_000,
                nonce,
                b""
            ),
            "GET\n/v1/availability?date=2026-12-01&department=%E5%BF%83%E5%86%85&level=expert\n\
             1780000000\n9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            signed.signature,
            "a27a93f206b5acde3055b1ca1c789b641c53d5116ca4a822af7435ee4da811ee"
        );
    }

    #[test]
    fn a_signature_verifies_with_either_active_secret_only() {
        let h = sign_request(
            "wx1",
            SECRET,
            "POST",
            "/v1/bookings?b=1&a=2",
            b"{}",
            10,
            "abcdefabcdefabcd",
        );
        let canonical = canonical_string("POST", "/v1/bookings", "a=2&b=1", 10, "abcdefabcdefabcd", b"{}");
        let old: &[u8] = b"an-older-secret-still-in-rotation";
        assert!(verify_signature([old, SECRET], &canonical, &h.signature));
        assert!(verify_signature(
            [SECRET],
            &canonical,
            &h.signature.to_ascii_uppercase()
        ));
        assert!(!verify_signature([old], &canonical, &h.signature));
        let other_body = canonical_string("POST", "/v1/bookings", "a=2&b=1", 10, "abcdefabcdefabcd", b"{ }");
        assert!(!verify_signature([SECRET], &other_body, &h.signature));
    }

    proptest! {
        /// Reordering query parameters or adding empty ones never changes
        /// the canonical form, so it never breaks a signature.
        #[test]
        fn query_order_does_not_matter(mut params in proptest::collection::vec("[a-z]{1,5}=[a-z0-9%]{0,5}", 0..6), seed in any::<u64>()) {
            let original = params.join("&");
            let n = params.len();
            if n > 1 {
                params.swap((seed as usize) % n, ((seed >> 8) as usize) % n);
            }
            let shuffled = format!("&{}&", params.join("&&"));
            prop_assert_eq!(canonical_query(&original), canonical_query(&shuffled));
        }

        /// Any change to method, target, timestamp, nonce or body changes the signature.
        #[test]
        fn every_part_is_covered(path in "/v1/[a-z/]{0,12}", query in "[a-z=&]{0,12}", ts in 0i64..4_000_000_000,
                                 nonce in "[a-zA-Z0-9_-]{16,32}", body in proptest::collection::vec(any::<u8>(), 0..64),
                                 which in 0u8..5) {
            let base = canonical_string("POST", &path, &query, ts, &nonce, &body);
            let sig = signature_hex(SECRET, &base);
            let changed = match which {
                0 => canonical_string("GET", &path, &query, ts, &nonce, &body),
                1 => canonical_string("POST", &format!("{path}x"), &query, ts, &nonce, &body),
                2 => canonical_string("POST", &path, &query, ts + 1, &nonce, &body),
                3 => canonical_string("POST", &path, &query, ts, &format!("{nonce}x"), &body),
                _ => { let mut b = body.clone(); b.push(b'!'); canonical_string("POST", &path, &query, ts, &nonce, &b) }
            };
            prop_assert!(!verify_signature([SECRET], &changed, &sig));
            prop_assert!(verify_signature([SECRET], &base, &sig));
        }

        /// Arbitrary header values are refused or accepted, never a panic.
        #[test]
        fn header_parsing_is_total(raw in ".{0,80}") {
            let _ = parse_timestamp(&raw);
            let _ = valid_nonce(&raw);
            prop_assert!(!verify_signature([SECRET], "x", &raw) || raw.len() == 64);
        }
    }
}

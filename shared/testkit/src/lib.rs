//! # Layout
//! What integration tests need to run against the real PostgreSQL and Redis
//! without seeing each other:
//! - [`fresh_database`]: a new, empty database per test (named
//!   `jyt_test_…`, so the test command can drop leftovers);
//! - [`fresh_redis_prefix`]: a key prefix per test (`jyt-test:…`);
//! - [`eventually`]: poll a condition until a deadline, instead of sleeping;
//! - [`explain`]: the plan PostgreSQL makes of a statement, line by line;
//! - [`counter_sum`]: a counter read from a service's `/metrics` text;
//! - [`logs`]: every log line of the process as JSON lines in a file of its
//!   own, installed by the first of these helpers a test calls;
//! - [`logscan`]: the rules those files are scanned with for personal data
//!   and secrets (the `scan-test-logs` binary runs them over the suite).
//!
//! Where the servers are comes from `JYT_TEST_PG_ADMIN_URL` and
//! `JYT_TEST_REDIS_URL`, defaulting to the local ones.

pub mod logs;
pub mod logscan;

use std::future::Future;
use std::time::{Duration, Instant};

use uuid::Uuid;

/// A URL to any database on the test server, with rights to create databases.
pub fn pg_admin_url() -> String {
    logs::capture();
    std::env::var("JYT_TEST_PG_ADMIN_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

pub fn redis_url() -> String {
    logs::capture();
    std::env::var("JYT_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// An HTTP client whose every request carries an internal token for
/// `audience` (as the gateway or jyt's tools would send), minted with the
/// service's own settings and valid for their longest lifetime: for tests
/// that call slot-inventory or card-issuing directly.
#[expect(clippy::expect_used, reason = "test helper: a failure is a failed test")]
pub fn internal_client(auth: &jyt_settings::InternalAuthSettings, audience: &str) -> reqwest::Client {
    let key = auth.key(audience);
    let token =
        jyt_signing::internal::Minter::new(key.as_bytes(), "test", audience, auth.max_lifetime_seconds)
            .token();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        jyt_signing::internal::HEADER,
        reqwest::header::HeaderValue::from_str(&token).expect("a token is a valid header value"),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("an HTTP client")
}

/// Create an empty database for one test and return its URL.
pub async fn fresh_database(purpose: &str) -> String {
    let purpose: String = purpose
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(20)
        .collect::<String>()
        .to_ascii_lowercase();
    let name = format!(
        "jyt_test_{purpose}_{}",
        &Uuid::new_v4().simple().to_string()[..12]
    );
    let admin = pg_admin_url();
    match jyt_db::ensure_database(&admin, &name).await {
        Ok(_) => jyt_db::url_with_database(&admin, &name),
        Err(e) => fail(&format!("could not create test database {name} via {admin}: {e}")),
    }
}

/// The plan of `statement` (`EXPLAIN` it, parameters written in), one
/// line per entry: for tests that hold a statement to the index it reads.
pub async fn explain(client: &jyt_db::tokio_postgres::Client, statement: &str) -> Vec<String> {
    match client.simple_query(&format!("EXPLAIN {statement}")).await {
        Ok(messages) => messages
            .iter()
            .filter_map(|m| match m {
                jyt_db::tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                _ => None,
            })
            .collect(),
        Err(e) => fail(&format!("could not explain {statement}: {e}")),
    }
}

/// A key prefix no other test uses.
pub fn fresh_redis_prefix() -> String {
    logs::capture();
    format!("jyt-test:{}", Uuid::new_v4().simple())
}

/// Settings for the test Redis under a fresh key prefix, for tests that
/// connect with `jyt_cache::connect` themselves.
pub fn redis_settings() -> jyt_settings::RedisSettings {
    jyt_settings::RedisSettings {
        urls: vec![secrecy::SecretString::from(redis_url())],
        cluster: false,
        key_prefix: fresh_redis_prefix(),
        response_timeout_ms: 5_000,
        connection_timeout_ms: 5_000,
    }
}

/// Poll `check` until it returns `Some`, or fail the test after `deadline`.
pub async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if started.elapsed() > deadline {
            fail(&format!("timed out after {deadline:?} waiting for {what}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[expect(clippy::panic, reason = "test helper: failing the test is the point")]
fn fail(message: &str) -> ! {
    panic!("{message}")
}

/// The sum of a counter's series in a Prometheus `/metrics` text whose
/// labels contain every one of `labels` (e.g. `route="/v1/bookings"`; none:
/// every series of the counter); 0 when none is there.
pub fn counter_sum(metrics_text: &str, name: &str, labels: &[&str]) -> u64 {
    metrics_text
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
                && labels.iter().all(|label| l.contains(label))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_counter_is_summed_over_its_matching_series_only() {
        let text = "# HELP jyt_calls_total Calls\n\
                    jyt_calls_total{route=\"/v1/bookings\",status=\"201\"} 3\n\
                    jyt_calls_total{route=\"/v1/bookings\",status=\"409\"} 4\n\
                    jyt_calls_total{route=\"/v1/cards\",status=\"200\"} 5\n\
                    jyt_calls_total_other 100\n\
                    jyt_plain_total 7\n";
        assert_eq!(super::counter_sum(text, "jyt_calls_total", &[]), 12);
        assert_eq!(
            super::counter_sum(text, "jyt_calls_total", &["route=\"/v1/bookings\""]),
            7
        );
        assert_eq!(
            super::counter_sum(
                text,
                "jyt_calls_total",
                &["route=\"/v1/bookings\"", "status=\"409\""]
            ),
            4
        );
        assert_eq!(super::counter_sum(text, "jyt_plain_total", &[]), 7);
        assert_eq!(super::counter_sum(text, "jyt_missing_total", &[]), 0);
    }
}

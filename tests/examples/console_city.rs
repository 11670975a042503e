//! A small city with the operators' console wired to its gateway, for the
//! browser test (scripts/browser-test.sh): hospitals `pumch` and `tongren`
//! with tomorrow-but-one's clinics, card-issuing, the gateway and
//! channel-accounting with the relay, each on port 0 with a fresh database
//! and Redis prefix (the test kit's), and one pending appeal at pumch.
//! Prints one JSON line (the addresses, prefix and visit date), then runs
//! until interrupted or killed.

use std::io::Write;

use jyt_system_tests::{ALL_SEATS_COMMON, TestCity, spawn_console, visit_day};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let city = TestCity::spawn_configured(&["pumch", "tongren"], &[], ALL_SEATS_COMMON).await;
    let pumch = city.hospital(0);
    let slots = pumch.seed_visit_day(6).await;
    city.hospital(1).seed_visit_day(6).await;
    let appeal = city.pending_appeal(pumch, &slots[0], "browser-appeal").await;
    let console = spawn_console(&city.redis_prefix, &city.gateway_url, &["pumch"]).await;
    let line = serde_json::json!({
        "console_url": console.url,
        "gateway_url": city.gateway_url,
        "redis_prefix": city.redis_prefix,
        "visit_date": visit_day(),
        "appeal_id": appeal,
        "password": jyt_system_tests::CONSOLE_PASSWORD,
    });
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    drop(out);
    tokio::signal::ctrl_c().await?;
    Ok(())
}

//! `jyt up` as a process: it serves the city, and a SIGTERM (what `kill`,
//! systemd and a container's stop send) stops it, not only Ctrl-C.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

/// Ports of their own, clear of a `jyt up` a developer may be running.
const GATEWAY_PORT: u16 = 18080;

#[tokio::test]
async fn jyt_up_serves_the_city_and_stops_on_sigterm() {
    let workspace = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let mut child = Command::new(env!("CARGO_BIN_EXE_jyt"))
        .arg("up")
        .current_dir(workspace)
        .env("JYT_CITY__PORTS__GATEWAY", GATEWAY_PORT.to_string())
        .env("JYT_CITY__PORTS__CARD_ISSUING", "18102")
        .env("JYT_CITY__PORTS__CHANNEL_ACCOUNTING", "18103")
        .env("JYT_CITY__PORTS__SLOT_INVENTORY_FIRST", "18111")
        .env("JYT_CITY__REDIS__KEY_PREFIX", jyt_testkit::fresh_redis_prefix())
        .env("JYT_CITY__TELEMETRY__LOG_FILTER", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("starting jyt up");
    let http = reqwest::Client::new();
    let healthz = format!("http://127.0.0.1:{GATEWAY_PORT}/healthz");
    jyt_testkit::eventually(Duration::from_secs(180), "the gateway of `jyt up`", || {
        let (http, healthz) = (http.clone(), healthz.clone());
        async move {
            let res = http.get(&healthz).send().await.ok()?;
            res.status().is_success().then_some(())
        }
    })
    .await;
    drop(http);

    let pid = child.id().expect("jyt up is running").to_string();
    let sent = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .expect("running kill");
    assert!(sent.success());
    let exited = tokio::time::timeout(Duration::from_secs(90), child.wait())
        .await
        .expect("jyt up stops within 90 s of a SIGTERM")
        .expect("waiting for jyt up");
    assert!(exited.success(), "jyt up exited with {exited}");
}

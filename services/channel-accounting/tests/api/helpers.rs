#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: a failed unwrap is a failed test, with its location"
)]

use std::collections::HashMap;
use std::time::Duration;

use channel_accounting::{Application, Settings};
use chrono::{DateTime, Utc};
use jyt_cache::{RedisConn, redis};
use jyt_events::Envelope;
use jyt_settings::Sources;
use serde_json::{Value, json};
use uuid::Uuid;

pub const CITY: (&str, &str) = ("ops", "city-password");
pub const PUMCH: (&str, &str) = ("pumch_ops", "pumch-password");
pub const BOOKINGS: &str = "events:slot-inventory";
pub const CARDS: &str = "events:card-issuing";

pub struct TestApp {
    pub address: String,
    pub db_url: String,
    pub client: reqwest::Client,
    pub redis: RedisConn,
    pub redis_prefix: String,
}

pub async fn spawn_app() -> TestApp {
    let db_url = jyt_testkit::fresh_database("acct").await;
    spawn_app_on(db_url, jyt_testkit::fresh_redis_prefix()).await
}

/// Another instance on an existing database and key prefix (a restart).
pub async fn spawn_app_on(db_url: String, redis_prefix: String) -> TestApp {
    spawn_app_on_with(db_url, redis_prefix, &[]).await
}

/// With `extra` settings (keys after `JYT_CHANNEL_ACCOUNTING__`) on top.
pub async fn spawn_app_on_with(db_url: String, redis_prefix: String, extra: &[(&str, String)]) -> TestApp {
    let p = "JYT_CHANNEL_ACCOUNTING__";
    let hash = |pw: &str| channel_accounting::auth::hash_password_with(pw, 1024, 1).unwrap();
    let env: HashMap<String, String> = [
        ("HTTP__PORT", "0".to_owned()),
        ("HTTP__WORKERS", "2".to_owned()),
        ("POSTGRES__URL", db_url.clone()),
        ("REDIS__URLS", jyt_testkit::redis_url()),
        ("REDIS__KEY_PREFIX", redis_prefix.clone()),
        ("CONSUMER__NAME", "test".to_owned()),
        ("OPERATORS__DEMO_ACCOUNT", "false".to_owned()),
        ("OPERATORS__ACCOUNTS__OPS__PASSWORD_HASH", hash(CITY.1)),
        ("OPERATORS__ACCOUNTS__OPS__ROLE", "city".to_owned()),
        ("OPERATORS__ACCOUNTS__PUMCH_OPS__PASSWORD_HASH", hash(PUMCH.1)),
        ("OPERATORS__ACCOUNTS__PUMCH_OPS__ROLE", "hospital".to_owned()),
        ("OPERATORS__ACCOUNTS__PUMCH_OPS__HOSPITAL_ID", "pumch".to_owned()),
    ]
    .into_iter()
    .chain(extra.iter().cloned())
    .map(|(k, v)| (format!("{p}{k}"), v))
    .collect();
    let settings = Settings::load_from(&Sources::from_map(env)).expect("test settings");
    let redis = jyt_cache::connect(&settings.redis).await.unwrap();
    let app = Application::build(settings)
        .await
        .expect("channel-accounting starts");
    let address = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    TestApp {
        address,
        db_url,
        client: reqwest::Client::new(),
        redis,
        redis_prefix,
    }
}

/// A booking event payload (schema 1), as slot-inventory writes it.
pub fn booking(id: &str, hospital: &str, channel: &str, fee_fen: i64, detail: Value) -> Value {
    json!({
        "schema": 1, "booking_id": id, "hospital_id": hospital, "slot_id": format!("{hospital}-slot"),
        "schedule_id": format!("{hospital}-sched-1"), "patient_id": Uuid::new_v4(), "channel": channel,
        "pool": "general", "status": "confirmed", "fee_fen": fee_fen, "payment_method": "self_pay",
        "visit_date": "2026-12-01", "visit_number": 1, "segment_starts_at": "2026-12-01T00:30:00Z",
        "detail": detail,
    })
}

impl TestApp {
    pub fn stream(&self, name: &str) -> String {
        format!("{}:{name}", self.redis_prefix)
    }

    /// XADD one event, as the outbox relay would; returns its id.
    pub async fn publish(&self, stream: &str, event_type: &str, payload: Value) -> Uuid {
        self.publish_at(stream, event_type, payload, Utc::now()).await
    }

    pub async fn publish_at(
        &self,
        stream: &str,
        event_type: &str,
        payload: Value,
        at: DateTime<Utc>,
    ) -> Uuid {
        let envelope = Envelope {
            event_id: Uuid::now_v7(),
            event_type: event_type.to_owned(),
            aggregate_id: payload["booking_id"].as_str().unwrap_or("agg").to_owned(),
            occurred_at: at,
            payload,
        };
        let fields = [
            ("event_id", envelope.event_id.to_string()),
            ("event_type", envelope.event_type.clone()),
            ("envelope", serde_json::to_string(&envelope).unwrap()),
        ];
        let mut conn = self.redis.clone();
        redis::AsyncCommands::xadd::<_, _, _, _, ()>(&mut conn, self.stream(stream), "*", &fields)
            .await
            .unwrap();
        envelope.event_id
    }

    /// Every entry of a stream, to deliver again.
    pub async fn entries(&self, stream: &str) -> Vec<Vec<(String, String)>> {
        let mut conn = self.redis.clone();
        let reply: redis::streams::StreamRangeReply =
            redis::AsyncCommands::xrange_all(&mut conn, self.stream(stream))
                .await
                .unwrap();
        reply
            .ids
            .iter()
            .map(|e| {
                e.map
                    .iter()
                    .map(|(k, v)| (k.clone(), redis::from_redis_value::<String>(v.clone()).unwrap()))
                    .collect()
            })
            .collect()
    }

    pub async fn redeliver(&self, stream: &str, entries: &[Vec<(String, String)>]) {
        let mut conn = self.redis.clone();
        for fields in entries {
            redis::AsyncCommands::xadd::<_, _, _, _, ()>(&mut conn, self.stream(stream), "*", fields)
                .await
                .unwrap();
        }
    }

    /// Wait until the events with these ids are applied.
    pub async fn applied(&self, ids: &[Uuid]) {
        let (client, conn) = jyt_db::tokio_postgres::connect(&self.db_url, jyt_db::tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        let ids = ids.to_vec();
        jyt_testkit::eventually(Duration::from_secs(15), "events applied", || {
            let (client, ids) = (&client, ids.clone());
            async move {
                let n: i64 = client
                    .query_one(
                        "SELECT count(*) FROM processed_events WHERE event_id = ANY($1)",
                        &[&ids],
                    )
                    .await
                    .ok()?
                    .get(0);
                (n == ids.len() as i64).then_some(())
            }
        })
        .await;
    }

    pub async fn login(&self, (login, password): (&str, &str)) -> String {
        let res = self
            .client
            .post(format!("{}/v1/operators/login", self.address))
            .json(&json!({ "login": login, "password": password }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let body: Value = res.json().await.unwrap();
        body["token"].as_str().unwrap().to_owned()
    }

    pub async fn get(&self, token: &str, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.address))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    pub async fn get_json(&self, token: &str, path: &str) -> Value {
        let res = self.get(token, path).await;
        assert_eq!(res.status(), 200, "{path}");
        res.json().await.unwrap()
    }

    pub async fn import(&self, token: &str, channel: &str, date: &str, body: &str) -> reqwest::Response {
        self.client
            .post(format!(
                "{}/v1/reconciliation/statements?channel={channel}&date={date}",
                self.address
            ))
            .bearer_auth(token)
            .header("Content-Type", "text/csv")
            .body(body.to_owned())
            .send()
            .await
            .unwrap()
    }
}

/// Assert a problem+json answer: status, code and the field it names.
pub async fn assert_problem(res: reqwest::Response, status: u16, code: &str, field: Option<&str>) -> Value {
    assert_eq!(res.status(), status);
    assert_eq!(
        res.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["code"], code, "{body}");
    if let Some(field) = field {
        assert_eq!(body["field"], field, "{body}");
    }
    body
}

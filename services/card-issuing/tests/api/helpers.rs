#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: a failed unwrap is a failed test, with its location"
)]

use std::collections::HashMap;

use card_issuing::identity::id_check_char;
use card_issuing::settings::Settings;
use card_issuing::{AppState, Application};
use chrono::NaiveDate;
use jyt_cache::RedisConn;
use jyt_settings::Sources;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The operator every test app is configured with (the defaults have
/// none); its id is what the audit log names.
pub const OPERATOR_ID: &str = "demo-operator";
pub const OPERATOR_TOKEN: &str = "demo-operator-token";

pub struct TestApp {
    pub address: String,
    pub db_url: String,
    pub client: reqwest::Client,
    pub state: AppState,
    pub redis: RedisConn,
    pub redis_prefix: String,
}

/// Every log line written in this test binary so far (the process's
/// capture, `jyt_testkit::logs`), so a test can check that no personal
/// data ever reaches a log.
pub fn captured_logs() -> String {
    jyt_testkit::logs::read_own()
}

pub async fn spawn_app() -> TestApp {
    let db_url = jyt_testkit::fresh_database("card").await;
    spawn_app_with(db_url, &[]).await
}

/// The service on an existing database, with extra settings (e.g. keys).
pub async fn spawn_app_with(db_url: String, extra: &[(&str, &str)]) -> TestApp {
    jyt_testkit::logs::capture();
    let redis_prefix = jyt_testkit::fresh_redis_prefix();
    let mut env: HashMap<String, String> = [
        ("JYT_CARD_ISSUING__HTTP__PORT", "0".to_owned()),
        ("JYT_CARD_ISSUING__HTTP__WORKERS", "2".to_owned()),
        ("JYT_CARD_ISSUING__POSTGRES__URL", db_url.clone()),
        ("JYT_CARD_ISSUING__POSTGRES__POOL_MAX_SIZE", "8".to_owned()),
        ("JYT_CARD_ISSUING__POSTGRES__WAIT_TIMEOUT_MS", "30000".to_owned()),
        (
            "JYT_CARD_ISSUING__POSTGRES__STATEMENT_TIMEOUT_MS",
            "30000".to_owned(),
        ),
        ("JYT_CARD_ISSUING__REDIS__URLS", jyt_testkit::redis_url()),
        ("JYT_CARD_ISSUING__REDIS__KEY_PREFIX", redis_prefix.clone()),
        (
            "JYT_CARD_ISSUING__OPERATORS__DEMO-OPERATOR__TOKEN_SHA256",
            hex::encode(Sha256::digest(OPERATOR_TOKEN)),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let settings = Settings::load_from(&Sources::from_map(env)).expect("test settings load");
    let redis = jyt_cache::connect(&settings.redis)
        .await
        .expect("redis for tests");
    // The service answers only internal callers (the gateway, jyt's tools):
    // the tests call it as such.
    let client = jyt_testkit::internal_client(&settings.internal_auth, jyt_signing::internal::CARD_ISSUING);
    let app = Application::build(settings).await.expect("application builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let state = app.state().clone();
    tokio::spawn(app.run_until_stopped());
    TestApp {
        address,
        db_url,
        client,
        state,
        redis,
        redis_prefix,
    }
}

/// A valid 18-character resident ID number for someone born on `birth`,
/// random enough that tests never collide.
pub fn id_number_born(birth: NaiveDate) -> String {
    let seq = Uuid::new_v4().as_u128() % 1000;
    let first17 = format!("110105{}{seq:03}", birth.format("%Y%m%d"));
    let check = id_check_char(first17.as_bytes()).unwrap();
    format!("{first17}{}", char::from(check))
}

pub fn random_id_number() -> String {
    let day = (Uuid::new_v4().as_u128() % 10_000) as i64;
    id_number_born(NaiveDate::from_ymd_opt(1960, 1, 1).unwrap() + chrono::Duration::days(day))
}

pub fn random_phone() -> String {
    format!("138{:08}", Uuid::new_v4().as_u128() % 100_000_000)
}

pub struct Resp {
    pub status: u16,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Resp {
        let res = req.send().await.expect("request sent");
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let text = res.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Resp {
            status,
            body,
            headers,
        }
    }

    pub async fn post(&self, path: &str, body: &Value) -> Resp {
        self.send(self.client.post(self.url(path)).json(body)).await
    }

    pub async fn post_with_key(&self, path: &str, key: &str, body: &Value) -> Resp {
        self.send(
            self.client
                .post(self.url(path))
                .header("Idempotency-Key", key)
                .json(body),
        )
        .await
    }

    pub async fn post_as_operator(&self, path: &str, token: &str, body: &Value) -> Resp {
        self.send(self.client.post(self.url(path)).bearer_auth(token).json(body))
            .await
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.send(self.client.get(self.url(path))).await
    }

    pub async fn register(&self, name: &str, id_number: &str, phone: &str) -> Resp {
        self.post(
            "/v1/persons",
            &json!({ "name": name, "id_number": id_number, "phone": phone }),
        )
        .await
    }

    /// Register someone new; their person id.
    pub async fn new_person(&self) -> Uuid {
        self.new_person_born(None).await
    }

    pub async fn new_person_born(&self, birth: Option<NaiveDate>) -> Uuid {
        let id = birth.map_or_else(random_id_number, id_number_born);
        let r = self.register("测试", &id, &random_phone()).await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        r.body["person_id"].as_str().unwrap().parse().unwrap()
    }

    /// Issue a card of `kind` (`physical` or `ecard`); the card body.
    pub async fn issue_card(&self, person: Uuid, kind: &str) -> Value {
        let body = if kind == "physical" {
            json!({ "kind": kind, "channel": "kiosk", "chip_serial": chip_serial() })
        } else {
            json!({ "kind": kind, "channel": "wechat" })
        };
        let r = self
            .post_with_key(
                &format!("/v1/persons/{person}/cards"),
                &Uuid::new_v4().to_string(),
                &body,
            )
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        r.body
    }

    pub async fn top_up(&self, card: &str, amount: i64) -> Resp {
        self.post(
            &format!("/v1/cards/{card}/top-ups"),
            &json!({ "amount_fen": amount, "channel": "wechat", "channel_ref": Uuid::new_v4().to_string() }),
        )
        .await
    }

    pub async fn pool_client(&self) -> jyt_db::deadpool_postgres::Client {
        self.state.pool.get().await.unwrap()
    }

    /// A new person's physical card, topped up with `fen`: its id.
    pub async fn card_with_balance(&self, fen: i64) -> String {
        let person = self.new_person().await;
        let card = self.issue_card(person, "physical").await;
        let id = card["card_id"].as_str().unwrap().to_owned();
        assert_eq!(self.top_up(&id, fen).await.status, 201);
        id
    }

    /// Poll until `count` of the test database's statements like `query`
    /// wait on a lock, for at most ten seconds.
    pub async fn until_waiting_on_lock(&self, query: &str, count: i64) {
        let watcher = self.pool_client().await;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let waiting: i64 = watcher
                .query_one(
                    "SELECT COUNT(*) FROM pg_stat_activity
                      WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE $1",
                    &[&query],
                )
                .await
                .unwrap()
                .get(0);
            if waiting >= count {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{count} statement(s) like {query} never waited on a lock"
            );
            tokio::task::yield_now().await;
        }
    }
}

pub fn chip_serial() -> String {
    Uuid::new_v4().simple().to_string()[..16].to_ascii_uppercase()
}

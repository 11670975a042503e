//! A city for a test: hospitals behind a gateway, card-issuing (the
//! patient index the gateway resolves cards through), channel-accounting,
//! and typed HTTP helpers that sign every request as the channel's test app
//! and name patients by their platform card, as a real channel does.

use jyt_domain::time::Clock;
use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{NaiveDate, Utc};
use futures::StreamExt;
use jyt_domain::{HospitalId, SlotRef};
use reqwest::Method;
use slot_inventory::schedule::listing::DaySchedules;
use uuid::Uuid;

use crate::hospital::TestHospital;
use crate::sources;

/// Every test gateway has one app per channel kind; its id is the channel's
/// name (`wechat`, `kiosk`, ...) and they share this secret.
pub const TEST_APP_SECRET: &str = "test-app-secret-0123456789abcdef-0123";
/// The channel kinds with a test app.
pub const TEST_CHANNELS: [&str; 6] = ["wechat", "kiosk", "phone114", "window", "app", "referral"];

/// Hospitals behind a gateway.
pub struct TestCity {
    pub gateway_url: String,
    pub hospitals: Vec<TestHospital>,
    pub http: reqwest::Client,
    pub redis_prefix: String,
    pub cards: TestCards,
}

/// A running card-issuing and the patients a test registered in it.
pub struct TestCards {
    pub base_url: String,
    pub database_url: String,
    /// Carries card-issuing's internal token, as jyt's tools would.
    pub http: reqwest::Client,
    /// person id → platform card number.
    cards: Mutex<HashMap<Uuid, String>>,
}

/// A registered patient with an e-card.
#[derive(Debug, Clone)]
pub struct TestPatient {
    pub person_id: Uuid,
    pub card_id: Uuid,
    pub card_number: String,
}

/// Start channel-accounting reading this Redis prefix's streams; returns its
/// base URL, database URL and a city operator's bearer token.
pub async fn spawn_accounting(redis_prefix: &str) -> (String, String, String) {
    let database_url = jyt_testkit::fresh_database("accounting").await;
    let p = "JYT_CHANNEL_ACCOUNTING__";
    let password = "city-ops-test-password";
    let hash = channel_accounting::auth::hash_password_with(password, 1024, 1).expect("hashing a password");
    let settings = channel_accounting::Settings::load_from(&sources(vec![
        (format!("{p}HTTP__PORT"), "0".to_owned()),
        (format!("{p}HTTP__WORKERS"), "1".to_owned()),
        (format!("{p}POSTGRES__URL"), database_url.clone()),
        (format!("{p}REDIS__URLS"), jyt_testkit::redis_url()),
        (format!("{p}REDIS__KEY_PREFIX"), redis_prefix.to_owned()),
        (format!("{p}CONSUMER__NAME"), "test-consumer".to_owned()),
        (format!("{p}OPERATORS__DEMO_ACCOUNT"), "false".to_owned()),
        (format!("{p}OPERATORS__ACCOUNTS__CITY_OPS__PASSWORD_HASH"), hash),
        (
            format!("{p}OPERATORS__ACCOUNTS__CITY_OPS__ROLE"),
            "city".to_owned(),
        ),
    ]))
    .expect("channel-accounting test settings");
    let app = channel_accounting::Application::build(settings)
        .await
        .expect("channel-accounting starts");
    let url = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    let login: serde_json::Value = reqwest::Client::new()
        .post(format!("{url}/v1/operators/login"))
        .json(&serde_json::json!({ "login": "city_ops", "password": password }))
        .send()
        .await
        .expect("channel-accounting login")
        .json()
        .await
        .expect("a login answer");
    let token = login["token"].as_str().expect("a session token").to_owned();
    (url, database_url, token)
}

/// The password of every operator [`spawn_console`] seeds.
pub const CONSOLE_PASSWORD: &str = "console-ops-test-password";

/// The test gateway's master secret (its default, accepted in tests): the
/// console's relay key is derived from it as a deployment would.
pub const GATEWAY_MASTER_SECRET: &str = "demo-internal-master-OACaUc5IYpMnFt8Rmg8IpdpDo8ILNPY";

/// channel-accounting as the operators' console, with the gateway relay
/// (`gateway.url`) pointing at `gateway_url`; operators `city_ops` (city)
/// and `<hospital>_ops` for each of `hospitals`, all with
/// [`CONSOLE_PASSWORD`].
pub struct TestConsole {
    pub url: String,
    pub database_url: String,
    pub http: reqwest::Client,
}

pub async fn spawn_console(redis_prefix: &str, gateway_url: &str, hospitals: &[&str]) -> TestConsole {
    spawn_console_on(redis_prefix, Some(gateway_url), hospitals).await
}

/// [`spawn_console`] before the gateway exists (`gateway_url` None: no
/// relay), for a gateway that must know the console's survey door
/// (`CHANNEL_ACCOUNTING__BASE_URL` = [`TestConsole::url`]). The door takes
/// the test gateway's tokens: its key derives from [`GATEWAY_MASTER_SECRET`].
pub async fn spawn_console_on(
    redis_prefix: &str,
    gateway_url: Option<&str>,
    hospitals: &[&str],
) -> TestConsole {
    let database_url = jyt_testkit::fresh_database("console").await;
    let p = "JYT_CHANNEL_ACCOUNTING__";
    let hash =
        channel_accounting::auth::hash_password_with(CONSOLE_PASSWORD, 1024, 1).expect("hashing a password");
    let ops_key = jyt_signing::internal::derive_key(
        GATEWAY_MASTER_SECRET.as_bytes(),
        jyt_signing::internal::GATEWAY_OPS,
    );
    let mut env = vec![
        (format!("{p}HTTP__PORT"), "0".to_owned()),
        (format!("{p}HTTP__WORKERS"), "1".to_owned()),
        (format!("{p}POSTGRES__URL"), database_url.clone()),
        (format!("{p}REDIS__URLS"), jyt_testkit::redis_url()),
        (format!("{p}REDIS__KEY_PREFIX"), redis_prefix.to_owned()),
        (format!("{p}CONSUMER__NAME"), "test-console".to_owned()),
        (format!("{p}OPERATORS__DEMO_ACCOUNT"), "false".to_owned()),
        (
            format!("{p}GATEWAY__URL"),
            gateway_url.unwrap_or_default().to_owned(),
        ),
        (format!("{p}GATEWAY__OPS_KEY"), ops_key),
        (
            format!("{p}INTERNAL_AUTH__MASTER_SECRET"),
            GATEWAY_MASTER_SECRET.to_owned(),
        ),
        (
            format!("{p}OPERATORS__ACCOUNTS__CITY_OPS__PASSWORD_HASH"),
            hash.clone(),
        ),
        (
            format!("{p}OPERATORS__ACCOUNTS__CITY_OPS__ROLE"),
            "city".to_owned(),
        ),
    ];
    for h in hospitals {
        let a = format!("{p}OPERATORS__ACCOUNTS__{}_OPS__", h.to_ascii_uppercase());
        env.push((format!("{a}PASSWORD_HASH"), hash.clone()));
        env.push((format!("{a}ROLE"), "hospital".to_owned()));
        env.push((format!("{a}HOSPITAL_ID"), (*h).to_owned()));
    }
    let settings = channel_accounting::Settings::load_from(&sources(env)).expect("console test settings");
    let app = channel_accounting::Application::build(settings)
        .await
        .expect("channel-accounting starts");
    let url = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    TestConsole {
        url,
        database_url,
        http: reqwest::Client::new(),
    }
}

impl TestConsole {
    /// A session token for `login`.
    pub async fn login(&self, login: &str) -> String {
        let answer: serde_json::Value = self
            .http
            .post(format!("{}/v1/operators/login", self.url))
            .json(&serde_json::json!({ "login": login, "password": CONSOLE_PASSWORD }))
            .send()
            .await
            .expect("console login")
            .json()
            .await
            .expect("a login answer");
        answer["token"].as_str().expect("a session token").to_owned()
    }

    /// `GET path` as the operator holding `token`: the JSON body if the
    /// answer is 200 (for polling with a deadline).
    pub async fn json(&self, token: &str, path: &str) -> Option<serde_json::Value> {
        let res = self.call(Some(token), Method::GET, path, None).await;
        if res.status() != 200 {
            return None;
        }
        res.json().await.ok()
    }

    /// `method path` as the operator holding `token` (`None`: no session).
    pub async fn call(
        &self,
        token: Option<&str>,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> reqwest::Response {
        let mut req = self.http.request(method, format!("{}{path}", self.url));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send().await.expect("a console answer")
    }
}

/// Start card-issuing on this Redis prefix.
pub async fn spawn_cards(redis_prefix: &str) -> TestCards {
    let database_url = jyt_testkit::fresh_database("cards").await;
    let p = "JYT_CARD_ISSUING__";
    let settings = card_issuing::Settings::load_from(&sources(vec![
        (format!("{p}HTTP__PORT"), "0".to_owned()),
        (format!("{p}HTTP__WORKERS"), "2".to_owned()),
        (format!("{p}POSTGRES__URL"), database_url.clone()),
        (format!("{p}REDIS__URLS"), jyt_testkit::redis_url()),
        (format!("{p}REDIS__KEY_PREFIX"), redis_prefix.to_owned()),
    ]))
    .expect("card-issuing test settings");
    let http = jyt_testkit::internal_client(&settings.internal_auth, jyt_signing::internal::CARD_ISSUING);
    let app = card_issuing::Application::build(settings)
        .await
        .expect("card-issuing starts");
    let base_url = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    TestCards {
        base_url,
        database_url,
        http,
        cards: Mutex::new(HashMap::new()),
    }
}

/// A hospital in a test gateway's registry.
pub struct Route<'a> {
    pub id: &'a str,
    pub base_url: &'a str,
    pub district: &'a str,
    pub level: &'a str,
}

/// Settings every test gateway gets: one app per channel, limits generous
/// enough that only the tests about limits meet them.
fn gateway_env(
    routes: &[Route<'_>],
    redis_prefix: &str,
    cards_url: &str,
    timeout_ms: u64,
) -> Vec<(String, String)> {
    let p = "JYT_GATEWAY__";
    let mut env: Vec<(String, String)> = [
        ("HTTP__PORT", "0".to_owned()),
        ("HTTP__WORKERS", "2".to_owned()),
        ("UPSTREAM__TIMEOUT_MS", timeout_ms.to_string()),
        ("REDIS__URLS", jyt_testkit::redis_url()),
        ("REDIS__KEY_PREFIX", redis_prefix.to_owned()),
        ("CARD_ISSUING__BASE_URL", cards_url.to_owned()),
        // No survey door unless a test starts one (`spawn_console_on`):
        // port 9 (discard), never a channel-accounting `jyt up` left running.
        ("CHANNEL_ACCOUNTING__BASE_URL", "http://127.0.0.1:9".to_owned()),
        ("LIMITS__APP_PER_MINUTE", "1000000".to_owned()),
        ("LIMITS__APP_BURST", "100000".to_owned()),
        ("LIMITS__ADDRESS_PER_MINUTE", "1000000".to_owned()),
        ("LIMITS__ADDRESS_BURST", "100000".to_owned()),
        ("LIMITS__PERSON_PER_MINUTE", "600".to_owned()),
        ("LIMITS__PERSON_BURST", "100".to_owned()),
        // The clock decides whether a release window is open; the tests
        // that are not about it must not depend on the time they run at.
        ("ANTI_SCALPING__RELEASE_PERSON_PER_MINUTE", "600".to_owned()),
        ("ANTI_SCALPING__RELEASE_PERSON_BURST", "100".to_owned()),
        ("ANTI_SCALPING__MAX_PERSONS_PER_ADDRESS", "1000000".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (format!("{p}{k}"), v))
    .collect();
    for channel in TEST_CHANNELS {
        let a = format!("{p}CHANNEL_APPS__{}__", channel.to_ascii_uppercase());
        env.push((format!("{a}CHANNEL"), channel.to_owned()));
        env.push((format!("{a}SECRET"), TEST_APP_SECRET.to_owned()));
    }
    for r in routes {
        let h = format!("{p}HOSPITALS__{}__", r.id.to_ascii_uppercase());
        env.push((format!("{h}NAME"), format!("Hospital {}", r.id)));
        env.push((format!("{h}BASE_URL"), r.base_url.to_owned()));
        env.push((format!("{h}DISTRICT"), r.district.to_owned()));
        env.push((format!("{h}LEVEL"), r.level.to_owned()));
    }
    env
}

/// Start a gateway with the test apps; `extra` overrides any setting
/// (`("LIMITS__PERSON_BURST", "2")`, without the `JYT_GATEWAY__` prefix).
pub async fn spawn_gateway_with(
    routes: &[Route<'_>],
    redis_prefix: &str,
    cards_url: &str,
    timeout_ms: u64,
    extra: &[(&str, &str)],
) -> String {
    start_gateway(routes, redis_prefix, cards_url, timeout_ms, extra)
        .await
        .url
}

/// A gateway a test can stop, with its notifier, as a crash would.
pub struct RunningGateway {
    pub url: String,
    handle: actix_web::dev::ServerHandle,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningGateway {
    /// Stop at once (no graceful shutdown): requests and notices in flight
    /// are cut off; returns once the server and its notifier are stopped.
    pub async fn kill(self) {
        self.handle.stop(false).await;
        let _ended = self.task.await;
    }
}

/// [`spawn_gateway_with`], keeping what it takes to stop the gateway.
pub async fn start_gateway(
    routes: &[Route<'_>],
    redis_prefix: &str,
    cards_url: &str,
    timeout_ms: u64,
    extra: &[(&str, &str)],
) -> RunningGateway {
    start_gateway_on(routes, redis_prefix, cards_url, timeout_ms, extra, Clock::System).await
}

/// [`start_gateway`], its notices falling due on the hospitals' `clock`.
pub async fn start_gateway_on(
    routes: &[Route<'_>],
    redis_prefix: &str,
    cards_url: &str,
    timeout_ms: u64,
    extra: &[(&str, &str)],
    clock: Clock,
) -> RunningGateway {
    let mut env = gateway_env(routes, redis_prefix, cards_url, timeout_ms);
    env.extend(
        extra
            .iter()
            .map(|(k, v)| (format!("JYT_GATEWAY__{k}"), (*v).to_owned())),
    );
    let settings = gateway::Settings::load_from(&sources(env)).expect("gateway test settings");
    let app = gateway::Application::build_with_clock(settings, clock)
        .await
        .expect("gateway starts");
    let url = format!("http://127.0.0.1:{}", app.port());
    let handle = app.server_handle();
    let task = tokio::spawn(app.run_until_stopped());
    RunningGateway { url, handle, task }
}

/// Start a gateway routing to the given hospital base URLs (no patient
/// index: enough for requests that name no patient).
pub async fn spawn_gateway(routes: &[(&str, &str)], timeout_ms: u64) -> String {
    let routes: Vec<Route<'_>> = routes
        .iter()
        .map(|(id, url)| Route {
            id,
            base_url: url,
            district: "dongcheng",
            level: "tertiary",
        })
        .collect();
    spawn_gateway_with(
        &routes,
        &jyt_testkit::fresh_redis_prefix(),
        "http://127.0.0.1:9",
        timeout_ms,
        &[],
    )
    .await
}

/// Sign a request as the test app of `channel`: adds X-App-Id, X-Timestamp,
/// X-Nonce and X-Signature over `body` (what the caller sends).
pub fn sign(
    req: reqwest::RequestBuilder,
    channel: &str,
    method: &Method,
    path_and_query: &str,
    body: &[u8],
) -> reqwest::RequestBuilder {
    let h = jyt_signing::channel::sign_request(
        channel,
        TEST_APP_SECRET.as_bytes(),
        method.as_str(),
        path_and_query,
        body,
        Utc::now().timestamp(),
        &jyt_signing::channel::new_nonce(),
    );
    h.pairs().into_iter().fold(req, |r, (k, v)| r.header(k, v))
}

/// A signed request to `base` + `path_and_query`, with `body` as JSON.
pub fn signed(
    http: &reqwest::Client,
    base: &str,
    channel: &str,
    method: Method,
    path_and_query: &str,
    body: Option<&serde_json::Value>,
) -> reqwest::RequestBuilder {
    let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
    // Sign what goes on the wire: the URL as the client percent-encodes it.
    let url = reqwest::Url::parse(&format!("{base}{path_and_query}")).expect("a valid URL");
    let path_and_query = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    };
    let path_and_query = path_and_query.as_str();
    let mut req = http.request(method.clone(), url.clone());
    if body.is_some() {
        req = req.header("content-type", "application/json").body(bytes.clone());
    }
    sign(req, channel, &method, path_and_query, &bytes)
}

/// A valid 18-character resident ID number, random enough never to collide.
pub fn random_id_number() -> String {
    let n = Uuid::new_v4().as_u128();
    let day = i64::try_from(n % 10_000).unwrap();
    let birth = NaiveDate::from_ymd_opt(1960, 1, 1).unwrap() + chrono::Duration::days(day);
    let seq = (n >> 20) % 1000;
    let first17 = format!("110105{}{seq:03}", birth.format("%Y%m%d"));
    let check = card_issuing::identity::id_check_char(first17.as_bytes()).unwrap();
    format!("{first17}{}", char::from(check))
}

impl TestCards {
    /// Register a person and give them an e-card.
    /// A card's view at card-issuing (balance, status, ...).
    pub async fn card(&self, card_id: Uuid) -> serde_json::Value {
        self.get(&format!("/v1/cards/{card_id}")).await
    }

    /// A card's ledger at card-issuing (`entries`, `balance_fen`).
    pub async fn ledger(&self, card_id: Uuid) -> serde_json::Value {
        self.get(&format!("/v1/cards/{card_id}/ledger")).await
    }

    async fn get(&self, path: &str) -> serde_json::Value {
        self.http
            .get(format!("{}{path}", self.base_url))
            .send()
            .await
            .expect("card-issuing answers")
            .json()
            .await
            .expect("a JSON answer")
    }

    pub async fn register(&self) -> TestPatient {
        for _attempt in 0..100 {
            let res = self
                .http
                .post(format!("{}/v1/persons", self.base_url))
                .json(&serde_json::json!({
                    "name": "测试患者",
                    "id_number": random_id_number(),
                    "phone": format!("139{:08}", Uuid::new_v4().as_u128() % 100_000_000),
                }))
                .send()
                .await
                .expect("card-issuing answers");
            // 200 means the random ID number was someone's already: draw
            // again; 503 that card-issuing's pool was briefly exhausted by a
            // test's surge on a loaded machine: try again.
            if res.status() != 201 {
                assert!(
                    res.status() == 200 || res.status() == 503,
                    "registration: {}",
                    res.status()
                );
                continue;
            }
            let person: serde_json::Value = res.json().await.unwrap();
            let person_id: Uuid = person["person_id"].as_str().unwrap().parse().unwrap();
            let res = self
                .http
                .post(format!("{}/v1/persons/{person_id}/cards", self.base_url))
                .header("Idempotency-Key", format!("card-{person_id}"))
                .json(&serde_json::json!({ "kind": "ecard", "channel": "kiosk" }))
                .send()
                .await
                .expect("card-issuing answers");
            assert_eq!(res.status(), 201, "card issued");
            let card: serde_json::Value = res.json().await.unwrap();
            let patient = TestPatient {
                person_id,
                card_id: card["card_id"].as_str().unwrap().parse().unwrap(),
                card_number: card["card_number"].as_str().unwrap().to_owned(),
            };
            self.cards
                .lock()
                .unwrap()
                .insert(person_id, patient.card_number.clone());
            return patient;
        }
        unreachable!("card-issuing refused 100 registrations in a row")
    }

    /// Register `n` patients, a few at a time.
    pub async fn register_many(&self, n: usize) -> Vec<TestPatient> {
        futures::stream::iter(0..n)
            .map(|_| self.register())
            .buffer_unordered(16)
            .collect()
            .await
    }

    pub fn card_of(&self, person: Uuid) -> String {
        self.cards
            .lock()
            .unwrap()
            .get(&person)
            .cloned()
            .expect("the patient was registered through TestCards::register")
    }

    /// A fresh e-card QR token for the patient's card.
    pub async fn ecard_token(&self, patient: &TestPatient) -> String {
        let res = self
            .http
            .post(format!(
                "{}/v1/cards/{}/ecard-token",
                self.base_url, patient.card_id
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let body: serde_json::Value = res.json().await.unwrap();
        body["token"].as_str().unwrap().to_owned()
    }

    /// Bind `member` (an adult) to `holder` as a family member, as the
    /// member confirms it: with the one-time code card-issuing makes (here
    /// read from its answer to jyt's tools, as the gateway would send it).
    pub async fn bind_family(&self, holder: Uuid, member: Uuid) {
        let res = self
            .http
            .post(format!(
                "{}/v1/persons/{holder}/family/verifications",
                self.base_url
            ))
            .json(&serde_json::json!({ "member_id": member, "relationship": "parent" }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201, "verification started");
        let started: serde_json::Value = res.json().await.unwrap();
        let res = self
            .http
            .post(format!(
                "{}/v1/family-verifications/{}/confirm",
                self.base_url,
                started["verification_id"].as_str().unwrap()
            ))
            .json(&serde_json::json!({ "code": started["code"] }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    }

    /// Bar a person until `until`, as three no-shows would (written
    /// straight into card-issuing's database: the no-show path is
    /// card-issuing's own test's business).
    pub async fn bar(&self, person: Uuid, until: chrono::DateTime<Utc>) {
        let (client, connection) =
            jyt_db::tokio_postgres::connect(&self.database_url, jyt_db::tokio_postgres::NoTls)
                .await
                .unwrap();
        tokio::spawn(connection);
        client
            .execute(
                "INSERT INTO bars (id, person_id, barred_at, barred_until, window_end)
                 VALUES ($1, $2, now(), $3, current_date)",
                &[&Uuid::new_v4(), &person, &until],
            )
            .await
            .unwrap();
    }
}

impl TestCity {
    pub async fn spawn(hospital_ids: &[&str]) -> Self {
        Self::spawn_with(hospital_ids, &[]).await
    }

    /// A city whose gateway has `extra` settings (see [`spawn_gateway_with`]).
    pub async fn spawn_with(hospital_ids: &[&str], extra: &[(&str, &str)]) -> Self {
        Self::spawn_configured(hospital_ids, extra, &[]).await
    }

    /// A city whose gateway has `gateway_extra` settings and whose
    /// hospitals have `hospital_extra` ones (keys after
    /// `JYT_SLOT_INVENTORY__`, e.g. `POLICY__HOLD_MINUTES`).
    pub async fn spawn_configured(
        hospital_ids: &[&str],
        gateway_extra: &[(&str, &str)],
        hospital_extra: &[(&str, &str)],
    ) -> Self {
        Self::spawn_with_clock(hospital_ids, gateway_extra, hospital_extra, Clock::System).await
    }

    /// As [`TestCity::spawn_configured`], the hospitals' time from `clock`
    /// (a [`Clock::manual`] stands at a release instant, then moves past a
    /// lottery's window, without sleeping).
    pub async fn spawn_with_clock(
        hospital_ids: &[&str],
        gateway_extra: &[(&str, &str)],
        hospital_extra: &[(&str, &str)],
        clock: Clock,
    ) -> Self {
        let prefix = jyt_testkit::fresh_redis_prefix();
        Self::spawn_in(&prefix, hospital_ids, gateway_extra, hospital_extra, &clock).await
    }

    /// [`Self::spawn_configured`] on a Redis prefix the test chose (to
    /// start channel-accounting on it first), its hospitals on `clock`.
    pub async fn spawn_in(
        prefix: &str,
        hospital_ids: &[&str],
        gateway_extra: &[(&str, &str)],
        hospital_extra: &[(&str, &str)],
        clock: &Clock,
    ) -> Self {
        let extra = gateway_extra;
        let prefix = prefix.to_owned();
        let mut hospitals = Vec::new();
        for id in hospital_ids {
            hospitals.push(TestHospital::spawn_with(id, &prefix, hospital_extra, clock.clone()).await);
        }
        let cards = spawn_cards(&prefix).await;
        let routes: Vec<Route<'_>> = hospitals
            .iter()
            .map(|h| Route {
                id: h.id.as_str(),
                base_url: h.base_url.as_str(),
                district: "dongcheng",
                level: "tertiary",
            })
            .collect();
        // The gateway on the hospitals' clock too: its notices fall due by it.
        let gateway_url = start_gateway_on(&routes, &prefix, &cards.base_url, 3000, extra, clock.clone())
            .await
            .url;
        Self {
            gateway_url,
            hospitals,
            http: reqwest::Client::new(),
            redis_prefix: prefix,
            cards,
        }
    }

    /// A city whose gateway also routes to `dead` hospitals: registered,
    /// but nothing listens at their address (port 9, discard), as a
    /// hospital that is down.
    pub async fn spawn_with_dead(
        hospital_ids: &[&str],
        dead: &[&str],
        gateway_extra: &[(&str, &str)],
    ) -> Self {
        let prefix = jyt_testkit::fresh_redis_prefix();
        let mut hospitals = Vec::new();
        for id in hospital_ids {
            hospitals.push(TestHospital::spawn_with(id, &prefix, &[], Clock::System).await);
        }
        let cards = spawn_cards(&prefix).await;
        let routes: Vec<Route<'_>> = hospitals
            .iter()
            .map(|h| (h.id.as_str(), h.base_url.as_str()))
            .chain(dead.iter().map(|id| (*id, "http://127.0.0.1:9")))
            .map(|(id, base_url)| Route {
                id,
                base_url,
                district: "dongcheng",
                level: "tertiary",
            })
            .collect();
        let gateway_url = spawn_gateway_with(&routes, &prefix, &cards.base_url, 3000, gateway_extra).await;
        Self {
            gateway_url,
            hospitals,
            http: reqwest::Client::new(),
            redis_prefix: prefix,
            cards,
        }
    }

    pub fn hospital(&self, i: usize) -> &TestHospital {
        &self.hospitals[i]
    }

    /// A service's `/metrics` text (`base`: its address).
    pub async fn metrics_text(&self, base: &str) -> String {
        self.http
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The sum of a counter's series on a service's `/metrics` (`base`: its
    /// address) whose labels contain every one of `labels` (e.g.
    /// `route="/v1/bookings"`); 0 when none is there.
    pub async fn counter_sum(&self, base: &str, name: &str, labels: &[&str]) -> u64 {
        jyt_testkit::counter_sum(&self.metrics_text(base).await, name, labels)
    }

    /// A newly registered patient with a card; their person id.
    pub async fn patient(&self) -> Uuid {
        self.cards.register().await.person_id
    }

    /// A signed request to the gateway as the test app of `channel`.
    pub fn signed(
        &self,
        channel: &str,
        method: Method,
        path_and_query: &str,
        body: Option<&serde_json::Value>,
    ) -> reqwest::RequestBuilder {
        signed(
            &self.http,
            &self.gateway_url,
            channel,
            method,
            path_and_query,
            body,
        )
    }

    /// Book for a patient registered with [`TestCity::patient`], naming
    /// them by their card, signed as the channel's app.
    pub async fn book(&self, slot: &SlotRef, patient: Uuid, channel: &str, key: &str) -> reqwest::Response {
        let body = serde_json::json!({
            "slot_id": slot.to_string(),
            "card_number": self.cards.card_of(patient),
        });
        self.book_with(channel, key, &body).await
    }

    /// Book with any body (signed as `channel`'s app).
    pub async fn book_with(&self, channel: &str, key: &str, body: &serde_json::Value) -> reqwest::Response {
        self.signed(channel, Method::POST, "/v1/bookings", Some(body))
            .header("Idempotency-Key", key)
            .send()
            .await
            .expect("gateway answers")
    }

    /// Pay a held booking's fee through `channel`'s own payment, as its
    /// payment notification does; answers the gateway's reply.
    pub async fn pay(&self, channel: &str, booking: &serde_json::Value) -> reqwest::Response {
        let id = booking["booking_id"].as_str().expect("a booking id");
        let body = serde_json::json!({
            "payment_method": "self_pay",
            "payment_reference": format!("tx{}", Uuid::new_v4().simple()),
            "amount_fen": booking["fee_fen"],
        });
        self.signed(
            channel,
            Method::POST,
            &format!("/v1/bookings/{id}/payments"),
            Some(&body),
        )
        .send()
        .await
        .expect("gateway answers")
    }

    /// Join `schedule`'s waitlist at `hospital` as `channel`'s app, the
    /// patient named by their card; answers the gateway's reply.
    pub async fn join_waitlist(
        &self,
        channel: &str,
        hospital: &str,
        schedule: &str,
        card_number: &str,
    ) -> reqwest::Response {
        self.signed(
            channel,
            Method::POST,
            &format!("/v1/hospitals/{hospital}/schedules/{schedule}/waitlist"),
            Some(&serde_json::json!({ "card_number": card_number })),
        )
        .send()
        .await
        .expect("gateway answers")
    }

    pub async fn get_booking(&self, booking_id: &str) -> reqwest::Response {
        self.signed("wechat", Method::GET, &format!("/v1/bookings/{booking_id}"), None)
            .send()
            .await
            .expect("gateway answers")
    }

    pub async fn schedules(&self, hospital: &HospitalId, date: NaiveDate) -> DaySchedules {
        let res = self
            .signed(
                "wechat",
                Method::GET,
                &format!("/v1/hospitals/{hospital}/schedules?date={date}"),
                None,
            )
            .send()
            .await
            .expect("gateway answers");
        assert_eq!(res.status(), 200);
        res.json().await.unwrap()
    }
}

/// The problem+json body of an error answer, checked for its content type.
pub async fn problem(res: reqwest::Response) -> serde_json::Value {
    let ct = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    assert_eq!(ct, "application/problem+json", "error answers are problem+json");
    res.json().await.unwrap()
}

// A pending appeal, for the console's tests: every step through the gateway.

async fn signed_call(
    city: &TestCity,
    method: Method,
    path: &str,
    body: Option<&serde_json::Value>,
) -> (u16, serde_json::Value) {
    let res = city.signed("wechat", method, path, body).send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(serde_json::Value::Null))
}

/// A patient of `h` with a no-show and a pending appeal against it,
/// all through the gateway as the WeChat app; the appeal's id.
pub async fn pending_appeal(city: &TestCity, h: &TestHospital, slot: &SlotRef, key: &str) -> String {
    let seq = Uuid::new_v4().as_u128() % 1000;
    let first17 = format!("11010519800101{seq:03}");
    let check = jyt_domain::id_number::id_check_char(first17.as_bytes()).unwrap();
    let id_number = format!("{first17}{}", char::from(check));
    let body = serde_json::json!({ "name": "李四", "id_number": id_number, "phone": "13912345678" });
    let (status, person) = signed_call(city, Method::POST, "/v1/patients", Some(&body)).await;
    assert_eq!(status, 201, "{person}");
    let person = person["person_id"].as_str().unwrap().to_owned();
    let res = city
        .signed(
            "wechat",
            Method::POST,
            &format!("/v1/patients/{person}/ecard"),
            None,
        )
        .header("Idempotency-Key", Uuid::new_v4().to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let card: serde_json::Value = res.json().await.unwrap();
    let res = city
        .book_with(
            "wechat",
            key,
            &serde_json::json!({ "slot_id": slot.to_string(), "card_number": card["card_number"] }),
        )
        .await;
    assert_eq!(res.status(), 201);
    let booking: serde_json::Value = res.json().await.unwrap();
    if booking["status"] == "held" {
        assert_eq!(city.pay("wechat", &booking).await.status(), 200);
    }
    // The visit passes unattended: the hospital's sweeper marks the no-show.
    h.sql(&format!(
        "UPDATE segments SET starts_at = now() - interval '3 hours', ends_at = now() - interval '2 hours' WHERE id = '{}'",
        slot.id
    ))
    .await;
    let standing = format!("/v1/patients/{person}/standing");
    let event = jyt_testkit::eventually(
        std::time::Duration::from_secs(20),
        "the no-show counted",
        || async {
            let (_, s) = signed_call(city, Method::GET, &standing, None).await;
            s["no_shows"][0]["event_id"].as_str().map(str::to_owned)
        },
    )
    .await;
    let (status, appeal) = signed_call(
        city,
        Method::POST,
        &format!("/v1/patients/{person}/appeals"),
        Some(&serde_json::json!({ "no_show_event_id": event, "reason": "路上堵车" })),
    )
    .await;
    assert_eq!(
        (status, appeal["status"].as_str()),
        (201, Some("pending")),
        "{appeal}"
    );
    appeal["appeal_id"].as_str().unwrap().to_owned()
}

impl TestCity {
    /// See [`pending_appeal`].
    pub async fn pending_appeal(&self, h: &TestHospital, slot: &SlotRef, key: &str) -> String {
        pending_appeal(self, h, slot, key).await
    }
}

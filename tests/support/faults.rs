//! Process-level faults without touching the machine's shared servers:
//! private Redis and PostgreSQL processes on free ports that a test may
//! kill and start again, hospitals and gateways wired to them, a booking
//! surge that behaves like patients (retrying on 503), and the two
//! invariants every fault test ends with, read from PostgreSQL.

use std::collections::{BTreeMap, HashMap};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use jyt_cache::redis;
use jyt_domain::SlotRef;
use jyt_domain::time::Clock;
use uuid::Uuid;

use crate::city::{Route, TestCards, spawn_cards, spawn_gateway_with};
use crate::hospital::TestHospital;
use crate::sources;

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("a local address").port()
}

fn scratch_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("jyt-fault-{what}-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    dir
}

/// `name` on PATH, else the newest under /usr/lib/postgresql/*/bin (where
/// Debian keeps initdb and pg_ctl).
fn find_binary(name: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    // Versions compare numerically, part by part (`9.6` < `15` < `17`).
    let mut versions: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version: Vec<u32> = e
                .file_name()
                .to_str()?
                .split('.')
                .map(|part| part.parse().ok())
                .collect::<Option<_>>()?;
            let candidate = e.path().join("bin").join(name);
            candidate.is_file().then_some((version, candidate))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, p)| p)
}

/// Under CI (`CI` set, and not `false` or `0`) a fault test must run: a
/// missing server binary is a failure there, never a quiet pass.
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| {
        let v = v.trim();
        !v.is_empty() && !v.eq_ignore_ascii_case("false") && v != "0"
    })
}

/// `missing` was not found where `looked`: under CI the test fails naming
/// it and the package to install; elsewhere it is skipped with the same
/// message.
fn unavailable(missing: &str, looked: &str, package: &str, consequence: &str) {
    let message = format!(
        "cannot find {missing} (looked {looked}), so {consequence}; \
         install it with `apt-get install {package}` (scripts/test.sh does so as root)"
    );
    assert!(!in_ci(), "fault test cannot run under CI=true: {message}");
    eprintln!("skipped (not under CI): {message}");
}

/// A private `redis-server` without persistence: killed and started again,
/// it comes back empty, as a crashed production Redis without AOF would.
pub struct PrivateRedis {
    pub port: u16,
    binary: PathBuf,
    dir: PathBuf,
    child: Option<Child>,
}

impl PrivateRedis {
    /// `None` (and a message) when redis-server is not installed; under CI
    /// that is a failure instead.
    pub async fn start() -> Option<Self> {
        let Some(binary) = find_binary("redis-server") else {
            unavailable(
                "redis-server",
                "on PATH",
                "redis-server",
                "Redis cannot be killed privately",
            );
            return None;
        };
        let mut redis = Self {
            port: free_port(),
            binary,
            dir: scratch_dir("redis"),
            child: None,
        };
        redis.restart().await;
        Some(redis)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: no shutdown, no save.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("killing redis-server");
            child.wait().expect("reaping redis-server");
        }
    }

    /// Start (again) on the same port, empty; returns once it answers PING.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "Redis is still running");
        let child = Command::new(&self.binary)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting redis-server");
        self.child = Some(child);
        let url = self.url();
        jyt_testkit::eventually(Duration::from_secs(30), "the private Redis to answer", || {
            let url = url.clone();
            async move {
                let client = redis::Client::open(url).ok()?;
                let mut conn = client.get_multiplexed_async_connection().await.ok()?;
                redis::cmd("PING").query_async::<String>(&mut conn).await.ok()
            }
        })
        .await;
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
        let _ignored = std::fs::remove_dir_all(&self.dir);
    }
}

/// A private PostgreSQL cluster (trust auth, fsync off) that a test may
/// stop abruptly (`pg_ctl stop -m immediate`, a crash as far as clients
/// see) and start again with its data.
pub struct PrivatePostgres {
    pub port: u16,
    dir: PathBuf,
    pg_ctl: PathBuf,
    as_postgres: bool,
}

impl PrivatePostgres {
    /// `None` (and a message) when PostgreSQL's server binaries are absent;
    /// under CI that is a failure instead.
    pub async fn start() -> Option<Self> {
        let (Some(initdb), Some(pg_ctl)) = (find_binary("initdb"), find_binary("pg_ctl")) else {
            let missing: Vec<&str> = ["initdb", "pg_ctl"]
                .into_iter()
                .filter(|name| find_binary(name).is_none())
                .collect();
            unavailable(
                &format!("PostgreSQL's {}", missing.join(" and ")),
                "on PATH and under /usr/lib/postgresql/<version>/bin",
                "postgresql",
                "PostgreSQL cannot be stopped privately",
            );
            return None;
        };
        let dir = scratch_dir("postgres");
        // initdb refuses to run as root: the cluster belongs to `postgres`.
        let as_postgres = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        if as_postgres {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .expect("chown");
            assert!(status.success(), "chown of the private PostgreSQL directory");
        }
        let data = dir.join("data");
        let pg = Self {
            port: free_port(),
            dir,
            pg_ctl,
            as_postgres,
        };
        let status = pg
            .command(&initdb)
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("running initdb");
        assert!(status.success(), "initdb of a private PostgreSQL");
        pg.restart().await;
        Some(pg)
    }

    fn command(&self, program: &Path) -> Command {
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        }
    }

    /// The server's admin URL (database `postgres`).
    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// A new empty database on this server; its URL.
    pub async fn fresh_database(&self, purpose: &str) -> String {
        let name = format!(
            "jyt_fault_{purpose}_{}",
            &Uuid::new_v4().simple().to_string()[..8]
        );
        jyt_db::ensure_database(&self.admin_url(), &name)
            .await
            .expect("a database on the private PostgreSQL");
        jyt_db::url_with_database(&self.admin_url(), &name)
    }

    /// Stop at once: connections drop, nothing is shut down cleanly.
    pub fn stop(&self) {
        let status = self
            .command(&self.pg_ctl)
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("running pg_ctl stop");
        assert!(status.success(), "pg_ctl stop");
    }

    /// Start on the same port with the same data; returns once it answers.
    pub async fn restart(&self) {
        let data = self.dir.join("data");
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off \
             -c max_connections=100",
            self.port,
            data.display()
        );
        let status = self
            .command(&self.pg_ctl)
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(self.dir.join("server.log"))
            .args(["-w", "-t", "60", "-o", &options, "start"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("running pg_ctl start");
        assert!(status.success(), "pg_ctl start of the private PostgreSQL");
        let admin = self.admin_url();
        jyt_testkit::eventually(
            Duration::from_secs(60),
            "the private PostgreSQL to answer",
            || {
                let admin = admin.clone();
                async move {
                    let (client, conn) =
                        jyt_db::tokio_postgres::connect(&admin, jyt_db::tokio_postgres::NoTls)
                            .await
                            .ok()?;
                    tokio::spawn(conn);
                    client.simple_query("SELECT 1").await.ok()
                }
            },
        )
        .await;
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _stopped = self
            .command(&self.pg_ctl)
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ignored = std::fs::remove_dir_all(&self.dir);
    }
}

/// A slot-inventory on the given PostgreSQL database and Redis.
pub async fn spawn_hospital_on(
    id: &str,
    redis_prefix: &str,
    database_url: String,
    redis_url: &str,
    extra: &[(&str, &str)],
) -> TestHospital {
    let p = "JYT_SLOT_INVENTORY__";
    let mut env = vec![
        (format!("{p}HOSPITAL__ID"), id.to_owned()),
        (format!("{p}HOSPITAL__NAME"), format!("Test hospital {id}")),
        (format!("{p}HTTP__PORT"), "0".to_owned()),
        (format!("{p}HTTP__WORKERS"), "2".to_owned()),
        (format!("{p}POSTGRES__URL"), database_url.clone()),
        (format!("{p}REDIS__URLS"), redis_url.to_owned()),
        (format!("{p}REDIS__KEY_PREFIX"), redis_prefix.to_owned()),
    ];
    env.extend(extra.iter().map(|(k, v)| (format!("{p}{k}"), (*v).to_owned())));
    let settings = slot_inventory::Settings::load_from(&sources(env)).expect("slot-inventory test settings");
    let app = slot_inventory::Application::build_with_clock(settings, Clock::System)
        .await
        .expect("slot-inventory starts");
    let base_url = format!("http://127.0.0.1:{}", app.port());
    let state = app.state().clone();
    tokio::spawn(app.run_until_stopped());
    TestHospital {
        id: id.parse().expect("a hospital id"),
        base_url,
        database_url,
        state,
    }
}

/// One hospital behind a gateway and card-issuing, where the hospital (and
/// the gateway, when `gateway_redis` is given) use servers a test may break.
pub struct FaultCity {
    pub hospital: TestHospital,
    pub cards: TestCards,
    pub gateway_url: String,
    pub http: reqwest::Client,
}

impl FaultCity {
    pub async fn spawn(hospital: TestHospital, redis_prefix: &str, gateway_extra: &[(&str, &str)]) -> Self {
        let cards = spawn_cards(redis_prefix).await;
        let routes = [Route {
            id: hospital.id.as_str(),
            base_url: &hospital.base_url,
            district: "dongcheng",
            level: "tertiary",
        }];
        let gateway_url =
            spawn_gateway_with(&routes, redis_prefix, &cards.base_url, 5000, gateway_extra).await;
        Self {
            hospital,
            cards,
            gateway_url,
            http: reqwest::Client::new(),
        }
    }

    pub async fn book(&self, slot: &SlotRef, person: Uuid, key: &str) -> reqwest::Result<reqwest::Response> {
        let body = serde_json::json!({
            "slot_id": slot.to_string(),
            "card_number": self.cards.card_of(person),
        });
        crate::signed(
            &self.http,
            &self.gateway_url,
            "kiosk",
            reqwest::Method::POST,
            "/v1/bookings",
            Some(&body),
        )
        .header("Idempotency-Key", key)
        .send()
        .await
    }
}

/// What the patients of a surge were told.
#[derive(Debug, Default)]
pub struct SurgeOutcome {
    /// Requests sent, retries included.
    pub requests: usize,
    /// person → (booking id, status) of the 201 answers (the last one).
    pub booked: HashMap<Uuid, (String, String)>,
    /// person → the booking ids of every 201 they got (retries must agree).
    pub booked_ids: HashMap<Uuid, Vec<String>>,
    /// Final refusals by code (SLOT_SOLD_OUT, ...).
    pub refused: BTreeMap<String, usize>,
    /// 503 answers by code, and how many lacked Retry-After.
    pub unavailable: BTreeMap<String, usize>,
    pub unavailable_without_retry_after: usize,
    /// Anything else: 500s, transport errors, unexpected statuses.
    pub unexpected: Vec<String>,
    /// Patients still undecided at the deadline.
    pub undecided: usize,
    /// When each 201 came.
    pub booked_at: Vec<Instant>,
}

/// Patients arriving `spacing` apart, each pressing "book" with their own
/// Idempotency-Key and retrying on 503 (as a channel app does, after a
/// short pause) until booked, refused, or `deadline` passes.
pub async fn surge(
    city: Arc<FaultCity>,
    slot: SlotRef,
    persons: Vec<Uuid>,
    spacing: Duration,
    deadline: Duration,
) -> SurgeOutcome {
    let outcome = Arc::new(Mutex::new(SurgeOutcome::default()));
    let started = Instant::now();
    let tasks = futures::stream::iter(persons.into_iter().enumerate())
        .map(|(i, person)| {
            let (city, slot, outcome) = (city.clone(), slot.clone(), outcome.clone());
            async move {
                let arrive = spacing * u32::try_from(i).unwrap_or(u32::MAX);
                tokio::time::sleep(arrive).await;
                let key = format!("surge-{person}");
                loop {
                    if started.elapsed() > deadline {
                        outcome.lock().unwrap().undecided += 1;
                        return;
                    }
                    let answer = city.book(&slot, person, &key).await;
                    outcome.lock().unwrap().requests += 1;
                    let res = match answer {
                        Ok(res) => res,
                        Err(e) => {
                            outcome.lock().unwrap().unexpected.push(format!("transport: {e}"));
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            continue;
                        }
                    };
                    let status = res.status().as_u16();
                    let retry_after = res.headers().contains_key("retry-after");
                    let body: serde_json::Value = res.json().await.unwrap_or_default();
                    let done = {
                        let mut o = outcome.lock().unwrap();
                        match status {
                            201 => {
                                let id = body["booking_id"].as_str().unwrap_or_default().to_owned();
                                let st = body["status"].as_str().unwrap_or_default().to_owned();
                                o.booked_ids.entry(person).or_default().push(id.clone());
                                o.booked.insert(person, (id, st));
                                o.booked_at.push(Instant::now());
                                true
                            }
                            409 if body["code"] == "SLOT_SOLD_OUT" => {
                                *o.refused.entry("SLOT_SOLD_OUT".to_owned()).or_default() += 1;
                                true
                            }
                            503 | 429 => {
                                let code = body["code"].as_str().unwrap_or("?").to_owned();
                                *o.unavailable.entry(code).or_default() += 1;
                                if !retry_after {
                                    o.unavailable_without_retry_after += 1;
                                }
                                false
                            }
                            409 if body["code"] == "REQUEST_IN_PROGRESS" => {
                                // The first attempt's hold is still being decided.
                                *o.unavailable.entry("REQUEST_IN_PROGRESS".to_owned()).or_default() += 1;
                                false
                            }
                            _ => {
                                o.unexpected.push(format!("{status} {body}"));
                                true
                            }
                        }
                    };
                    if done {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        })
        .buffer_unordered(usize::MAX);
    tasks.collect::<Vec<()>>().await;
    std::mem::take(&mut *outcome.lock().unwrap())
}

/// The two invariants, from PostgreSQL: no segment over capacity (nor a
/// seat sold twice or above capacity) and no pool over its share of the
/// segment, and every booking a patient was told of exists, for that
/// patient, in the state they were told. Returns (oversold, lost).
pub async fn check_invariants(h: &TestHospital, told: &HashMap<Uuid, (String, String)>) -> (usize, usize) {
    let oversold = h.oversold_segments().await;
    assert!(oversold.is_empty(), "oversold segments: {oversold:?}");
    let client = h.state.pool.get().await.unwrap();
    let pools = client
        .query(
            "SELECT b.segment_id, b.pool, count(*), seg.capacity FROM bookings b
               JOIN segments seg ON seg.id = b.segment_id
              WHERE b.status NOT IN ('cancelled', 'expired', 'stopped')
              GROUP BY b.segment_id, b.pool, seg.capacity",
            &[],
        )
        .await
        .unwrap();
    // Each pool against its own share, as the hospital's policy splits the
    // segment (channel shares rounded down, the rest common): a seat is
    // recorded in the pool it was drawn from, even after the merge, so no
    // pool ever holds more live bookings than its share (only a capacity
    // cut below the bookings could, and no fault test cuts capacity).
    let policy = &h.state.settings.policy;
    for row in &pools {
        let (segment, pool, n, capacity): (Uuid, String, i64, i32) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        let split = policy.pool_split(capacity);
        let share = split
            .iter()
            .find(|(name, _)| *name == pool)
            .map_or(0, |(_, seats)| *seats);
        assert!(
            n <= i64::from(share),
            "pool {pool} of segment {segment} has {n} live bookings, over its share of {share} \
             (capacity {capacity} split {split:?})"
        );
    }
    let mut lost = Vec::new();
    for (person, (booking, status)) in told {
        let booking_id: jyt_domain::BookingRef = booking.parse().unwrap();
        let row = client
            .query_opt(
                "SELECT patient_id, status FROM bookings WHERE id = $1",
                &[&booking_id.id],
            )
            .await
            .unwrap();
        match row {
            Some(r) if r.get::<_, Uuid>(0) == *person && r.get::<_, String>(1) == *status => {}
            other => lost.push(format!(
                "{person}: told {booking} {status}, PostgreSQL has {other:?}"
            )),
        }
    }
    assert!(
        lost.is_empty(),
        "bookings patients were told of are missing: {lost:?}"
    );
    (oversold.len(), lost.len())
}

/// Redis's holders of `slot` equal PostgreSQL's live bookings, eventually
/// (a rebuild or reload may still be running).
pub async fn redis_agrees(h: &TestHospital, slot: &SlotRef) {
    jyt_testkit::eventually(
        Duration::from_secs(60),
        "Redis to agree with PostgreSQL",
        || async {
            let (_, redis) = h.redis_segment(slot).await;
            (redis == h.pg_holders(slot).await).then_some(())
        },
    )
    .await;
}

/// Live bookings of a segment, from PostgreSQL, without panicking while
/// PostgreSQL is down.
pub async fn live_count(h: &TestHospital, slot: &SlotRef) -> Option<i64> {
    let client = h.state.pool.get().await.ok()?;
    let row = client
        .query_one(
            "SELECT count(*) FROM bookings WHERE segment_id = $1
                AND status NOT IN ('cancelled', 'expired', 'stopped')",
            &[&slot.id],
        )
        .await
        .ok()?;
    Some(row.get(0))
}

/// One line for the README's reliability table.
pub fn report(fault: &str, sent: usize, confirmed: usize, oversold: usize, lost: usize, recovery: Duration) {
    eprintln!(
        "reliability | {fault} | requests {sent} | booked {confirmed} | oversold {oversold} | lost {lost} | \
         recovered in {:.1} s",
        recovery.as_secs_f64()
    );
}

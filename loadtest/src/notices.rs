//! The channel apps' notice endpoint for a run: what a channel app does
//! with the gateway's notices (checks each one's signature with the app's
//! secret, answers 200), counting them by type and subject, so a scenario
//! can wait for the notices it owes and say which never came.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::city::{APP_SECRET, CHANNELS};

pub use gateway::notices::{HOLD_EXPIRING, REFUND_ISSUED, VISIT_REMINDER};
pub const CONFIRMED: &str = "booking.confirmed";
pub const CANCELLED: &str = "booking.cancelled";
pub const EXPIRED: &str = "booking.expired";
pub const NO_SHOW: &str = "booking.no_show";

/// The channel apps with a callback, told of their patients' bookings
/// (WeChat's and the city app's pushes, 114's text messages); the kiosk
/// and the window print their answers and poll.
pub const CALLBACK_CHANNELS: [&str; 3] = ["wechat", "app", "phone114"];

/// The gateway settings that point [`CALLBACK_CHANNELS`]' callbacks at `url`.
pub fn callbacks_to(url: &str) -> Vec<(String, String)> {
    CALLBACK_CHANNELS
        .iter()
        .map(|app| {
            (
                format!("CHANNEL_APPS__{}__CALLBACK_URL", app.to_ascii_uppercase()),
                url.to_owned(),
            )
        })
        .collect()
}

/// (notice type, subject): the subject is the booking, or a lottery
/// entry for `draw.lost`.
pub type NoticeKey = (String, String);

#[derive(Default)]
struct Received {
    by_key: HashMap<NoticeKey, u32>,
    total: u64,
    /// Refused: not signed by a known app with its secret.
    bad_signatures: u64,
}

/// A running endpoint; every app of the run may point its callback here.
pub struct Sink {
    /// `http://127.0.0.1:<port>/notices`.
    pub url: String,
    received: Arc<Mutex<Received>>,
    server: actix_web::dev::ServerHandle,
}

#[derive(Deserialize)]
struct Subject<'a> {
    #[serde(borrow, default)]
    booking_id: Option<&'a str>,
    #[serde(borrow, default)]
    entry_id: Option<&'a str>,
}

#[derive(Deserialize)]
struct Notice<'a> {
    #[serde(borrow)]
    event_type: &'a str,
    #[serde(borrow, default)]
    booking: Option<Subject<'a>>,
    #[serde(borrow, default)]
    refund: Option<Subject<'a>>,
    #[serde(borrow, default)]
    entry: Option<Subject<'a>>,
}

fn header<'a>(req: &'a HttpRequest, name: &str) -> &'a str {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

/// Signed as a channel request by one of the run's apps, over these bytes.
fn signed(req: &HttpRequest, body: &[u8]) -> bool {
    CHANNELS.contains(&header(req, jyt_signing::channel::APP_ID))
        && jyt_signing::channel::verify_request(
            [APP_SECRET.as_bytes()],
            "POST",
            req.path(),
            req.query_string(),
            |name| Some(header(req, name)),
            body,
        )
}

async fn receive(req: HttpRequest, body: web::Bytes, received: web::Data<Mutex<Received>>) -> HttpResponse {
    if !signed(&req, &body) {
        received
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .bad_signatures += 1;
        return HttpResponse::Unauthorized().finish();
    }
    let Ok(notice) = serde_json::from_slice::<Notice<'_>>(&body) else {
        return HttpResponse::BadRequest().finish();
    };
    let subject = [&notice.booking, &notice.refund, &notice.entry]
        .into_iter()
        .flatten()
        .find_map(|s| s.booking_id.or(s.entry_id))
        .unwrap_or_default();
    let key = (notice.event_type.to_owned(), subject.to_owned());
    let mut r = received.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    r.total += 1;
    *r.by_key.entry(key).or_insert(0) += 1;
    HttpResponse::Ok().finish()
}

/// What became of the notices a step owed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Owed {
    /// Owed, by notice type.
    pub owed: BTreeMap<String, usize>,
    /// Never received, by notice type, when the wait ended.
    pub missing: BTreeMap<String, usize>,
    /// The first few never received, to look into.
    pub missing_examples: Vec<NoticeKey>,
    /// Copies beyond the first (delivery is at least once), by type.
    pub duplicates: BTreeMap<String, usize>,
    /// From the start of the wait to the last one owed (or to giving up).
    pub waited_seconds: f64,
}

impl Owed {
    pub fn all_received(&self) -> bool {
        self.missing.values().all(|n| *n == 0)
    }
}

impl Sink {
    /// Serve on `workers` threads, on port 0.
    pub fn start(workers: usize) -> anyhow::Result<Self> {
        let received = Arc::new(Mutex::new(Received::default()));
        let data = web::Data::from(received.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .default_service(web::to(receive))
        })
        .workers(workers)
        .bind(("127.0.0.1", 0))?;
        let port = server.addrs()[0].port();
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        Ok(Self {
            url: format!("http://127.0.0.1:{port}/notices"),
            received,
            server: handle,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Received> {
        self.received
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How many notices of `kind` about `subject` arrived.
    pub fn count(&self, kind: &str, subject: &str) -> u32 {
        self.lock()
            .by_key
            .get(&(kind.to_owned(), subject.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    /// Notices of `kind`, about any subject, that arrived (copies counted once).
    pub fn subjects_of(&self, kind: &str) -> usize {
        self.lock().by_key.keys().filter(|(k, _)| k == kind).count()
    }

    /// Every notice received, and those refused for their signature.
    pub fn totals(&self) -> (u64, u64) {
        let r = self.lock();
        (r.total, r.bad_signatures)
    }

    /// Poll until every notice in `owed` has arrived, or `deadline` passes.
    pub async fn wait_for(&self, owed: &[NoticeKey], deadline: Duration) -> Owed {
        let started = Instant::now();
        let missing = |r: &Received| owed.iter().filter(|k| !r.by_key.contains_key(*k)).count();
        loop {
            if missing(&self.lock()) == 0 || started.elapsed() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let waited_seconds = started.elapsed().as_secs_f64();
        let r = self.lock();
        let mut out = Owed {
            waited_seconds,
            ..Owed::default()
        };
        for key in owed {
            *out.owed.entry(key.0.clone()).or_default() += 1;
            let n = r.by_key.get(key).copied().unwrap_or(0);
            *out.missing.entry(key.0.clone()).or_default() += usize::from(n == 0);
            if n == 0 && out.missing_examples.len() < 10 {
                out.missing_examples.push(key.clone());
            }
            *out.duplicates.entry(key.0.clone()).or_default() += n.saturating_sub(1) as usize;
        }
        out
    }

    pub async fn stop(self) {
        self.server.stop(true).await;
    }
}

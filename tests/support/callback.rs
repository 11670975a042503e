//! A channel app's notice endpoint for a test: records every notice the
//! gateway POSTs (signed with the app's secret), answers 200, or 500 while
//! told to fail, optionally slowly (so a test can kill the gateway while a
//! notice is in flight).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use chrono::{DateTime, Utc};

use crate::city::TEST_APP_SECRET;

/// One notice as the endpoint received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub raw: String,
    pub body: serde_json::Value,
    /// What the endpoint answered (or was about to, when slow).
    pub status: u16,
    pub at: DateTime<Utc>,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map_or("", |(_, v)| v.as_str())
    }

    /// `notice_id`, or `X-Event-Id` for a notice without one.
    pub fn notice_id(&self) -> String {
        self.body["notice_id"]
            .as_str()
            .map_or_else(|| self.header("x-event-id").to_owned(), str::to_owned)
    }

    pub fn notice_type(&self) -> &str {
        self.body["event_type"].as_str().unwrap_or("")
    }

    /// The booking the notice is about.
    pub fn booking_id(&self) -> &str {
        self.body["booking"]["booking_id"]
            .as_str()
            .or_else(|| self.body["refund"]["booking_id"].as_str())
            .unwrap_or("")
    }

    /// Signed like a channel request, with the test apps' secret, over
    /// exactly these bytes, as `X-App-Id`.
    pub fn signed_by(&self, app: &str) -> bool {
        self.header(jyt_signing::channel::APP_ID) == app
            && jyt_signing::channel::verify_request(
                [TEST_APP_SECRET.as_bytes()],
                "POST",
                &self.path,
                "",
                |name| Some(self.header(name)),
                self.raw.as_bytes(),
            )
    }
}

#[derive(Default)]
struct State {
    seen: Vec<Received>,
    failing: bool,
    delay: Duration,
}

/// A running notice endpoint.
#[derive(Clone)]
pub struct Callback {
    /// `http://127.0.0.1:<port>/notices`.
    pub url: String,
    state: web::Data<Mutex<State>>,
}

async fn receive(req: HttpRequest, body: web::Bytes, state: web::Data<Mutex<State>>) -> HttpResponse {
    let delay = {
        let mut s = state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let status = if s.failing { 500 } else { 200 };
        let raw = String::from_utf8_lossy(&body).into_owned();
        s.seen.push(Received {
            path: req.path().to_owned(),
            headers: req
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
                .collect(),
            body: serde_json::from_str(&raw).unwrap_or_default(),
            raw,
            status,
            at: Utc::now(),
        });
        if s.failing {
            return HttpResponse::InternalServerError().finish();
        }
        s.delay
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    HttpResponse::Ok().finish()
}

impl Callback {
    pub async fn start() -> Self {
        let state = web::Data::new(Mutex::new(State::default()));
        let server = {
            let state = state.clone();
            HttpServer::new(move || {
                App::new()
                    .app_data(state.clone())
                    .default_service(web::to(receive))
            })
            .workers(1)
            .bind(("127.0.0.1", 0))
            .expect("a port for the callback")
        };
        let port = server.addrs()[0].port();
        tokio::spawn(server.run());
        Self {
            url: format!("http://127.0.0.1:{port}/notices"),
            state,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every call so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.lock().seen.clone()
    }

    /// The calls answered 200.
    pub fn delivered(&self) -> Vec<Received> {
        self.received().into_iter().filter(|r| r.status == 200).collect()
    }

    /// The delivered notices of one type about one booking.
    pub fn of(&self, notice_type: &str, booking: &str) -> Vec<Received> {
        self.delivered()
            .into_iter()
            .filter(|r| r.notice_type() == notice_type && r.booking_id() == booking)
            .collect()
    }

    pub fn set_failing(&self, failing: bool) {
        self.lock().failing = failing;
    }

    /// Answer each call only after `delay`.
    pub fn set_delay(&self, delay: Duration) {
        self.lock().delay = delay;
    }

    /// Poll until `check` finds what it wants among the delivered notices.
    pub async fn wait_for<T>(
        &self,
        what: &str,
        deadline: Duration,
        check: impl Fn(&[Received]) -> Option<T>,
    ) -> T {
        let check = Arc::new(check);
        jyt_testkit::eventually(deadline, what, || {
            let (check, delivered) = (check.clone(), self.delivered());
            async move { check(&delivered) }
        })
        .await
    }
}

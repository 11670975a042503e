//! A hospital's HIS, as the system tests play it through the federation
//! API: its keys in the gateway's settings and the clinic sessions it
//! publishes.

use chrono::NaiveDate;
use reqwest::Method;
use serde_json::{Value, json};

use crate::callback::Callback;
use crate::city::{TEST_APP_SECRET, TestCity, TestConsole, signed, spawn_console};

/// Hospital `pumch` (key `pumchk1`) and `bjh` (key `bjhk1`) behind a
/// gateway whose wechat app's notices go to `callback` (polled every
/// 20 ms), the hospitals with settings `hospital`, and a console
/// (operators `city_ops`, `pumch_ops`, `bjh_ops`).
pub async fn federated_city(callback: &Callback, hospital: &[(&str, &str)]) -> (TestCity, TestConsole) {
    let keys = hospital_keys(&[("pumchk1", "pumch"), ("bjhk1", "bjh")]);
    let mut gateway: Vec<(&str, &str)> = keys.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    gateway.extend([
        ("CHANNEL_APPS__WECHAT__CALLBACK_URL", callback.url.as_str()),
        ("NOTIFICATIONS__POLL_MS", "20"),
        ("NOTIFICATIONS__BACKOFF_BASE_MS", "50"),
    ]);
    let city = TestCity::spawn_configured(&["pumch", "bjh"], &gateway, hospital).await;
    let console = spawn_console(&city.redis_prefix, &city.gateway_url, &["pumch", "bjh"]).await;
    (city, console)
}

/// A request signed with the federation key `key`.
pub fn fed(
    city: &TestCity,
    key: &str,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> reqwest::RequestBuilder {
    signed(&city.http, &city.gateway_url, key, method, path, body)
}

/// Gateway settings that give each `(key id, hospital)` a federation key,
/// all with [`TEST_APP_SECRET`] (sign with the key id as the app).
pub fn hospital_keys(keys: &[(&str, &str)]) -> Vec<(String, String)> {
    keys.iter()
        .flat_map(|(key, hospital)| {
            let k = key.to_uppercase();
            [
                (format!("HOSPITAL_KEYS__{k}__HOSPITAL"), (*hospital).to_owned()),
                (format!("HOSPITAL_KEYS__{k}__SECRET"), TEST_APP_SECRET.to_owned()),
            ]
        })
        .collect()
}

/// One clinic session of a dermatology doctor (`doctor`, the hospital's
/// own id) with one segment of `capacity` seats from `hh:mm` to half an
/// hour later, as `PUT .../schedules` takes it.
pub struct Session<'a> {
    pub id: &'a str,
    pub doctor: &'a str,
    pub date: NaiveDate,
    pub session: &'a str,
    pub starts: &'a str,
    pub capacity: i32,
    pub fee_fen: i64,
    pub for_waitlist: bool,
}

impl Session<'_> {
    pub fn body(&self) -> Value {
        let (h, m) = self.starts.split_once(':').expect("hh:mm");
        let (h, m): (u32, u32) = (h.parse().expect("an hour"), m.parse().expect("minutes"));
        let end = h * 60 + m + 30;
        let date = self.date;
        json!({
            "schedules": [{
                "id": self.id,
                "department": { "id": "derm", "name": "皮肤科 Dermatology" },
                "doctor": { "id": self.doctor, "name": "孙医生", "title": "主任医师" },
                "date": date,
                "session": self.session,
                "level": "expert",
                "fee_fen": self.fee_fen,
                "for_waitlist": self.for_waitlist,
                "segments": [{
                    "starts_at": format!("{date}T{h:02}:{m:02}:00+08:00"),
                    "ends_at": format!("{date}T{:02}:{:02}:00+08:00", end / 60, end % 60),
                    "capacity": self.capacity,
                }]
            }]
        })
    }
}

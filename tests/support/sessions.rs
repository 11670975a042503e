//! A hospital's HIS, as the system tests play it through the federation
//! API: its keys in the gateway's settings and the clinic sessions it
//! publishes.

use chrono::NaiveDate;
use serde_json::{Value, json};

use crate::city::TEST_APP_SECRET;

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

//! Calendar in Asia/Shanghai. China has kept UTC+8 without daylight saving
//! since 1991, so a fixed offset is exact for every date we store and saves
//! compiling a time-zone database into every service.

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveTime, TimeZone, Utc};

/// UTC+8, Beijing time.
#[expect(clippy::expect_used, reason = "a constant offset well within ±24h")]
pub fn shanghai() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).expect("UTC+8 is a valid offset")
}

/// Today's date as a patient in the city sees it.
pub fn today() -> NaiveDate {
    Utc::now().with_timezone(&shanghai()).date_naive()
}

/// The UTC instant of a local wall-clock time in Shanghai.
pub fn at(date: NaiveDate, time: NaiveTime) -> DateTime<Utc> {
    let local = date.and_time(time);
    // A fixed offset has no gaps or folds, so `single` always answers.
    match shanghai().from_local_datetime(&local).single() {
        Some(t) => t.with_timezone(&Utc),
        None => Utc.from_utc_datetime(&local),
    }
}

/// Show a stored UTC instant in Shanghai time.
pub fn local(t: DateTime<Utc>) -> DateTime<FixedOffset> {
    t.with_timezone(&shanghai())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eight_thirty_in_beijing_is_half_past_midnight_utc() {
        let d = NaiveDate::from_ymd_opt(2026, 11, 24).unwrap();
        let t = at(d, NaiveTime::from_hms_opt(8, 30, 0).unwrap());
        assert_eq!(t.to_rfc3339(), "2026-11-24T00:30:00+00:00");
        assert_eq!(local(t).to_rfc3339(), "2026-11-24T08:30:00+08:00");
    }
}

/// Where "now" comes from. Services read time only through a clock, so tests
/// can stand at 08:29:59 on release day instead of sleeping until then.
#[derive(Debug, Clone, Default)]
pub enum Clock {
    #[default]
    System,
    /// A clock that moves only when told to (tests).
    Manual(std::sync::Arc<std::sync::Mutex<chrono::DateTime<Utc>>>),
}

impl Clock {
    pub fn manual(start: chrono::DateTime<Utc>) -> Self {
        Clock::Manual(std::sync::Arc::new(std::sync::Mutex::new(start)))
    }

    pub fn now(&self) -> chrono::DateTime<Utc> {
        match self {
            Clock::System => Utc::now(),
            Clock::Manual(t) => *t.lock().unwrap_or_else(std::sync::PoisonError::into_inner),
        }
    }

    /// Set a manual clock; a system clock ignores it.
    pub fn set(&self, to: chrono::DateTime<Utc>) {
        if let Clock::Manual(t) = self {
            *t.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = to;
        }
    }

    pub fn advance(&self, by: chrono::TimeDelta) {
        self.set(self.now() + by);
    }

    /// Today in Asia/Shanghai by this clock.
    pub fn today(&self) -> NaiveDate {
        local(self.now()).date_naive()
    }
}

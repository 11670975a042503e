//! A demo day of clinics for one hospital, for `jyt up`, the load test and
//! tests. Idempotent: seeding the same date twice changes nothing.

use crate::state::AppState;
use chrono::{NaiveDate, NaiveTime, TimeDelta};

use crate::schedule::queries::{StoredSchedule, upsert_schedule};
use crate::schedule::{ClinicLevel, NewDepartment, NewDoctor, NewSchedule, NewSegment, Session};

/// (department code, name, [(doctor code, name, title, level, fee in fen)]).
type DemoDepartment = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str, &'static str, ClinicLevel, i64)],
);

const DEPARTMENTS: &[DemoDepartment] = &[
    (
        "cardio",
        "心血管内科 Cardiology",
        &[
            ("d-cardio-1", "王建国", "主任医师", ClinicLevel::Expert, 10_000),
            ("d-cardio-2", "李敏", "主治医师", ClinicLevel::General, 5_000),
        ],
    ),
    (
        "peds",
        "儿科 Pediatrics",
        &[
            ("d-peds-1", "张丽华", "副主任医师", ClinicLevel::Expert, 8_000),
            ("d-peds-2", "刘洋", "主治医师", ClinicLevel::General, 5_000),
        ],
    ),
    (
        "endo",
        "内分泌科 Endocrinology",
        &[("d-endo-1", "陈静", "主治医师", ClinicLevel::General, 5_000)],
    ),
    (
        "radiology",
        "放射科 Radiology",
        &[("d-rad-ct", "CT 检查室", "技师", ClinicLevel::Ct, 0)],
    ),
];

/// Seed one day of clinics: morning 08:00-11:30 and afternoon 13:30-16:30 in
/// 30-minute segments, `capacity` seats each.
pub async fn seed_demo_day(
    state: &AppState,
    date: NaiveDate,
    capacity: i32,
) -> anyhow::Result<Vec<StoredSchedule>> {
    let hospital_code = state.hospital.as_str();
    let release_at = state.policy.get().release_at(date);
    let now = state.clock.now();
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let mut stored = Vec::new();
    for (dep_code, dep_name, doctors) in DEPARTMENTS {
        for (doc_code, doc_name, title, level, fee) in *doctors {
            for (session, start, end) in [
                (Session::Morning, (8, 0), (11, 30)),
                (Session::Afternoon, (13, 30), (16, 30)),
            ] {
                let mut segments = Vec::new();
                let mut t = NaiveTime::from_hms_opt(start.0, start.1, 0).unwrap_or(NaiveTime::MIN);
                let end = NaiveTime::from_hms_opt(end.0, end.1, 0).unwrap_or(NaiveTime::MIN);
                while t < end {
                    let next = t + TimeDelta::minutes(30);
                    segments.push(NewSegment {
                        starts_at: jyt_domain::time::at(date, t),
                        ends_at: jyt_domain::time::at(date, next),
                        capacity,
                    });
                    t = next;
                }
                let schedule = NewSchedule {
                    external_id: format!("{hospital_code}-{date}-{doc_code}-{}", session.as_str()),
                    department: NewDepartment {
                        external_id: (*dep_code).to_owned(),
                        name: (*dep_name).to_owned(),
                    },
                    doctor: NewDoctor {
                        external_id: (*doc_code).to_owned(),
                        name: (*doc_name).to_owned(),
                        title: (*title).to_owned(),
                    },
                    visit_date: date,
                    session,
                    clinic_level: *level,
                    fee_fen: *fee,
                    segments,
                };
                stored.push(upsert_schedule(&tx, &schedule, release_at, now).await?);
            }
        }
    }
    tx.commit().await?;
    Ok(stored)
}

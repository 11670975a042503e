//! Which notices a channel app gets for an event, and when: pure rules,
//! with no I/O, that [`crate::notify`] stores, sends and retries.
//!
//! | event | notices |
//! |---|---|
//! | `booking.confirmed` | `booking.confirmed` now; `booking.visit_reminder` at `visit_reminder_time` (Asia/Shanghai) `visit_reminder_days_before` days before the visit (at once if that has passed; none once the visit began), sent only if the booking is still confirmed |
//! | `booking.held` | `booking.held` now, only for a booking its app did not make itself (an in-clinic follow-up, channel ≠ the app's); `booking.hold_expiring` `hold_warning_seconds` before the hold's deadline, sent only if still held |
//! | `booking.promoted`, `booking.offered` | the event now, and `booking.hold_expiring` as for a hold. An offer (after 停诊) goes to the app of the booking it replaces when it names none of its own |
//! | `booking.stopped`, `cancelled`, `expired`, `no_show` | the event now; scheduled notices of the booking made pointless are dropped |
//! | `booking.refund_requested` | `prepaid_card`: nothing yet (card-issuing credits the card, then `card.refunded`); any other method: a `refund.instruction` to the owning app (amount, its payment reference) and, once it was delivered, `refund.issued` |
//! | `card.refunded` (card-issuing, for a booking) | `refund.issued` |
//! | `booking.completed` | `survey.invited` (the visit's satisfaction survey: its id, derived from the booking, its expiry 7 days after `detail.completed_at`, and the question set's version); nothing else |
//! | `draw.won` (a lottery's draw gave the entry a hold) | `draw.won` now, with the booking: the app's only word of it (its `booking.held` is the app's own channel's, so not sent) |
//! | `draw.lost` | `draw.lost` now, with the entry, the reason and the waitlist route to offer the patient |
//!
//! Every notice has an id of its own (`notice_id`, also `X-Event-Id`): the
//! event's id for the event's own notice, `<kind>:<booking>` for the
//! others, so a channel can drop a notice it has seen (delivery is at least
//! once).

use chrono::{DateTime, NaiveDate, NaiveTime, TimeDelta, Utc};
use jyt_events::Envelope;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::settings::NotificationSettings;

pub const HOLD_EXPIRING: &str = "booking.hold_expiring";
pub const VISIT_REMINDER: &str = "booking.visit_reminder";
pub const REFUND_INSTRUCTION: &str = "refund.instruction";
pub const REFUND_ISSUED: &str = "refund.issued";
pub const SURVEY_INVITED: &str = "survey.invited";
/// card-issuing's event for a card credited back.
pub const CARD_REFUNDED: &str = "card.refunded";
/// The gateway's payment method for the card's prepaid balance.
const PREPAID_CARD: &str = "prepaid_card";

/// Checked with the hospital right before a notice is sent: a reminder of
/// a booking cancelled meanwhile, or a hold warning for a booking already
/// paid, is dropped instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnlyIf {
    pub booking_id: String,
    /// The status the booking must still have.
    pub status: String,
    /// For a hold warning: not before this long ahead of the hold's
    /// deadline (read from the hospital), and never after the deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before_deadline_seconds: Option<u64>,
}

/// One notice to schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    pub id: String,
    pub notice_type: String,
    pub due: DateTime<Utc>,
    pub body: Value,
    pub only_if: Option<OnlyIf>,
    /// Scheduled once this one has been delivered.
    pub then: Option<Box<Planned>>,
}

/// What one event means for its booking's app.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// The app named by the event (`owner_app`)...
    pub owner_app: Option<String>,
    /// ...else the app the gateway remembers for the first of these
    /// bookings that has one.
    pub owner_bookings: Vec<String>,
    pub notices: Vec<Planned>,
    /// Ids of scheduled notices this event makes pointless.
    pub cancels: Vec<String>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.notices.is_empty() && self.cancels.is_empty()
    }
}

fn hold_warning_id(booking: &str) -> String {
    format!("hold_expiring:{booking}")
}
fn reminder_id(booking: &str) -> String {
    format!("visit_reminder:{booking}")
}

fn text<'a>(v: &'a Value, field: &str) -> Option<&'a str> {
    v.get(field).and_then(Value::as_str).filter(|s| !s.is_empty())
}

fn instant(v: &Value, field: &str) -> Option<DateTime<Utc>> {
    text(v, field)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// `HH:MM` or `HH:MM:SS`.
pub fn parse_time_of_day(s: &str) -> Option<NaiveTime> {
    NaiveTime::parse_from_str(s, "%H:%M:%S")
        .or_else(|_| NaiveTime::parse_from_str(s, "%H:%M"))
        .ok()
}

/// The body of a notice about a booking.
pub fn booking_body(notice_id: &str, notice_type: &str, env: &Envelope, booking: &Value) -> Value {
    json!({
        "notice_id": notice_id,
        "event_id": env.event_id,
        "event_type": notice_type,
        "occurred_at": env.occurred_at,
        "booking": booking,
    })
}

/// The notices `env` calls for (see the module's table); `channel_of`
/// answers a configured app's channel kind.
pub fn plan(
    env: &Envelope,
    settings: &NotificationSettings,
    channel_of: &dyn Fn(&str) -> Option<String>,
    now: DateTime<Utc>,
) -> Plan {
    if !settings.event_types().any(|t| t == env.event_type) {
        return Plan::default();
    }
    let p = &env.payload;
    let booking = text(p, "booking_id").unwrap_or(&env.aggregate_id).to_owned();
    let mut plan = Plan {
        owner_app: text(p, "owner_app").map(str::to_owned),
        owner_bookings: vec![booking.clone()],
        ..Plan::default()
    };
    let event_id = env.event_id.to_string();
    let direct = |plan: &mut Plan| {
        plan.notices.push(Planned {
            id: event_id.clone(),
            notice_type: env.event_type.clone(),
            due: now,
            body: booking_body(&event_id, &env.event_type, env, p),
            only_if: None,
            then: None,
        });
    };
    match env.event_type.as_str() {
        "booking.confirmed" => {
            direct(&mut plan);
            plan.cancels.push(hold_warning_id(&booking));
            plan.notices.extend(visit_reminder(env, &booking, settings, now));
        }
        "booking.held" => {
            // A channel hears of its own holds in the answer; one someone
            // else made for its patient (an in-clinic follow-up) it must
            // be told of.
            let made_by_owner = match (text(p, "channel"), plan.owner_app.as_deref()) {
                (Some(channel), Some(app)) => channel_of(app).as_deref() == Some(channel),
                _ => true,
            };
            if !made_by_owner {
                direct(&mut plan);
            }
            plan.notices.extend(hold_warning(env, &booking, settings, now));
        }
        "booking.promoted" | "booking.offered" => {
            if env.event_type == "booking.offered"
                && let Some(replaced) = text(&p["detail"], "replaces")
                && let Some(hospital) = text(p, "hospital_id")
            {
                plan.owner_bookings.push(format!("{hospital}-{replaced}"));
            }
            direct(&mut plan);
            plan.notices.extend(hold_warning(env, &booking, settings, now));
        }
        "booking.stopped" | "booking.cancelled" | "booking.expired" | "booking.no_show" => {
            direct(&mut plan);
            plan.cancels.push(hold_warning_id(&booking));
            plan.cancels.push(reminder_id(&booking));
        }
        "booking.refund_requested" => plan.notices.extend(refund_instruction(env, &booking, now)),
        "booking.completed" => plan.notices.extend(survey_invitation(env, &booking, now)),
        CARD_REFUNDED => {
            // Only refunds card-issuing made for a booking: a channel's own
            // refund request was answered when it made it.
            let Some(booking) = text(p, "booking_id") else {
                return Plan::default();
            };
            plan.owner_bookings = vec![booking.to_owned()];
            let id = format!("refund_issued:{booking}");
            plan.notices.push(Planned {
                body: json!({
                    "notice_id": id,
                    "event_id": env.event_id,
                    "event_type": REFUND_ISSUED,
                    "occurred_at": env.occurred_at,
                    "refund": {
                        "booking_id": booking,
                        "hospital_id": p.get("hospital_id"),
                        "amount_fen": p.get("amount_fen"),
                        "payment_method": PREPAID_CARD,
                        "refunded_to": "prepaid_card",
                        "reference": p.get("reference"),
                        "card_balance_fen": p.get("balance_fen"),
                    },
                }),
                id,
                notice_type: REFUND_ISSUED.to_owned(),
                due: now,
                only_if: None,
                then: None,
            });
        }
        "draw.lost" => {
            // No booking: the entry is the notice's subject.
            plan.owner_bookings.clear();
            plan.notices.push(Planned {
                id: event_id.clone(),
                notice_type: env.event_type.clone(),
                due: now,
                body: json!({
                    "notice_id": event_id,
                    "event_id": env.event_id,
                    "event_type": env.event_type,
                    "occurred_at": env.occurred_at,
                    "entry": p,
                }),
                only_if: None,
                then: None,
            });
        }
        _ => direct(&mut plan),
    }
    plan
}

/// The visit is over: its app asks the patient the survey's questions
/// (channel-accounting stored the survey from the same event, under the
/// same derived id).
/// None once the survey closed (a completion the hospital reported a
/// week late): an invitation nobody can answer is noise.
fn survey_invitation(env: &Envelope, booking: &str, now: DateTime<Utc>) -> Option<Planned> {
    let p = &env.payload;
    let completed_at = instant(&p["detail"], "completed_at").unwrap_or(env.occurred_at);
    let expires_at = jyt_domain::survey::expires_at(completed_at);
    if expires_at <= now {
        return None;
    }
    let id = format!("survey_invited:{booking}");
    Some(Planned {
        body: json!({
            "notice_id": id,
            "event_id": env.event_id,
            "event_type": SURVEY_INVITED,
            "occurred_at": env.occurred_at,
            "survey": {
                "survey_id": jyt_domain::survey::survey_id(booking),
                "booking_id": booking,
                "hospital_id": p.get("hospital_id"),
                "department": p.get("department"),
                "doctor": p.get("doctor"),
                "completed_at": completed_at,
                "expires_at": expires_at,
                "questions_version": jyt_domain::survey::QUESTIONS_VERSION,
            },
            "booking": p,
        }),
        id,
        notice_type: SURVEY_INVITED.to_owned(),
        due: now,
        only_if: None,
        then: None,
    })
}

fn hold_warning(
    env: &Envelope,
    booking: &str,
    settings: &NotificationSettings,
    now: DateTime<Utc>,
) -> Option<Planned> {
    if settings.hold_warning_seconds == 0 || text(&env.payload, "status") != Some("held") {
        return None;
    }
    let warning =
        TimeDelta::seconds(i64::try_from(settings.hold_warning_seconds).unwrap_or(i64::MAX / 2_000));
    // The deadline, when the event carries it; else the check before
    // sending reads it from the hospital and moves the notice there.
    let due = instant(&env.payload, "hold_deadline").map_or(now, |deadline| (deadline - warning).max(now));
    let id = hold_warning_id(booking);
    Some(Planned {
        body: booking_body(&id, HOLD_EXPIRING, env, &env.payload),
        id,
        notice_type: HOLD_EXPIRING.to_owned(),
        due,
        only_if: Some(OnlyIf {
            booking_id: booking.to_owned(),
            status: "held".to_owned(),
            before_deadline_seconds: Some(settings.hold_warning_seconds),
        }),
        then: None,
    })
}

/// When the reminder of a visit on `visit_date` is due.
pub fn reminder_at(visit_date: NaiveDate, settings: &NotificationSettings) -> Option<DateTime<Utc>> {
    let time = parse_time_of_day(settings.visit_reminder_time.trim())?;
    let day = visit_date.checked_sub_days(chrono::Days::new(settings.visit_reminder_days_before))?;
    Some(jyt_domain::time::at(day, time))
}

fn visit_reminder(
    env: &Envelope,
    booking: &str,
    settings: &NotificationSettings,
    now: DateTime<Utc>,
) -> Option<Planned> {
    let visit_date: NaiveDate = text(&env.payload, "visit_date")?.parse().ok()?;
    let at = reminder_at(visit_date, settings)?;
    if instant(&env.payload, "segment_starts_at").is_some_and(|starts| starts <= now) {
        return None;
    }
    let id = reminder_id(booking);
    Some(Planned {
        body: booking_body(&id, VISIT_REMINDER, env, &env.payload),
        id,
        notice_type: VISIT_REMINDER.to_owned(),
        // Confirmed after the reminder time (the evening before): at once.
        due: at.max(now),
        only_if: Some(OnlyIf {
            booking_id: booking.to_owned(),
            status: "confirmed".to_owned(),
            before_deadline_seconds: None,
        }),
        then: None,
    })
}

fn refund_instruction(env: &Envelope, booking: &str, now: DateTime<Utc>) -> Option<Planned> {
    let p = &env.payload;
    let detail = &p["detail"];
    let method = text(detail, "payment_method")
        .or_else(|| text(p, "payment_method"))
        .unwrap_or("self_pay");
    if method == PREPAID_CARD {
        // card-issuing credits the card; its `card.refunded` tells.
        return None;
    }
    let amount = detail
        .get("amount_fen")
        .and_then(Value::as_i64)
        .filter(|a| *a > 0)
        .or_else(|| p.get("fee_fen").and_then(Value::as_i64))
        .unwrap_or(0);
    if amount <= 0 {
        return None;
    }
    let reference = text(detail, "payment_reference").unwrap_or("");
    // The gateway recorded the channel's transaction id as
    // `<app id>:<transaction id>`; the channel refunds its own id.
    let transaction = match (text(p, "owner_app"), reference.split_once(':')) {
        (Some(app), Some((prefix, tx))) if prefix == app => tx,
        (None, Some((_, tx))) => tx,
        _ => reference,
    };
    let refund = json!({
        "booking_id": booking,
        "hospital_id": p.get("hospital_id"),
        "amount_fen": amount,
        "payment_method": method,
        "payment_reference": reference,
        "channel_transaction_id": transaction,
        "reason": detail.get("reason").cloned().unwrap_or(Value::Null),
    });
    let id = format!("refund_instruction:{booking}");
    let issued_id = format!("refund_issued:{booking}");
    let mut issued_refund = refund.clone();
    issued_refund["refunded_to"] = json!("channel");
    Some(Planned {
        body: json!({
            "notice_id": id,
            "event_id": env.event_id,
            "event_type": REFUND_INSTRUCTION,
            "occurred_at": env.occurred_at,
            "refund": refund,
            "booking": p,
        }),
        id,
        notice_type: REFUND_INSTRUCTION.to_owned(),
        due: now,
        only_if: None,
        then: Some(Box::new(Planned {
            body: json!({
                "notice_id": issued_id,
                "event_id": env.event_id,
                "event_type": REFUND_ISSUED,
                "occurred_at": env.occurred_at,
                "refund": issued_refund,
            }),
            id: issued_id,
            notice_type: REFUND_ISSUED.to_owned(),
            due: now,
            only_if: None,
            then: None,
        })),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> NotificationSettings {
        NotificationSettings {
            source_stream: "events:slot-inventory".into(),
            card_stream: "events:card-issuing".into(),
            consumer_group: "g".into(),
            consumer_name: "c".into(),
            claim_idle_ms: 1000,
            block_ms: 100,
            batch_size: 10,
            deliveries_in_flight: 4,
            poll_ms: 100,
            timeout_ms: 1000,
            lease_ms: 30_000,
            max_attempts: 3,
            backoff_base_ms: 100,
            backoff_max_ms: 1000,
            event_types: "booking.confirmed,booking.held,booking.promoted,booking.offered,booking.stopped,\
                          booking.cancelled,booking.refund_requested,card.refunded"
                .into(),
            hold_warning_seconds: 120,
            visit_reminder_days_before: 1,
            visit_reminder_time: "18:00".into(),
            operator_token_sha256: None,
        }
    }

    fn channel_of(app: &str) -> Option<String> {
        (app == "wxmini").then(|| "wechat".to_owned())
    }

    fn plan(e: &Envelope, s: &NotificationSettings, now: DateTime<Utc>) -> Plan {
        super::plan(e, s, &channel_of, now)
    }

    fn event(kind: &str, payload: Value) -> Envelope {
        Envelope {
            event_id: uuid::Uuid::now_v7(),
            event_type: kind.into(),
            aggregate_id: "pumch-b1".into(),
            occurred_at: Utc::now(),
            payload,
        }
    }

    #[test]
    fn a_confirmed_booking_is_told_now_and_reminded_at_six_the_evening_before() {
        let now = Utc::now();
        let visit = jyt_domain::time::today() + chrono::Days::new(3);
        let e = event(
            "booking.confirmed",
            json!({ "booking_id": "pumch-b1", "visit_date": visit, "owner_app": "wxmini" }),
        );
        let plan = plan(&e, &settings(), now);
        assert_eq!(plan.owner_app.as_deref(), Some("wxmini"));
        assert_eq!(plan.cancels, vec!["hold_expiring:pumch-b1".to_owned()]);
        let [confirmed, reminder] = &plan.notices[..] else {
            panic!("two notices: {plan:?}")
        };
        assert_eq!(
            (confirmed.id.as_str(), confirmed.due),
            (e.event_id.to_string().as_str(), now)
        );
        assert_eq!(reminder.id, "visit_reminder:pumch-b1");
        let evening_before = jyt_domain::time::at(
            visit - chrono::Days::new(1),
            NaiveTime::from_hms_opt(18, 0, 0).unwrap(),
        );
        assert_eq!(reminder.due, evening_before);
        assert_eq!(reminder.only_if.as_ref().unwrap().status, "confirmed");
    }

    #[test]
    fn a_hold_warning_comes_before_the_deadline_and_only_someone_elses_hold_is_told() {
        let now = Utc::now();
        let deadline = now + TimeDelta::minutes(10);
        let own = event(
            "booking.held",
            json!({ "status": "held", "channel": "wechat", "owner_app": "wxmini",
                    "hold_deadline": deadline.to_rfc3339() }),
        );
        let plan_own = plan(&own, &settings(), now);
        assert_eq!(plan_own.notices.len(), 1, "only the warning: {plan_own:?}");
        assert_eq!(plan_own.notices[0].notice_type, HOLD_EXPIRING);
        assert_eq!(plan_own.notices[0].due, deadline - TimeDelta::seconds(120));
        let follow_up = event(
            "booking.held",
            json!({ "status": "held", "channel": "clinic", "owner_app": "wxmini" }),
        );
        let p = plan(&follow_up, &settings(), now);
        assert_eq!(
            p.notices
                .iter()
                .map(|n| n.notice_type.as_str())
                .collect::<Vec<_>>(),
            ["booking.held", HOLD_EXPIRING]
        );
        // Without a deadline in the event, the check before sending reads it.
        assert_eq!(p.notices[1].due, now);
    }

    #[test]
    fn a_self_paid_refund_is_an_instruction_then_issued_and_a_card_refund_waits_for_card_issuing() {
        let now = Utc::now();
        let self_paid = event(
            "booking.refund_requested",
            json!({ "booking_id": "pumch-b1", "payment_method": "self_pay", "owner_app": "wxmini", "fee_fen": 500,
                    "detail": { "payment_reference": "wxmini:tx42", "amount_fen": 500 } }),
        );
        let p = plan(&self_paid, &settings(), now);
        let [instruction] = &p.notices[..] else {
            panic!("{p:?}")
        };
        assert_eq!(instruction.id, "refund_instruction:pumch-b1");
        assert_eq!(instruction.body["refund"]["channel_transaction_id"], "tx42");
        assert_eq!(instruction.body["refund"]["amount_fen"], 500);
        assert_eq!(instruction.then.as_ref().unwrap().id, "refund_issued:pumch-b1");
        let card = event(
            "booking.refund_requested",
            json!({ "booking_id": "pumch-b1", "payment_method": "prepaid_card", "fee_fen": 500, "detail": {} }),
        );
        assert!(plan(&card, &settings(), now).is_empty());
        let credited = event(
            CARD_REFUNDED,
            json!({ "booking_id": "pumch-b1", "amount_fen": 500, "reference": "refund:pumch-b1" }),
        );
        let p = plan(&credited, &settings(), now);
        assert_eq!(p.notices[0].id, "refund_issued:pumch-b1");
        assert_eq!(p.owner_bookings, ["pumch-b1"]);
        let top_up = event(CARD_REFUNDED, json!({ "reference": "wechat:abc" }));
        assert!(plan(&top_up, &settings(), now).is_empty());
    }

    #[test]
    fn a_completed_visit_invites_its_app_to_the_survey_and_nothing_else() {
        let now = DateTime::parse_from_rfc3339("2026-12-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut s = settings();
        s.event_types.push_str(",booking.completed");
        let e = event(
            "booking.completed",
            json!({ "booking_id": "pumch-b1", "owner_app": "wxmini", "hospital_id": "pumch",
                    "detail": { "completed_at": "2026-11-30T02:00:00Z" } }),
        );
        let p = plan(&e, &s, now);
        let [invited] = &p.notices[..] else {
            panic!("one notice: {p:?}")
        };
        assert_eq!(invited.id, "survey_invited:pumch-b1");
        assert_eq!(invited.notice_type, SURVEY_INVITED);
        assert_eq!(
            invited.body["survey"]["survey_id"],
            jyt_domain::survey::survey_id("pumch-b1").to_string()
        );
        assert_eq!(invited.body["survey"]["expires_at"], "2026-12-07T02:00:00Z");
        assert_eq!(p.owner_app.as_deref(), Some("wxmini"));
        // Not listed in event_types: nothing.
        assert!(plan(&e, &settings(), now).is_empty());
        // Reported after the survey closed: no invitation.
        let week_later = now + TimeDelta::days(7);
        assert!(plan(&e, &s, week_later).notices.is_empty());
    }

    #[test]
    fn times_of_day_take_seconds_or_not() {
        assert_eq!(parse_time_of_day("18:00"), NaiveTime::from_hms_opt(18, 0, 0));
        assert_eq!(parse_time_of_day("07:05:09"), NaiveTime::from_hms_opt(7, 5, 9));
        assert_eq!(parse_time_of_day("25:00"), None);
    }
}

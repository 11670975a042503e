//! Our rows as FHIR R4 resources. Ids: Location = the hospital id;
//! Schedule, Slot, Appointment and Practitioner = `<hospital>-<uuid>` (the
//! existing slot and booking refs for Slot and Appointment), all within
//! FHIR's id pattern. References are relative; instants carry +08:00.

use chrono::{DateTime, SecondsFormat, Utc};
use jyt_domain::{BookingStatus, HospitalId};
use serde_json::{Value, json};
use uuid::Uuid;

use super::queries::{ScheduleContext, ScheduleRow, SlotRow};
use super::{
    BOOKING_DEEP_LINK, BOOKING_PHONE, CLINIC_LEVEL_SYSTEM, DEPARTMENT_SYSTEM, HOLD_EXPIRES, SLOT_CAPACITY,
};
use crate::booking::Booking;
use crate::settings::Settings;

/// An instant in Beijing time, to the second.
pub fn instant(t: DateTime<Utc>) -> String {
    jyt_domain::time::local(t).to_rfc3339_opts(SecondsFormat::Secs, false)
}

pub fn scoped(hospital: &HospitalId, id: Uuid) -> String {
    format!("{hospital}-{}", id.hyphenated())
}

fn department(code: &str, name: &str) -> Value {
    json!([{ "coding": [{ "system": DEPARTMENT_SYSTEM, "code": code, "display": name }], "text": name }])
}

fn clinic_level(level: &str) -> Value {
    let display = match level {
        "general" => "普通门诊 general clinic",
        "expert" => "专家门诊 expert clinic",
        "special" => "特需门诊 special clinic",
        "ct" => "CT 检查 CT scan",
        "mri" => "磁共振 MRI scan",
        other => other,
    };
    json!([{ "coding": [{ "system": CLINIC_LEVEL_SYSTEM, "code": level, "display": display }], "text": display }])
}

fn location_ref(settings: &Settings) -> Value {
    json!({ "reference": format!("Location/{}", settings.hospital.id), "display": settings.hospital.name })
}

fn practitioner_ref(hospital: &HospitalId, doctor: Uuid, name: &str) -> Value {
    json!({ "reference": format!("Practitioner/{}", scoped(hospital, doctor)), "display": name })
}

/// The hospital itself, with what an aggregator shows of where to go.
pub fn location(settings: &Settings) -> Value {
    let f = &settings.fhir;
    json!({
        "resourceType": "Location",
        "id": settings.hospital.id,
        "status": "active",
        "name": settings.hospital.name,
        "mode": "instance",
        "telecom": [
            { "system": "phone", "value": f.phone, "use": "work" },
            { "system": "phone", "value": f.booking_phone, "use": "work", "rank": 2 },
            { "system": "url", "value": origin(&f.booking_link_template), "use": "work" },
        ],
        "address": {
            "use": "work",
            "type": "physical",
            "text": format!("{}{}{}", f.city, f.district, f.address_line),
            "line": [f.address_line],
            "city": f.city,
            "district": f.district,
            // Beijing is a municipality: province-level and city at once.
            "state": f.city,
            "postalCode": f.postal_code,
            "country": "CN",
        },
    })
}

/// `https://host` of a URL (the booking site, from the deep-link template).
fn origin(url: &str) -> &str {
    let host_start = url.find("://").map_or(0, |i| i + 3);
    match url[host_start..].find(['/', '?', '#']) {
        Some(end) => &url[..host_start + end],
        None => url,
    }
}

/// One doctor's clinic session.
pub fn schedule(settings: &Settings, s: &ScheduleRow) -> Value {
    let hospital = &settings.hospital.id;
    let session = match s.session.as_str() {
        "morning" => "上午 morning",
        "afternoon" => "下午 afternoon",
        _ => "晚间 evening",
    };
    let mut comment = format!("{} {} · {session}", s.doctor_name, s.doctor_title);
    if let Some(reason) = &s.stop_reason {
        comment.push_str(&format!(" · 停诊 stopped: {reason}"));
    }
    json!({
        "resourceType": "Schedule",
        "id": scoped(hospital, s.schedule_id),
        "active": s.open,
        "serviceType": clinic_level(&s.clinic_level),
        "specialty": department(&s.department_code, &s.department_name),
        "actor": [
            location_ref(settings),
            practitioner_ref(hospital, s.doctor_id, &s.doctor_name),
        ],
        "planningHorizon": { "start": instant(s.starts_at), "end": instant(s.ends_at) },
        "comment": comment,
    })
}

/// Where a patient books this slot (SMART `booking-deep-link`).
pub fn deep_link(settings: &Settings, slot_id: &str) -> String {
    settings.fhir.booking_link_template.replace("{slot}", slot_id)
}

/// One time segment. The SMART bulk feed allows only `free` and `busy`
/// (`bulk`); the API shows the finer statuses.
pub fn slot(settings: &Settings, s: &SlotRow, bulk: bool) -> Value {
    let hospital = &settings.hospital.id;
    let id = scoped(hospital, s.segment_id);
    let status = if bulk && s.status != "free" {
        "busy"
    } else {
        s.status.as_str()
    };
    json!({
        "resourceType": "Slot",
        "id": id,
        "schedule": { "reference": format!("Schedule/{}", scoped(hospital, s.schedule_id)) },
        "status": status,
        "start": instant(s.starts_at),
        "end": instant(s.ends_at),
        "serviceType": clinic_level(&s.clinic_level),
        "specialty": department(&s.department_code, &s.department_name),
        "extension": [
            { "url": SLOT_CAPACITY, "valueInteger": s.seats_left },
            { "url": BOOKING_DEEP_LINK, "valueUrl": deep_link(settings, &id) },
            { "url": BOOKING_PHONE, "valueString": settings.fhir.booking_phone },
        ],
    })
}

/// A free slot offered by `$find`: no patient yet, Location and
/// Practitioner still to accept.
pub fn proposed_appointment(settings: &Settings, s: &SlotRow) -> Value {
    let hospital = &settings.hospital.id;
    json!({
        "resourceType": "Appointment",
        "status": "proposed",
        "serviceType": clinic_level(&s.clinic_level),
        "specialty": department(&s.department_code, &s.department_name),
        "start": instant(s.starts_at),
        "end": instant(s.ends_at),
        "slot": [{ "reference": format!("Slot/{}", scoped(hospital, s.segment_id)) }],
        "participant": [
            { "actor": location_ref(settings), "status": "needs-action" },
            { "actor": practitioner_ref(hospital, s.doctor_id, &s.doctor_name), "status": "needs-action" },
        ],
    })
}

/// A booking's FHIR status, and why it was cancelled.
fn appointment_status(b: &Booking, ctx: &ScheduleContext) -> (&'static str, Option<String>) {
    match b.status {
        BookingStatus::Held => ("pending", None),
        BookingStatus::Confirmed => ("booked", None),
        BookingStatus::CheckedIn => ("arrived", None),
        BookingStatus::Completed => ("fulfilled", None),
        BookingStatus::NoShow => ("noshow", None),
        BookingStatus::Cancelled => ("cancelled", Some("患者取消 cancelled by the patient".to_owned())),
        BookingStatus::Expired => (
            "cancelled",
            Some("未支付，预约已过期 the hold expired unpaid".to_owned()),
        ),
        BookingStatus::Stopped => (
            "cancelled",
            Some(format!(
                "停诊 clinic stopped: {}",
                ctx.stop_reason.as_deref().unwrap_or("by the hospital")
            )),
        ),
    }
}

fn participants(settings: &Settings, patient: Uuid, ctx: &ScheduleContext) -> Value {
    json!([
        { "actor": { "reference": format!("Patient/{}", patient.hyphenated()) }, "status": "accepted" },
        { "actor": location_ref(settings), "status": "accepted" },
        {
            "actor": practitioner_ref(&settings.hospital.id, ctx.doctor_id, &ctx.doctor_name),
            "status": "accepted",
        },
    ])
}

/// A booking as an Appointment; a hold carries its deadline.
pub fn appointment(settings: &Settings, b: &Booking, ctx: &ScheduleContext) -> Value {
    let (status, reason) = appointment_status(b, ctx);
    let mut a = json!({
        "resourceType": "Appointment",
        "id": b.booking_id.to_string(),
        "status": status,
        "serviceType": clinic_level(&ctx.clinic_level),
        "specialty": department(&ctx.department_code, &ctx.department_name),
        "start": instant(b.segment_starts_at.with_timezone(&Utc)),
        "end": instant(b.segment_ends_at.with_timezone(&Utc)),
        "created": instant(b.created_at.with_timezone(&Utc)),
        "slot": [{ "reference": format!("Slot/{}", b.slot_id) }],
        "participant": participants(settings, b.patient_id, ctx),
    });
    if let Some(obj) = a.as_object_mut() {
        if let Some(reason) = reason {
            obj.insert("cancelationReason".into(), json!({ "text": reason }));
        }
        if let Some(deadline) = b.hold_deadline {
            obj.insert(
                "extension".into(),
                json!([{ "url": HOLD_EXPIRES, "valueInstant": instant(deadline.with_timezone(&Utc)) }]),
            );
        }
    }
    a
}

/// A waitlist entry (候补) as an Appointment: `waitlist` while waiting for
/// the schedule's session, `cancelled` once it left the line. (A promoted
/// entry is answered with its booking's status, see the routes.)
pub fn waitlist_appointment(
    settings: &Settings,
    entry: Uuid,
    patient: Uuid,
    waiting: bool,
    created: DateTime<Utc>,
    ctx: &ScheduleContext,
) -> Value {
    let mut a = json!({
        "resourceType": "Appointment",
        "id": scoped(&settings.hospital.id, entry),
        "status": if waiting { "waitlist" } else { "cancelled" },
        "serviceType": clinic_level(&ctx.clinic_level),
        "specialty": department(&ctx.department_code, &ctx.department_name),
        "created": instant(created),
        "requestedPeriod": [{ "start": instant(ctx.starts_at), "end": instant(ctx.ends_at) }],
        "participant": participants(settings, patient, ctx),
    });
    if let (false, Some(obj)) = (waiting, a.as_object_mut()) {
        obj.insert(
            "cancelationReason".into(),
            json!({ "text": "离开候补 left the waitlist" }),
        );
    }
    a
}

/// A `searchset` Bundle.
pub fn searchset(total: i64, self_url: &str, next_url: Option<&str>, entries: Vec<(String, Value)>) -> Value {
    let mut links = vec![json!({ "relation": "self", "url": self_url })];
    if let Some(next) = next_url {
        links.push(json!({ "relation": "next", "url": next }));
    }
    let entry: Vec<Value> = entries
        .into_iter()
        .map(|(full_url, resource)| json!({ "fullUrl": full_url, "resource": resource, "search": { "mode": "match" } }))
        .collect();
    json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "total": total,
        "link": links,
        "entry": entry,
    })
}

/// What this server does, for `GET /fhir/metadata`.
pub fn capability_statement(settings: &Settings, base: &str, now: DateTime<Utc>) -> Value {
    let search =
        |name: &str, kind: &str, doc: &str| json!({ "name": name, "type": kind, "documentation": doc });
    let operation = |name: &str| json!({ "name": name, "definition": format!("https://jyt.example/fhir/OperationDefinition/{name}") });
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": instant(now),
        "publisher": "京医通 jyt",
        "kind": "instance",
        "software": { "name": "jyt slot-inventory" },
        "implementation": {
            "description": format!("{} appointments (FHIR R4)", settings.hospital.name),
            "url": base,
        },
        // R4. (The HL7 R4 JSON schema's enum stops at 4.0.0, the release
        // 4.0.1 only corrected; 4.0.0 passes every R4 validator.)
        "fhirVersion": "4.0.0",
        "format": ["application/fhir+json"],
        "rest": [{
            "mode": "server",
            "documentation": "Errors are OperationOutcomes whose issue[0].details.coding (system urn:jyt:error-code) is the stable machine code.",
            "resource": [
                {
                    "type": "Location",
                    "interaction": [{ "code": "read" }],
                },
                {
                    "type": "Schedule",
                    "interaction": [{ "code": "read" }, { "code": "search-type" }],
                    "searchParam": [
                        search("_id", "token", "Schedule ids, comma separated"),
                        search("actor", "reference", "Location/<hospital> or Practitioner/<id>"),
                        search("specialty", "token", "department code (urn:jyt:department)"),
                        search("date", "date", "start of the session; eq, ge, gt, le, lt"),
                        search("_count", "number", "page size, 1 to 500 (50)"),
                        search("_page", "number", "1-based page"),
                    ],
                },
                {
                    "type": "Slot",
                    "interaction": [{ "code": "read" }, { "code": "search-type" }],
                    "searchParam": [
                        search("_id", "token", "Slot ids, comma separated"),
                        search("schedule", "reference", "Schedule/<id>"),
                        search("status", "token", "free, busy, busy-tentative, busy-unavailable"),
                        search("start", "date", "eq, ge, gt, le, lt; may repeat"),
                        search("specialty", "token", "department code (urn:jyt:department)"),
                        search("_count", "number", "page size, 1 to 500 (50)"),
                        search("_page", "number", "1-based page"),
                    ],
                },
                {
                    "type": "Appointment",
                    "interaction": [{ "code": "read" }],
                    "operation": [operation("find"), operation("hold"), operation("book")],
                },
            ],
            "operation": [operation("bulk-publish")],
        }],
    })
}

use card_issuing::family::{self, BindingView, ConfirmRequest, VerificationRequest};
use card_issuing::{AppState, CardError};
use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{TestApp, spawn_app};

/// Bind an adult member as the member themself confirms: the one-time code
/// card-issuing makes, entered at `now`.
async fn bind_adult(
    state: &AppState,
    holder: Uuid,
    member: Uuid,
    now: DateTime<Utc>,
) -> Result<(BindingView, bool), CardError> {
    let req = VerificationRequest {
        member_id: member,
        relationship: "parent".into(),
    };
    let started = family::start_verification(state, holder, &req, now).await?;
    family::confirm_verification(
        state,
        started.verification_id,
        &ConfirmRequest { code: started.code },
        now,
    )
    .await
}

/// A wall-clock time in Beijing, as the UTC instant the service stores.
#[expect(clippy::unwrap_used, reason = "test helper with literal dates")]
fn beijing(y: i32, m: u32, d: u32, h: u32, min: u32, s: u32) -> DateTime<Utc> {
    jyt_domain::time::at(
        NaiveDate::from_ymd_opt(y, m, d).unwrap(),
        chrono::NaiveTime::from_hms_opt(h, min, s).unwrap(),
    )
}

async fn people(app: &TestApp, n: usize) -> Vec<Uuid> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(app.new_person().await);
    }
    v
}

#[tokio::test]
async fn a_holder_makes_at_most_five_new_bindings_per_shanghai_calendar_month() {
    let app = spawn_app().await;
    let holder = app.new_person().await;
    let members = people(&app, 8).await;
    let jan = beijing(2026, 1, 10, 9, 0, 0);
    for m in &members[..5] {
        let (_, created) = bind_adult(&app.state, holder, *m, jan).await.unwrap();
        assert!(created);
    }
    // Binding an already-bound member again is a replay, not a sixth.
    let (_, created) = bind_adult(&app.state, holder, members[0], jan).await.unwrap();
    assert!(!created);

    // 23:59:59 on 31 January in Beijing: still January.
    let last_second = beijing(2026, 1, 31, 23, 59, 59);
    let refused = bind_adult(&app.state, holder, members[5], last_second).await;
    assert!(
        matches!(refused, Err(CardError::HolderMonthlyLimit { limit: 5 })),
        "{refused:?}"
    );
    // Unbinding does not give the place back.
    let (b, _) = bind_adult(&app.state, holder, members[1], jan).await.unwrap();
    family::unbind(&app.state, b.binding_id, holder, last_second)
        .await
        .unwrap();
    assert!(
        bind_adult(&app.state, holder, members[5], last_second)
            .await
            .is_err()
    );

    // Midnight in Beijing is 16:00 UTC on 31 January: a new month there.
    let feb = beijing(2026, 2, 1, 0, 0, 0);
    assert_eq!(feb, Utc.with_ymd_and_hms(2026, 1, 31, 16, 0, 0).unwrap());
    let (_, created) = bind_adult(&app.state, holder, members[5], feb).await.unwrap();
    assert!(created);
}

#[tokio::test]
async fn a_person_is_bound_at_most_twice_a_month_across_all_holders() {
    let app = spawn_app().await;
    let member = app.new_person().await;
    let holders = people(&app, 3).await;
    let mar = beijing(2026, 3, 5, 12, 0, 0);
    bind_adult(&app.state, holders[0], member, mar).await.unwrap();
    bind_adult(&app.state, holders[1], member, mar).await.unwrap();
    let third = bind_adult(&app.state, holders[2], member, beijing(2026, 3, 31, 23, 0, 0)).await;
    assert!(
        matches!(third, Err(CardError::MemberMonthlyLimit { limit: 2 })),
        "{third:?}"
    );
    bind_adult(&app.state, holders[2], member, beijing(2026, 4, 1, 0, 0, 1))
        .await
        .unwrap();
}

#[tokio::test]
async fn concurrent_bindings_cannot_exceed_the_monthly_limit() {
    let app = spawn_app().await;
    let holder = app.new_person().await;
    let members = people(&app, 10).await;
    let now = Utc::now();
    let attempts = members.iter().map(|m| {
        let state = app.state.clone();
        let member = *m;
        tokio::spawn(async move { bind_adult(&state, holder, member, now).await })
    });
    let results = futures::future::join_all(attempts).await;
    let ok = results.iter().filter(|r| matches!(r, Ok(Ok(_)))).count();
    let limited = results
        .iter()
        .filter(|r| matches!(r, Ok(Err(CardError::HolderMonthlyLimit { .. }))))
        .count();
    assert_eq!((ok, limited), (5, 5));
}

#[tokio::test]
async fn proofs_depend_on_age_and_either_side_may_unbind() {
    let app = spawn_app().await;
    let holder = app.new_person().await;
    let today = jyt_domain::time::today();
    let child = app
        .new_person_born(Some(today - chrono::Duration::days(365 * 10)))
        .await;
    let grown = app.new_person().await;
    let path = format!("/v1/persons/{holder}/family");

    let no_proof = app
        .post(&path, &json!({ "member_id": child, "relationship": "child" }))
        .await;
    assert_eq!(no_proof.status, 422);
    assert_eq!(no_proof.body["code"], "GUARDIAN_PROOF_REQUIRED");
    assert_eq!(no_proof.body["field"], "guardian_proof_ref");
    let child_bound = app
        .post(
            &path,
            &json!({ "member_id": child, "relationship": "child", "guardian_proof_ref": "hukou-123" }),
        )
        .await;
    assert_eq!(child_bound.status, 201, "{:?}", child_bound.body);

    let unverified = app
        .post(
            &path,
            &json!({ "member_id": grown, "relationship": "spouse", "guardian_proof_ref": "x" }),
        )
        .await;
    assert_eq!(unverified.status, 422);
    assert_eq!(unverified.body["code"], "MEMBER_VERIFICATION_REQUIRED");
    // A reference typed in is no verification: the field does not exist.
    let typed = app
        .post(
            &path,
            &json!({ "member_id": grown, "relationship": "spouse", "member_verification_ref": "sms-9" }),
        )
        .await;
    assert_eq!(typed.status, 400);
    assert_eq!(typed.body["field"], "member_verification_ref");
    // The member's one-time code: a retry answers the same binding.
    let started = app
        .post(
            &format!("{path}/verifications"),
            &json!({ "member_id": grown, "relationship": "spouse" }),
        )
        .await;
    assert_eq!(started.status, 201, "{:?}", started.body);
    let confirm = format!(
        "/v1/family-verifications/{}/confirm",
        started.body["verification_id"].as_str().unwrap()
    );
    let code = json!({ "code": started.body["code"] });
    let bound = app.post(&confirm, &code).await;
    assert_eq!(bound.status, 201, "{:?}", bound.body);
    let again = app.post(&confirm, &code).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body["binding_id"], bound.body["binding_id"]);
    let child_code = app
        .post(
            &format!("{path}/verifications"),
            &json!({ "member_id": child, "relationship": "child" }),
        )
        .await;
    assert_eq!(
        child_code.status, 422,
        "an under-16 is bound with a guardian's proof"
    );

    let myself = app
        .post(
            &path,
            &json!({ "member_id": holder, "relationship": "self", "guardian_proof_ref": "x" }),
        )
        .await;
    assert_eq!(myself.status, 400);
    assert_eq!(myself.body["field"], "member_id");

    let list = app.get(&path).await;
    assert_eq!(list.body["members"].as_array().unwrap().len(), 2);

    let binding = bound.body["binding_id"].as_str().unwrap();
    let unbind = format!("/v1/family-bindings/{binding}/unbind");
    let stranger = app.post(&unbind, &json!({ "acting_person_id": child })).await;
    assert_eq!(stranger.status, 403);
    assert_eq!(stranger.body["code"], "NOT_BINDING_PARTY");
    // The member, not the holder, ends it.
    let by_member = app.post(&unbind, &json!({ "acting_person_id": grown })).await;
    assert_eq!(by_member.status, 200, "{:?}", by_member.body);
    assert!(by_member.body["unbound_at"].is_string());
    let child_binding = child_bound.body["binding_id"].as_str().unwrap();
    let by_holder = app
        .post(
            &format!("/v1/family-bindings/{child_binding}/unbind"),
            &json!({ "acting_person_id": holder }),
        )
        .await;
    assert_eq!(by_holder.status, 200);
    let list = app.get(&path).await;
    assert!(list.body["members"].as_array().unwrap().is_empty());
}

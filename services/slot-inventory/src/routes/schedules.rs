use actix_web::{HttpResponse, get, web};
use chrono::NaiveDate;
use jyt_web::Query;
use serde::Deserialize;

use crate::error::SlotError;
use crate::schedule::listing;
use crate::state::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DateQuery {
    /// Visit date, `YYYY-MM-DD`, in Asia/Shanghai.
    pub date: NaiveDate,
}

#[get("/v1/schedules")]
pub async fn list(state: web::Data<AppState>, query: Query<DateQuery>) -> Result<HttpResponse, SlotError> {
    Ok(HttpResponse::Ok().json(listing::schedules_on(&state, query.0.date).await?))
}

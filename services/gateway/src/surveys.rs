//! The client of channel-accounting's survey door (`/internal/v1/surveys`):
//! post-visit surveys live there, beside the figures operators read. Every
//! call carries an internal token for audience `channel-accounting`; what
//! the door answers is passed back as it came, except that a refused token
//! or a failure of channel-accounting is ours to report.

use std::time::Duration;

use actix_web::http::StatusCode;
use serde::Deserialize;
use uuid::Uuid;

use crate::error::GatewayError;
use crate::settings::ChannelAccountingSettings;
use crate::upstream::Forwarded;

pub struct SurveyDesk {
    http: reqwest::Client,
    base: crate::upstream::BaseUrl,
    internal: jyt_signing::internal::Minter,
}

/// Whose a survey is: what the gateway checks before showing or answering it.
#[derive(Debug, Clone, Deserialize)]
pub struct SurveyOwner {
    pub owner_app: String,
    pub patient_id: Uuid,
}

fn unavailable(e: impl std::fmt::Display) -> GatewayError {
    GatewayError::SurveysUnavailable(e.to_string())
}

impl SurveyDesk {
    pub fn new(
        settings: &ChannelAccountingSettings,
        internal: jyt_signing::internal::Minter,
        pool_idle_timeout: Duration,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_millis(settings.timeout_ms))
                .pool_idle_timeout(pool_idle_timeout)
                .build()?,
            base: crate::upstream::BaseUrl::parse("channel_accounting.base_url", &settings.base_url)?,
            internal,
        })
    }

    /// One call to the door, its answer as it came.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Forwarded, GatewayError> {
        let mut req = self
            .http
            .request(method, self.base.join(&format!("/internal/v1{path}")))
            .header(jyt_signing::internal::HEADER, self.internal.token());
        if let Some(body) = body {
            req = req.json(body);
        }
        let res = req.send().await.map_err(unavailable)?;
        let answer = Forwarded::read(
            res,
            &["content-type", "content-disposition", "idempotency-replayed"],
        )
        .await
        .map_err(unavailable)?;
        if answer.status == StatusCode::UNAUTHORIZED {
            return Err(GatewayError::InternalAuthRefused);
        }
        if answer.status.is_server_error() {
            return Err(unavailable(format!("{path} answered {}", answer.status)));
        }
        Ok(answer)
    }

    /// The survey, and whose it is; `SURVEY_NOT_FOUND` passed back as it came.
    pub async fn read(&self, id: Uuid) -> Result<Result<(Forwarded, SurveyOwner), Forwarded>, GatewayError> {
        let answer = self
            .call(reqwest::Method::GET, &format!("/surveys/{id}"), None)
            .await?;
        if !answer.status.is_success() {
            return Ok(Err(answer));
        }
        let owner: SurveyOwner = serde_json::from_slice(&answer.body).map_err(unavailable)?;
        Ok(Ok((answer, owner)))
    }

    /// A member hospital's satisfaction figures, with the caller's query
    /// (`from`, `to`, `group`, `channel`, `format`) as it came: the door
    /// answers for that hospital only, whatever the query says.
    pub async fn hospital_figures(&self, hospital: &str, query: &str) -> Result<Forwarded, GatewayError> {
        let path = match query {
            "" => format!("/hospitals/{hospital}/satisfaction"),
            q => format!("/hospitals/{hospital}/satisfaction?{q}"),
        };
        self.call(reqwest::Method::GET, &path, None).await
    }

    /// Record answers; the door's answer as it came (200, 400, 409, 410).
    pub async fn answer(&self, id: Uuid, answers: &serde_json::Value) -> Result<Forwarded, GatewayError> {
        self.call(
            reqwest::Method::PUT,
            &format!("/surveys/{id}/answers"),
            Some(answers),
        )
        .await
    }
}

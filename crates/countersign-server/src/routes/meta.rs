//! Health, readiness, metrics, keys and the API description.
use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use countersign_core::Error;
use countersign_proto::HealthResponse;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::ApiResult;
use crate::state::AppState;

#[utoipa::path(get, path = "/healthz", tag = "meta", responses((status = 200, body = HealthResponse)))]
pub async fn healthz() -> Json<HealthResponse> {
    Json(HealthResponse {
        status: "ok".into(),
    })
}

/// Ready when the store answers.
#[utoipa::path(get, path = "/readyz", tag = "meta",
    responses((status = 200, body = HealthResponse), (status = 503, body = countersign_proto::ErrorBody)))]
pub async fn readyz(State(state): State<AppState>) -> ApiResult<Json<HealthResponse>> {
    state.store.has_tenants().await?;
    Ok(Json(HealthResponse {
        status: "ready".into(),
    }))
}

/// Prometheus text format, for a scraper with the `metrics.token` (401 without it). Served
/// here only when `metrics.token` is set and `metrics.listen` is not (404 otherwise).
#[utoipa::path(get, path = "/metrics", tag = "meta",
    responses((status = 200, content_type = "text/plain", description = "Prometheus text format"),
        (status = 401, body = countersign_proto::ErrorBody, description = "no bearer token, or not the `metrics.token`"),
        (status = 404, body = countersign_proto::ErrorBody, description = "metrics are not served on this listener (no `metrics.token`, or `metrics.listen` is set)")),
    security(("metrics_token" = [])))]
pub async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    let settings = &state.settings.metrics;
    if settings.listen.is_some() || settings.token.is_none() {
        return Err(Error::NotFound(
            "metrics are not served here; see `metrics.token` and `metrics.listen`".into(),
        )
        .into());
    }
    check_scraper(&state, &headers)?;
    Ok(render(&state).await)
}

/// `/metrics` on the separate `metrics.listen` address.
pub async fn metrics_listener(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    check_scraper(&state, &headers)?;
    Ok(render(&state).await)
}

/// With a `metrics.token`, the caller must present it.
fn check_scraper(state: &AppState, headers: &HeaderMap) -> Result<(), Error> {
    let Some(expected) = &state.settings.metrics.token else {
        return Ok(());
    };
    let presented = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    // Compared as hashes, in constant time: the token's length and prefix stay secret.
    let (a, b) = (
        Sha256::digest(presented.as_bytes()),
        Sha256::digest(expected.as_bytes()),
    );
    let same = a
        .iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0;
    if same && !presented.is_empty() {
        Ok(())
    } else {
        Err(Error::unauthorized(
            "`/metrics` needs `Authorization: Bearer <metrics.token>`",
        ))
    }
}

async fn render(state: &AppState) -> Response {
    if let Ok(pending) = state.store.pending_count().await {
        metrics::gauge!("countersign_approval_requests_pending").set(pending as f64);
    }
    metrics::gauge!("countersign_long_polls_waiting").set(state.waiters.len() as f64);
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::telemetry::render_metrics(),
    )
        .into_response()
}

/// The public keys that verify access tokens.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "meta", responses((status = 200, body = Object)))]
pub async fn jwks(State(state): State<AppState>) -> Json<Value> {
    Json(state.signer.current().jwks().clone())
}

pub async fn openapi(State(state): State<AppState>) -> Json<Value> {
    Json(crate::openapi::document_for(&state.settings))
}

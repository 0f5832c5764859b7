//! Health, readiness, metrics, keys and the API description.
use axum::Json;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use countersign_proto::HealthResponse;
use serde_json::Value;

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

/// Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "meta", responses((status = 200, content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
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

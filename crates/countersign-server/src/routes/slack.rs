//! Slack's Interactivity Request URL: button clicks on Countersign's messages. No API key:
//! the signature (the tenant's signing secret over the raw body) authenticates the call.
//! Slack wants an answer within three seconds: the click is verified and decided (durably)
//! first, then answered, and Slack is shown the outcome afterwards.
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use countersign_core::Error;
use countersign_proto::ErrorCode;
use utoipa::ToSchema;

use crate::error::ApiResult;
use crate::notify::{channels, slack};
use crate::state::AppState;

/// The form Slack posts (`application/x-www-form-urlencoded`).
#[derive(Debug, ToSchema)]
pub struct SlackInteractivityForm {
    /// Slack's interaction payload (`block_actions`) as JSON.
    pub payload: String,
}

impl SlackInteractivityForm {
    /// Reads the form from the raw body (after its signature was checked).
    fn parse(body: &[u8]) -> Result<SlackInteractivityForm, Error> {
        url::form_urlencoded::parse(body)
            .find(|(k, _)| k == "payload")
            .map(|(_, v)| SlackInteractivityForm {
                payload: v.into_owned(),
            })
            .ok_or_else(|| Error::invalid("the body has no `payload`"))
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// A button click on a Countersign message in Slack, signed by the tenant's Slack app: it is
/// decided before the 200, and Slack then shows the outcome by replacing the message (or,
/// when the click cannot decide, with a reply only the clicker sees).
#[utoipa::path(post, path = "/integrations/slack/{tenant}/interactivity", tag = "integrations",
    params(
        ("tenant" = String, Path, description = "The tenant whose Slack app sends the click"),
        ("X-Slack-Signature" = String, Header, description = "`v0=` and the hex HMAC-SHA256 of `v0:{timestamp}:{body}` with the signing secret"),
        ("X-Slack-Request-Timestamp" = String, Header, description = "Unix time; at most five minutes from the server's clock"),
    ),
    request_body(content = SlackInteractivityForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Verified; the click is acted on and answered in Slack"),
        (status = 400, body = countersign_proto::ErrorBody, description = "Signed, but the body is not an interaction payload"),
        (status = 401, body = countersign_proto::ErrorBody, description = "`invalid_signature`: unknown tenant, no Slack settings, bad signature or stale timestamp"),
    ))]
pub async fn interactivity(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<StatusCode> {
    // Unknown tenants and tenants without Slack get the same answer as a bad signature.
    let config = channels::slack_config(&state, &tenant)
        .await?
        .filter(|c| !c.signing_secret.is_empty())
        .ok_or_else(|| {
            Error::coded(
                ErrorCode::InvalidSignature,
                "this tenant does not accept Slack requests",
            )
        })?;
    slack::verify_signature(
        &config.signing_secret,
        header(&headers, "x-slack-request-timestamp"),
        header(&headers, "x-slack-signature"),
        &body,
        state.clock.now(),
    )?;
    let form = SlackInteractivityForm::parse(&body)?;
    let interaction: slack::Interaction = serde_json::from_str(&form.payload)
        .map_err(|_| Error::invalid("`payload` is not a Slack interaction"))?;
    // The decision is made (and durable) before Slack hears 200; showing it in Slack, which
    // takes calls to Slack, happens afterwards.
    let answer = slack::decide_click(&state, &tenant, &config, &interaction).await;
    tokio::spawn(async move {
        slack::answer_click(&state, &config, &interaction, answer).await;
    });
    Ok(StatusCode::OK)
}

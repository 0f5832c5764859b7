//! The webhooks part of the notifications page: the section, and the forms that add, enable,
//! rotate, test, redeliver and delete endpoints.
use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use countersign_core::notify::Event;
use countersign_core::{Error, Principal};
use countersign_proto::notify::{CreateWebhook, UpdateWebhook, WebhookView};
use serde::Deserialize;

use super::super::views::when;
use super::super::{Posted, UiError, see_other};
use crate::accounts::Viewer;
use crate::notify::webhooks_admin;
use crate::state::AppState;

use super::*;

/// The webhook parts of [`Shown`].
pub(super) struct WebhooksShown {
    pub(super) notice: Option<Notice>,
    pub(super) form: Option<WebhookForm>,
    pub(super) secret: Option<NewSecret>,
    pub(super) endpoint_notice: Option<(String, Notice)>,
    pub(super) endpoint_test: Option<(String, TestOutcome)>,
    pub(super) confirm_delete: Option<String>,
}

pub(super) fn for_endpoint<T>(shown: &mut Option<(String, T)>, id: &str) -> Option<T> {
    match shown.take() {
        Some((for_id, value)) if for_id == id => Some(value),
        other => {
            *shown = other;
            None
        }
    }
}

/// The tenant's endpoints, each with its recent deliveries, and the add form.
pub(super) async fn webhooks_section(
    state: &AppState,
    p: &Principal,
    mut shown: WebhooksShown,
) -> Result<WebhooksSection, Error> {
    let mut endpoints = Vec::new();
    for endpoint in webhooks_admin::list(state, p).await?.webhooks {
        let log =
            match webhooks_admin::deliveries(state, p, &endpoint.id, None, Some(RECENT_DELIVERIES))
                .await
            {
                Ok(log) => log,
                // Deleted in the meantime.
                Err(Error::NotFound(_)) => continue,
                Err(e) => return Err(e),
            };
        let more = log.next_cursor.is_some();
        let deliveries = log.deliveries.into_iter().map(Into::into).collect();
        endpoints.push(webhook_row(endpoint, deliveries, more, &mut shown));
    }
    let form = shown.form;
    let ticked = |name: &str| {
        form.as_ref().is_some_and(|f| {
            f.fields
                .get(&format!("{EVENT_FIELD}{name}"))
                .is_some_and(|v| !v.is_empty())
        })
    };
    let events = Event::ALL
        .iter()
        .map(|e| {
            let name = e.webhook_type();
            EventChoice {
                field: format!("{EVENT_FIELD}{name}"),
                checked: ticked(&name),
                name,
            }
        })
        .collect();
    Ok(WebhooksSection {
        endpoints,
        notice: shown.notice,
        secret: shown.secret,
        url: form.as_ref().map(|f| f.url.clone()).unwrap_or_default(),
        description: form.map(|f| f.description).unwrap_or_default(),
        events,
        private_allowed: state.settings.outbound.allow_private_networks,
        http_allowed: state.settings.outbound.allow_http,
    })
}

pub(super) fn webhook_row(
    endpoint: WebhookView,
    deliveries: Vec<WebhookDelivery>,
    more: bool,
    shown: &mut WebhooksShown,
) -> WebhookRow {
    let id = endpoint.id;
    WebhookRow {
        notice: for_endpoint(&mut shown.endpoint_notice, &id),
        test: for_endpoint(&mut shown.endpoint_test, &id),
        confirm_delete: shown.confirm_delete.as_deref() == Some(id.as_str()),
        url: endpoint.url,
        events: endpoint.events,
        description: endpoint.description,
        disabled: endpoint.disabled,
        disabled_reason: endpoint.disabled_reason,
        created: when(endpoint.created_at),
        updated: when(endpoint.updated_at),
        deliveries,
        more,
        id,
    }
}

/// The page again with a refused webhook form's error (and the status the API would answer),
/// or the error page for anything else.
pub(super) async fn webhook_refused(
    state: &AppState,
    viewer: &Viewer,
    e: Error,
    shown: impl FnOnce(Option<Notice>) -> Shown,
) -> Result<Response, UiError> {
    match e {
        Error::Invalid { .. }
        | Error::Conflict { .. }
        | Error::NotFound(_)
        | Error::AlreadyExists(_) => {
            let status =
                StatusCode::from_u16(e.code().http_status()).unwrap_or(StatusCode::BAD_REQUEST);
            page(state, viewer, shown(Notice::error(&e)), status).await
        }
        e => Err(e.into()),
    }
}

/// On to the page, with a notice beside the endpoint the form changed.
pub(super) fn webhook_done(done: &str, id: &str) -> Response {
    let id: String = url::form_urlencoded::byte_serialize(id.as_bytes()).collect();
    see_other(&format!(
        "{PAGE}?done=webhook-{done}&webhook={id}#webhook-{id}"
    ))
}

/// The add form: the URL, `event:<type>` checkboxes (none ticked: every event) and a
/// description.
#[derive(Debug, Default, Deserialize)]
pub struct WebhookForm {
    #[serde(default)]
    url: String,
    #[serde(default)]
    description: String,
    /// `event:<type>` → `on`.
    #[serde(flatten)]
    fields: BTreeMap<String, String>,
}

pub(super) fn webhook_input(f: &WebhookForm) -> CreateWebhook {
    CreateWebhook {
        url: f.url.trim().to_string(),
        events: f
            .fields
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .filter_map(|(k, _)| k.strip_prefix(EVENT_FIELD).map(str::to_string))
            .collect(),
        description: non_empty(&f.description),
    }
}

/// Adds an endpoint and shows its signing secret, this once.
pub async fn create_webhook(
    State(state): State<AppState>,
    posted: Posted<WebhookForm>,
) -> Result<Response, UiError> {
    let p = admin(&posted.viewer)?;
    match webhooks_admin::create(&state, p, webhook_input(&posted.form)).await {
        Ok(created) => {
            let shown = Shown {
                webhooks: Notice::ok("Webhook endpoint added."),
                webhook_secret: Some(NewSecret {
                    endpoint_id: created.view.id,
                    url: created.view.url,
                    secret: created.secret,
                    rotated: false,
                }),
                ..Shown::default()
            };
            page(&state, &posted.viewer, shown, StatusCode::CREATED).await
        }
        Err(e) => {
            let form = posted.form;
            webhook_refused(&state, &posted.viewer, e, |notice| Shown {
                webhooks: notice,
                webhook_form: Some(form),
                ..Shown::default()
            })
            .await
        }
    }
}

/// Gives an endpoint a new signing secret and shows it, this once.
pub async fn rotate_webhook_secret(
    State(state): State<AppState>,
    Path(id): Path<String>,
    posted: Posted<Empty>,
) -> Result<Response, UiError> {
    let p = admin(&posted.viewer)?;
    match webhooks_admin::rotate_secret(&state, p, &id).await {
        Ok(rotated) => {
            let shown = Shown {
                endpoint_notice: Notice::ok(
                    "New signing secret made: later deliveries are signed with it only.",
                )
                .map(|n| (id, n)),
                webhook_secret: Some(NewSecret {
                    endpoint_id: rotated.view.id,
                    url: rotated.view.url,
                    secret: rotated.secret,
                    rotated: true,
                }),
                ..Shown::default()
            };
            page(&state, &posted.viewer, shown, StatusCode::OK).await
        }
        Err(e) => {
            webhook_refused(&state, &posted.viewer, e, |notice| Shown {
                webhooks: notice,
                ..Shown::default()
            })
            .await
        }
    }
}

/// Enables (`enabled=on`) or disables an endpoint.
#[derive(Debug, Default, Deserialize)]
pub struct EnableForm {
    #[serde(default)]
    enabled: Option<String>,
}

pub async fn enable_webhook(
    State(state): State<AppState>,
    Path(id): Path<String>,
    posted: Posted<EnableForm>,
) -> Result<Response, UiError> {
    let p = admin(&posted.viewer)?;
    let enable = posted.form.enabled.as_deref() == Some("on");
    let change = UpdateWebhook {
        disabled: Some(!enable),
        ..UpdateWebhook::default()
    };
    match webhooks_admin::update(&state, p, &id, change).await {
        Ok(_) => Ok(webhook_done(
            if enable { "enabled" } else { "disabled" },
            &id,
        )),
        Err(e) => {
            webhook_refused(&state, &posted.viewer, e, |notice| Shown {
                webhooks: notice,
                ..Shown::default()
            })
            .await
        }
    }
}

/// Deleting asks first: without `confirm=yes` the page asks to confirm.
#[derive(Debug, Default, Deserialize)]
pub struct DeleteForm {
    #[serde(default)]
    confirm: Option<String>,
}

pub async fn delete_webhook(
    State(state): State<AppState>,
    Path(id): Path<String>,
    posted: Posted<DeleteForm>,
) -> Result<Response, UiError> {
    let p = admin(&posted.viewer)?;
    let result = if posted.form.confirm.as_deref() == Some("yes") {
        webhooks_admin::delete(&state, p, &id).await
    } else {
        match webhooks_admin::get(&state, p, &id).await {
            Ok(_) => {
                let shown = Shown {
                    confirm_delete: Some(id.clone()),
                    endpoint_notice: Notice::warn(
                        "Delete this endpoint? It receives nothing more and its pending deliveries fail. This cannot be undone.",
                    )
                    .map(|n| (id, n)),
                    ..Shown::default()
                };
                return page(&state, &posted.viewer, shown, StatusCode::OK).await;
            }
            Err(e) => Err(e),
        }
    };
    match result {
        Ok(()) => Ok(see_other(&format!("{PAGE}?done=webhook-deleted#webhooks"))),
        Err(e) => {
            webhook_refused(&state, &posted.viewer, e, |notice| Shown {
                webhooks: notice,
                ..Shown::default()
            })
            .await
        }
    }
}

/// Sends a signed `webhook.test` event to the endpoint at once and shows how it went.
pub async fn test_webhook(
    State(state): State<AppState>,
    Path(id): Path<String>,
    posted: Posted<Empty>,
) -> Result<Response, UiError> {
    let p = admin(&posted.viewer)?;
    match webhooks_admin::send_test(&state, p, &id).await {
        Ok(attempt) => {
            let shown = Shown {
                endpoint_test: Some((id, attempt.into())),
                ..Shown::default()
            };
            page(&state, &posted.viewer, shown, StatusCode::OK).await
        }
        Err(e) => {
            webhook_refused(&state, &posted.viewer, e, |notice| Shown {
                webhooks: notice,
                ..Shown::default()
            })
            .await
        }
    }
}

/// Sends a finished delivery of the endpoint again, with its original `webhook-id`.
pub async fn redeliver_webhook(
    State(state): State<AppState>,
    Path((id, delivery_id)): Path<(String, String)>,
    posted: Posted<Empty>,
) -> Result<Response, UiError> {
    let p = admin(&posted.viewer)?;
    match webhooks_admin::redeliver(&state, p, &id, &delivery_id).await {
        Ok(_) => Ok(webhook_done("redelivered", &id)),
        Err(e) => {
            // Beside the endpoint when it is this tenant's, else above the list.
            let known = webhooks_admin::get(&state, p, &id).await.is_ok();
            webhook_refused(&state, &posted.viewer, e, move |notice| {
                if known {
                    Shown {
                        endpoint_notice: notice.map(|n| (id, n)),
                        ..Shown::default()
                    }
                } else {
                    Shown {
                        webhooks: notice,
                        ..Shown::default()
                    }
                }
            })
            .await
        }
    }
}

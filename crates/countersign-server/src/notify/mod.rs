//! Telling reviewers: the outbox worker fans each state change out into deliveries and sends
//! them by email, Slack, Microsoft Teams, Standard Webhooks and Web Push, with retries. What
//! the channels share lives here: the outgoing HTTP client, the SMTP transport, the key of
//! one-click review links, and the worker's wake-up.
pub mod channels;
pub mod content;
pub mod email;
mod fanout;
pub mod outbound;
pub mod push;
pub mod slack;
pub mod teams;
pub mod webhook;
pub mod webhooks_admin;
pub mod worker;

use std::sync::Arc;

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use countersign_core::Clock;
use countersign_store::Store;
use tokio::sync::Notify;

use crate::settings::Settings;

const REVIEW_KEY_NAME: &str = "notify.review_link_key";

/// What the delivery worker and the channels share.
pub struct Notifier {
    /// The one client for outgoing calls: no redirects, timeouts, private addresses refused
    /// unless allowed.
    pub http: reqwest::Client,
    /// The SMTP transport, when the server has an SMTP server.
    pub mailer: Option<email::Mailer>,
    /// The VAPID key pair of Web Push.
    pub vapid: push::Vapid,
    review_key: hmac::Key,
    /// Wakes the fan-out loop (state changes) and the send loop (deliveries, callbacks).
    changes: Arc<Notify>,
    sends: Arc<Notify>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("email", &self.mailer.is_some())
            .finish()
    }
}

impl Notifier {
    pub async fn new(
        settings: &Settings,
        issuer: &str,
        store: &Store,
        clock: &dyn Clock,
    ) -> anyhow::Result<Notifier> {
        let mut candidate = vec![0u8; 32];
        aws_lc_rs::rand::fill(&mut candidate)
            .map_err(|_| anyhow::anyhow!("no randomness for the review-link key"))?;
        let key = store
            .server_secret(REVIEW_KEY_NAME, candidate, clock.now())
            .await?;
        Ok(Notifier {
            http: outbound::outbound_client(&settings.outbound)?,
            mailer: email::Mailer::from_settings(&settings.notifications.email, issuer)?,
            vapid: push::Vapid::load_or_create(settings, issuer, store, clock).await?,
            review_key: hmac::Key::new(hmac::HMAC_SHA256, &key),
            changes: Arc::new(Notify::new()),
            sends: Arc::new(Notify::new()),
        })
    }

    /// The token of a reviewer's one-click links to a request: HMAC-SHA256 of both ids (256
    /// bits, base64url). Every retry of an email carries the same links; only the token's
    /// SHA-256 is stored.
    pub fn review_token(&self, approval_id: &str, user_id: &str) -> String {
        let message = format!("review:{approval_id}:{user_id}");
        URL_SAFE_NO_PAD.encode(hmac::sign(&self.review_key, message.as_bytes()).as_ref())
    }

    /// Tells the outbox worker that rows may be due (a change commits, a delivery is sent
    /// again, another replica hinted).
    pub fn wake(&self) {
        self.changes.notify_one();
        self.sends.notify_one();
    }

    /// Tells the fan-out loop only: a new request writes a state change, never a callback.
    pub fn wake_changes(&self) {
        self.changes.notify_one();
    }

    /// Tells the send loop that deliveries are due.
    pub(crate) fn wake_sends(&self) {
        self.sends.notify_one();
    }

    pub(crate) fn changes_handle(&self) -> Arc<Notify> {
        self.changes.clone()
    }

    pub(crate) fn sends_handle(&self) -> Arc<Notify> {
        self.sends.clone()
    }
}

//! Email over SMTP (lettre): one multipart (text and HTML) message per reviewer, whose
//! Approve and Reject buttons open a confirmation page (GET changes nothing; only its form's
//! POST decides). A retry sends the same `Message-ID` and the same links.
use std::time::Duration as StdDuration;

use askama::Template;
use countersign_core::notify::Event;
use countersign_core::oidc::OutboxItem;
use countersign_proto::ApprovalStatus;
use lettre::message::header::{Header, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::content::{self, Facts};
use super::worker::{Attempt, AttemptError, Sent};
use crate::settings::EmailSettings;
use crate::state::AppState;

/// The SMTP transport and the sender.
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// The right-hand side of `Message-ID`s.
    domain: String,
}

impl Mailer {
    /// The mailer of the server settings; `None` without an SMTP server.
    pub fn from_settings(settings: &EmailSettings, issuer: &str) -> anyhow::Result<Option<Mailer>> {
        let Some(url) = &settings.smtp_url else {
            return Ok(None);
        };
        let from: Mailbox = settings
            .from
            .as_deref()
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "notifications.email.from is required with notifications.email.smtp_url"
                )
            })?
            .parse()
            .map_err(|e| {
                anyhow::anyhow!("notifications.email.from is not an email address: {e}")
            })?;
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            // The URL may carry a password: never repeat it.
            .map_err(|_| {
                anyhow::anyhow!(
                    "notifications.email.smtp_url is not a valid smtp:// or smtps:// URL"
                )
            })?
            .timeout(Some(StdDuration::from_millis(settings.timeout_ms)))
            .build();
        let domain = url::Url::parse(issuer)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_else(|| from.email.domain().to_string());
        Ok(Some(Mailer {
            transport,
            from,
            domain,
        }))
    }

    async fn send(&self, message: Message) -> Attempt {
        match self.transport.send(message).await {
            Ok(response) => Ok(Sent::status(u16::from(response.code()))),
            Err(e) => {
                let status = e.status().map(u16::from);
                let error = format!("SMTP: {e}");
                if e.is_permanent() {
                    Err(AttemptError::GiveUp { error, status })
                } else {
                    // Transient replies, timeouts and connection failures get another try.
                    Err(AttemptError::Retry {
                        error,
                        status,
                        after: None,
                    })
                }
            }
        }
    }
}

/// `Auto-Submitted: auto-generated` (RFC 3834): no vacation replies to this.
#[derive(Clone)]
struct AutoSubmitted;

impl Header for AutoSubmitted {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("Auto-Submitted")
    }

    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(AutoSubmitted)
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "auto-generated".to_string())
    }
}

pub struct Links {
    pub approve: String,
    pub reject: String,
}

#[derive(Template)]
#[template(path = "mail/notification.html")]
struct HtmlMail<'a> {
    headline: &'a str,
    intro: &'a str,
    pairs: &'a [(&'static str, String)],
    arguments_label: &'a str,
    arguments: &'a str,
    agent_words: &'a Option<String>,
    outcome: Option<String>,
    comment: &'a Option<String>,
    links: &'a Option<Links>,
    dashboard_url: &'a str,
    expires_in: String,
}

#[derive(Template)]
#[template(path = "mail/notification.txt")]
struct TextMail<'a> {
    headline: &'a str,
    intro: &'a str,
    pairs: &'a [(&'static str, String)],
    arguments_label: &'a str,
    arguments: &'a str,
    agent_words: &'a Option<String>,
    outcome: Option<String>,
    comment: &'a Option<String>,
    links: &'a Option<Links>,
    dashboard_url: &'a str,
    expires_in: String,
}

fn intro(event: Event, facts: &Facts) -> String {
    let asked = if facts.action_label == "Tool" {
        "An AI agent asks for approval to run a tool."
    } else {
        "An AI agent asks for your approval."
    };
    match event {
        Event::Requested => asked.to_string(),
        Event::Escalated => format!("{asked} Nobody decided in time, so it was escalated to you."),
        Event::Expired => "This request expired before anyone decided it.".into(),
        Event::Cancelled => "The agent withdrew this request; nothing is left to decide.".into(),
        Event::Approved | Event::Rejected => "This request was decided.".into(),
    }
}

/// Renders a message (text and HTML) to one reviewer.
fn render(
    event: Event,
    facts: &Facts,
    links: &Option<Links>,
) -> Result<(String, String, String), askama::Error> {
    let headline = facts.headline(event);
    let intro = intro(event, facts);
    let pairs = facts.pairs();
    let arguments_label = if facts.action_label == "Tool" {
        "Arguments"
    } else {
        "Details"
    };
    let outcome = (facts.status != ApprovalStatus::Pending).then(|| facts.outcome());
    let html = HtmlMail {
        headline: &headline,
        intro: &intro,
        pairs: &pairs,
        arguments_label,
        arguments: &facts.arguments,
        agent_words: &facts.agent_words,
        outcome: outcome.clone(),
        comment: &facts.comment,
        links,
        dashboard_url: &facts.dashboard_url,
        expires_in: facts.expires_in(),
    }
    .render()?;
    let text = TextMail {
        headline: &headline,
        intro: &intro,
        pairs: &pairs,
        arguments_label,
        arguments: &facts.arguments,
        agent_words: &facts.agent_words,
        outcome,
        comment: &facts.comment,
        links,
        dashboard_url: &facts.dashboard_url,
        expires_in: facts.expires_in(),
    }
    .render()?;
    Ok((headline, text, html))
}

/// Sends one reviewer's email.
pub async fn deliver(state: &AppState, item: &OutboxItem) -> Attempt {
    let mailer = state
        .notifier
        .mailer
        .as_ref()
        .ok_or_else(|| AttemptError::give_up("the server has no SMTP server"))?;
    let event = Event::parse(&item.event)
        .ok_or_else(|| AttemptError::give_up(format!("unknown event {}", item.event)))?;
    let user_id = item
        .recipient
        .as_deref()
        .ok_or_else(|| AttemptError::give_up("the email has no recipient"))?;
    let user = state
        .store
        .get_user(&item.tenant_id, user_id)
        .await?
        .filter(|u| !u.disabled)
        .ok_or_else(|| AttemptError::give_up("the recipient is no longer an active user"))?;
    let facts = content::facts(state, &item.tenant_id, &item.approval_id).await?;
    let asks = matches!(event, Event::Requested | Event::Escalated)
        && facts.status == ApprovalStatus::Pending;
    let links = asks.then(|| {
        let token = state.notifier.review_token(&item.approval_id, user_id);
        Links {
            approve: content::review_url(state, &token, "approve"),
            reject: content::review_url(state, &token, "reject"),
        }
    });
    let (subject, text, html) = render(event, &facts, &links)
        .map_err(|e| AttemptError::give_up(format!("rendering: {e}")))?;
    let to: Mailbox = format!(
        "{} <{}>",
        user.name.replace(['<', '>', '"'], ""),
        user.email
    )
    .parse()
    .or_else(|_| user.email.parse())
    .map_err(|_| AttemptError::give_up("the recipient's address is not valid"))?;
    let message = Message::builder()
        .from(mailer.from.clone())
        .to(to)
        .subject(subject)
        .message_id(Some(format!(
            "<{}.{}@{}>",
            item.id, item.approval_id, mailer.domain
        )))
        .header(AutoSubmitted)
        .multipart(MultiPart::alternative_plain_html(text, html))
        .map_err(|e| AttemptError::give_up(format!("building the message: {e}")))?;
    mailer.send(message).await
}

/// Sends a test message to `to` at once (the settings page's "send a test").
pub async fn send_test(state: &AppState, to: &str) -> Attempt {
    let mailer = state.notifier.mailer.as_ref().ok_or_else(|| {
        AttemptError::give_up("the server has no SMTP server (notifications.email.smtp_url)")
    })?;
    let to: Mailbox = to
        .parse()
        .map_err(|_| AttemptError::give_up("not a valid email address"))?;
    let message = Message::builder()
        .from(mailer.from.clone())
        .to(to)
        .subject("Countersign test message")
        .header(AutoSubmitted)
        .body(format!(
            "This is a test message from Countersign at {}. Email notifications work.\n",
            state.issuer
        ))
        .map_err(|e| AttemptError::give_up(format!("building the message: {e}")))?;
    mailer.send(message).await
}

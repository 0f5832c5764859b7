//! Web Push (RFC 8030, encrypted per RFC 8291, VAPID per RFC 8292) to the devices where a
//! reviewer installed the dashboard. The server's VAPID key is made once and kept in the
//! store, so every replica signs with the same key the browsers subscribed with. Messages are
//! small JSON objects the dashboard's service worker shows as notifications; a push service
//! that says a subscription is gone (404, 410) makes the server forget it.
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use chrono::{DateTime, Duration, Utc};
use countersign_core::approval::RequestRef;
use countersign_core::notify::{self, Event, PushSubscription, sanitize, truncate};
use countersign_core::oidc::OutboxItem;
use countersign_core::{Clock, Error, Principal, Result, ids};
use countersign_proto::ApprovalStatus;
use countersign_store::Store;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;
use serde_json::Value;

use super::content::{self, Facts};
use super::worker::{Attempt, AttemptError, http_outcome, send_error};
use super::{channels, outbound};
use crate::settings::Settings;
use crate::state::AppState;

const VAPID_KEY_NAME: &str = "notify.vapid_key";
/// How long a VAPID token is valid (RFC 8292 allows at most 24 hours).
const VAPID_VALIDITY_HOURS: i64 = 12;
/// Largest message (push services take about 4 KB of ciphertext).
pub const MAX_MESSAGE_BYTES: usize = 3 * 1024;
/// Most devices one person may subscribe.
pub const MAX_DEVICES: usize = 20;
/// Longest summary of the arguments in a message (characters).
const SUMMARY_CHARS: usize = 160;
/// Longest quote of the agent's words in a message (characters).
const WORDS_CHARS: usize = 140;

/// The server's VAPID key pair and the contact it names.
pub struct Vapid {
    key: EncodingKey,
    /// The public key, uncompressed P-256 in base64url: the browsers' `applicationServerKey`.
    public_key: String,
    subject: String,
}

impl std::fmt::Debug for Vapid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vapid")
            .field("public_key", &self.public_key)
            .field("subject", &self.subject)
            .finish()
    }
}

#[derive(Serialize)]
struct VapidClaims<'a> {
    aud: &'a str,
    exp: i64,
    sub: &'a str,
}

impl Vapid {
    /// The key every replica shares: the first replica's candidate wins.
    pub async fn load_or_create(
        settings: &Settings,
        issuer: &str,
        store: &Store,
        clock: &dyn Clock,
    ) -> anyhow::Result<Vapid> {
        let candidate =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .map_err(|_| anyhow::anyhow!("no randomness for the VAPID key"))?
                .as_ref()
                .to_vec();
        let der = store
            .server_secret(VAPID_KEY_NAME, candidate, clock.now())
            .await?;
        Vapid::from_pkcs8(&der, subject(settings, issuer))
    }

    fn from_pkcs8(der: &[u8], subject: String) -> anyhow::Result<Vapid> {
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der)
            .map_err(|_| anyhow::anyhow!("the stored VAPID key is not a P-256 key"))?;
        Ok(Vapid {
            key: EncodingKey::from_ec_der(der),
            public_key: URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
            subject,
        })
    }

    /// The public key browsers subscribe with (`applicationServerKey`).
    pub fn public_key(&self) -> &str {
        &self.public_key
    }

    /// The contact the push services see (`sub`).
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// `vapid t=<JWT>, k=<public key>` for a push to `endpoint`: the token's audience is the
    /// endpoint's origin (with its port, when not the default).
    pub fn authorization(
        &self,
        endpoint: &url::Url,
        now: DateTime<Utc>,
    ) -> std::result::Result<String, String> {
        let origin = endpoint.origin();
        if !origin.is_tuple() {
            return Err("the endpoint has no origin".into());
        }
        let aud = origin.ascii_serialization();
        let claims = VapidClaims {
            aud: &aud,
            exp: (now + Duration::hours(VAPID_VALIDITY_HOURS)).timestamp(),
            sub: &self.subject,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &self.key)
            .map_err(|e| format!("signing the VAPID token: {e}"))?;
        Ok(format!("vapid t={token}, k={}", self.public_key))
    }
}

/// `notifications.push.subject`, else `mailto:` and the email sender, else the public URL.
fn subject(settings: &Settings, issuer: &str) -> String {
    if let Some(s) = settings
        .notifications
        .push
        .subject
        .as_ref()
        .filter(|s| !s.trim().is_empty())
    {
        return s.trim().to_string();
    }
    let sender = settings
        .notifications
        .email
        .from
        .as_deref()
        .and_then(|from| {
            from.parse::<lettre::message::Mailbox>()
                .ok()
                .map(|m| m.email.to_string())
        });
    match sender {
        Some(address) => format!("mailto:{address}"),
        None => issuer.to_string(),
    }
}

/// What the service worker shows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Message {
    pub title: String,
    pub body: String,
    /// The request's page in the dashboard.
    pub url: String,
    /// The approval id: a later message about the same request replaces the earlier one.
    pub tag: String,
    pub event: &'static str,
}

/// The arguments in one line: `key: value` pairs for an object, compact JSON otherwise.
fn summary(arguments: &Value) -> String {
    let scalar = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let text = match arguments {
        Value::Object(map) if !map.is_empty() => map
            .iter()
            .map(|(k, v)| format!("{k}: {}", scalar(v)))
            .collect::<Vec<_>>()
            .join(", "),
        Value::Null => String::new(),
        Value::Object(_) => String::new(),
        other => other.to_string(),
    };
    truncate(&sanitize(&text).replace(['\n', '\t'], " "), SUMMARY_CHARS)
}

/// The message about `event`, from the record as it is now: a request that was decided
/// meanwhile is told as its outcome.
pub fn message(event: Event, facts: &Facts, arguments: &Value) -> Message {
    let asks = !event.is_terminal() && facts.status == ApprovalStatus::Pending;
    let (title, body) = if asks {
        let mut body = format!("{} asks", facts.agent_name);
        let summary = summary(arguments);
        if !summary.is_empty() {
            body.push_str(": ");
            body.push_str(&summary);
        }
        if let Some(words) = &facts.agent_words {
            let words = truncate(&words.replace(['\n', '\t'], " "), WORDS_CHARS);
            body.push_str(&format!("\nThe agent's own words: \u{201c}{words}\u{201d}"));
        }
        (facts.headline(event), body)
    } else {
        let word = match facts.status {
            ApprovalStatus::Approved => "Approved",
            ApprovalStatus::Rejected => "Rejected",
            ApprovalStatus::Expired => "Expired",
            ApprovalStatus::Cancelled => "Cancelled",
            ApprovalStatus::Pending => "Update",
        };
        let mut body = facts.outcome();
        if let Some(c) = &facts.comment {
            body.push_str(&format!(
                ": \u{201c}{}\u{201d}",
                truncate(&c.replace(['\n', '\t'], " "), WORDS_CHARS)
            ));
        }
        (format!("{word}: {}", facts.action), body)
    };
    let mut message = Message {
        title: truncate(&title, 120),
        body,
        url: facts.dashboard_url.clone(),
        tag: facts.approval_id.clone(),
        event: event.as_str(),
    };
    // Each character may take up to 4 bytes; the title and URL are short already.
    while encoded_len(&message) > MAX_MESSAGE_BYTES && !message.body.is_empty() {
        let keep = message.body.chars().count() / 2;
        message.body = truncate(&message.body, keep);
    }
    message
}

fn encoded_len(message: &Message) -> usize {
    serde_json::to_vec(message).map(|v| v.len()).unwrap_or(0)
}

/// Base64url with or without padding (browsers send it without).
fn decode_key(field: &str, value: &str) -> Result<Vec<u8>> {
    let trimmed = value.trim_end_matches('=');
    URL_SAFE_NO_PAD
        .decode(trimmed)
        .or_else(|_| URL_SAFE.decode(value))
        .map_err(|_| Error::invalid(format!("`{field}` must be base64url")))
}

/// The device's public key and authentication secret, checked.
fn device_keys(p256dh: &str, auth: &str) -> Result<(web_push_native::p256::PublicKey, Vec<u8>)> {
    let point = decode_key("keys.p256dh", p256dh)?;
    if point.len() != 65 || point.first() != Some(&0x04) {
        return Err(Error::invalid(
            "`keys.p256dh` must be an uncompressed P-256 public key (65 bytes)",
        ));
    }
    let public = web_push_native::p256::PublicKey::from_sec1_bytes(&point)
        .map_err(|_| Error::invalid("`keys.p256dh` is not a point on P-256"))?;
    let auth = decode_key("keys.auth", auth)?;
    if auth.len() != 16 {
        return Err(Error::invalid(
            "`keys.auth` must be a 16-byte authentication secret",
        ));
    }
    Ok((public, auth))
}

/// Checks a push endpoint: https (unless the operator allows http), a host, no credentials,
/// and no private address unless allowed.
fn check_endpoint(state: &AppState, endpoint: &str) -> Result<()> {
    notify::validate_endpoint_url("endpoint", endpoint)?;
    outbound::check_registration("endpoint", endpoint, &state.settings.outbound)
}

/// A browser's subscription (`PushSubscription.toJSON()`), as the dashboard posts it.
#[derive(Debug, Clone)]
pub struct NewSubscription {
    pub endpoint: String,
    pub p256dh: String,
    pub auth: String,
    pub user_agent: String,
}

/// Subscribes one of the caller's devices (the same endpoint again replaces its keys).
pub async fn subscribe(
    state: &AppState,
    caller: &Principal,
    input: NewSubscription,
) -> Result<PushSubscription> {
    let user_id = caller
        .user_id
        .clone()
        .ok_or_else(|| Error::forbidden("only people subscribe devices"))?;
    check_endpoint(state, &input.endpoint)?;
    device_keys(&input.p256dh, &input.auth)?;
    let existing = devices(state, &caller.tenant_id, &user_id).await?;
    if existing.len() >= MAX_DEVICES && !existing.iter().any(|d| d.endpoint == input.endpoint) {
        return Err(Error::invalid(format!(
            "at most {MAX_DEVICES} devices may be notified; remove one first"
        )));
    }
    let sub = PushSubscription {
        id: ids::new_id(notify::PUSH_SUBSCRIPTION_ID),
        tenant_id: caller.tenant_id.clone(),
        user_id,
        endpoint: input.endpoint,
        p256dh: input.p256dh,
        auth: input.auth,
        user_agent: truncate(&sanitize(&input.user_agent), 300),
        created_at: state.clock.now(),
    };
    state
        .store
        .put_push_subscription(sub.clone(), caller.actor())
        .await?;
    Ok(sub)
}

/// A person's subscribed devices, oldest first.
pub async fn devices(
    state: &AppState,
    tenant_id: &str,
    user_id: &str,
) -> Result<Vec<PushSubscription>> {
    let mut subs: Vec<_> = state
        .store
        .list_push_subscriptions(tenant_id)
        .await?
        .into_iter()
        .filter(|s| s.user_id == user_id)
        .collect();
    subs.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
    Ok(subs)
}

/// Removes one of the caller's own devices.
pub async fn unsubscribe(state: &AppState, caller: &Principal, id: &str) -> Result<()> {
    let own = state.store.get_push_subscription(id).await?.filter(|s| {
        s.tenant_id == caller.tenant_id && caller.user_id.as_deref() == Some(s.user_id.as_str())
    });
    let Some(sub) = own else {
        return Err(Error::NotFound("no such device of yours".into()));
    };
    state
        .store
        .delete_push_subscription(&sub.tenant_id, &sub.id)
        .await?;
    Ok(())
}

/// The host of a push service, to tell devices apart without showing their endpoint.
pub fn service_host(endpoint: &str) -> String {
    url::Url::parse(endpoint)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_default()
}

/// Sends one notification to one device.
pub async fn deliver(state: &AppState, item: &OutboxItem) -> Attempt {
    let event = Event::parse(&item.event)
        .ok_or_else(|| AttemptError::give_up(format!("unknown event {}", item.event)))?;
    let sub = state
        .store
        .get_push_subscription(&item.target)
        .await?
        .filter(|s| s.tenant_id == item.tenant_id)
        .ok_or_else(|| AttemptError::give_up("the device is no longer subscribed"))?;
    let prefs = channels::preferences(state, &sub.tenant_id, &sub.user_id).await?;
    if !prefs.push {
        return Err(AttemptError::give_up(
            "the person turned push notifications off",
        ));
    }
    state
        .store
        .get_user(&sub.tenant_id, &sub.user_id)
        .await?
        .filter(|u| !u.disabled)
        .ok_or_else(|| AttemptError::give_up("the device's owner is no longer an active user"))?;
    let request = state
        .store
        .find_request(
            &item.tenant_id,
            &RequestRef::PublicId(item.approval_id.clone()),
        )
        .await?
        .ok_or_else(|| AttemptError::give_up("the request is gone"))?;
    let facts = content::facts_of(state, &request).await?;
    let message = message(event, &facts, request.arguments());
    let plaintext = serde_json::to_vec(&message)
        .map_err(|e| AttemptError::give_up(format!("encoding the message: {e}")))?;

    outbound::check_target(&sub.endpoint, &state.settings.outbound)
        .map_err(AttemptError::give_up)?;
    let endpoint = url::Url::parse(&sub.endpoint)
        .map_err(|_| AttemptError::give_up("the device's endpoint is not a URL"))?;
    let (public, auth) = device_keys(&sub.p256dh, &sub.auth)
        .map_err(|e| AttemptError::give_up(format!("the device's keys: {e}")))?;
    let auth = web_push_native::Auth::clone_from_slice(&auth);
    let body = web_push_native::encrypt(plaintext, &public, &auth)
        .map_err(|e| AttemptError::give_up(format!("encrypting the message: {e}")))?;
    let authorization = state
        .notifier
        .vapid
        .authorization(&endpoint, state.clock.now())
        .map_err(AttemptError::give_up)?;

    let urgency = if event.is_terminal() {
        "normal"
    } else {
        "high"
    };
    let mut request = state
        .notifier
        .http
        .post(endpoint.as_str())
        .header(
            "TTL",
            state.settings.notifications.push.ttl_secs.to_string(),
        )
        .header("Urgency", urgency)
        .header(reqwest::header::CONTENT_ENCODING, "aes128gcm")
        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
        .header(reqwest::header::AUTHORIZATION, authorization);
    // A message not yet delivered to an offline device is replaced by a newer one about
    // the same request (RFC 8030 topics: at most 32 base64url characters).
    if item.approval_id.len() <= 32
        && item
            .approval_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        request = request.header("Topic", item.approval_id.as_str());
    }
    let response = request.body(body).send().await.map_err(send_error)?;
    let status = response.status();
    if matches!(status.as_u16(), 404 | 410) {
        // The browser unsubscribed or the subscription expired: forget the device.
        state
            .store
            .delete_push_subscription(&sub.tenant_id, &sub.id)
            .await?;
        return Err(AttemptError::GiveUp {
            error: format!("the push service answered {status}: the device was removed"),
            status: Some(status.as_u16()),
        });
    }
    http_outcome(&response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn facts(status: ApprovalStatus) -> Facts {
        let now = Utc::now();
        Facts {
            approval_id: "apr_1".into(),
            tenant_id: "t".into(),
            action_label: "Tool",
            action: "payment_refund".into(),
            arguments: String::new(),
            risk_score: Some(0.4),
            threats: vec![],
            session_id: None,
            agent_name: "support-bot".into(),
            trust_level: "standard".into(),
            agent_words: Some("Customer asked\nfor a refund".into()),
            policy_name: None,
            group_name: None,
            escalation_level: 0,
            required_approvals: 1,
            expires_at: now + Duration::minutes(30),
            status,
            decided_by: Some("alice@example.com".into()),
            comment: None,
            dashboard_url: "https://cs.example/ui/requests/apr_1".into(),
            now,
        }
    }

    #[test]
    fn messages_ask_then_tell_the_outcome() {
        let args = json!({"amount": 500, "customer_id": "cust_123"});
        let m = message(Event::Requested, &facts(ApprovalStatus::Pending), &args);
        assert_eq!(m.title, "Approval required: payment_refund");
        assert_eq!(m.tag, "apr_1");
        assert_eq!(m.event, "requested");
        assert!(
            m.body
                .starts_with("support-bot asks: amount: 500, customer_id: cust_123"),
            "{}",
            m.body
        );
        assert!(
            m.body
                .contains("The agent's own words: \u{201c}Customer asked for a refund\u{201d}")
        );
        let m = message(Event::Approved, &facts(ApprovalStatus::Approved), &args);
        assert_eq!(m.title, "Approved: payment_refund");
        assert_eq!(m.body, "Approved by alice@example.com");
        // A request decided before its announcement went out is told as decided.
        let m = message(Event::Requested, &facts(ApprovalStatus::Rejected), &args);
        assert_eq!(m.title, "Rejected: payment_refund");
    }

    #[test]
    fn messages_stay_small() {
        let mut f = facts(ApprovalStatus::Pending);
        f.agent_words = Some("\u{1F600}".repeat(2000));
        f.action = "x".repeat(200);
        let big = json!({"blob": "y".repeat(10_000)});
        let m = message(Event::Requested, &f, &big);
        assert!(encoded_len(&m) <= MAX_MESSAGE_BYTES, "{}", encoded_len(&m));
        assert!(m.body.chars().count() < 400);
    }

    #[test]
    fn device_keys_are_checked() {
        let point = {
            let pair = EcdsaKeyPair::generate_pkcs8(
                &ECDSA_P256_SHA256_FIXED_SIGNING,
                &SystemRandom::new(),
            )
            .unwrap();
            let pair =
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pair.as_ref()).unwrap();
            URL_SAFE_NO_PAD.encode(pair.public_key().as_ref())
        };
        let auth = URL_SAFE_NO_PAD.encode([7u8; 16]);
        assert!(device_keys(&point, &auth).is_ok());
        assert!(device_keys(&format!("{point}="), &format!("{auth}==")).is_ok());
        assert!(device_keys(&point, &URL_SAFE_NO_PAD.encode([7u8; 15])).is_err());
        assert!(device_keys(&URL_SAFE_NO_PAD.encode([4u8; 65]), &auth).is_err());
        assert!(device_keys("not base64!", &auth).is_err());
    }

    #[test]
    fn the_vapid_token_names_the_endpoint_origin() {
        let der =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .unwrap();
        let vapid = Vapid::from_pkcs8(der.as_ref(), "mailto:ops@example.com".into()).unwrap();
        let now = Utc::now();
        let header = vapid
            .authorization(
                &url::Url::parse("http://127.0.0.1:8123/push/abc").unwrap(),
                now,
            )
            .unwrap();
        let token = header
            .strip_prefix("vapid t=")
            .unwrap()
            .split(", k=")
            .next()
            .unwrap();
        assert!(header.ends_with(&format!(", k={}", vapid.public_key())));
        let claims: Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(token.split('.').nth(1).unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(claims["aud"], "http://127.0.0.1:8123");
        assert_eq!(claims["sub"], "mailto:ops@example.com");
        let exp = claims["exp"].as_i64().unwrap();
        assert!(exp > now.timestamp() && exp <= (now + Duration::hours(24)).timestamp());
        let https = vapid
            .authorization(
                &url::Url::parse("https://fcm.googleapis.com/fcm/send/x").unwrap(),
                now,
            )
            .unwrap();
        let token = https.strip_prefix("vapid t=").unwrap().split(", k=").next();
        let claims: Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(token.unwrap().split('.').nth(1).unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(claims["aud"], "https://fcm.googleapis.com");
    }

    #[test]
    fn the_subject_falls_back_to_the_sender_then_the_public_url() {
        let mut s = Settings::default();
        assert_eq!(subject(&s, "https://cs.example"), "https://cs.example");
        s.notifications.email.from = Some("Countersign <approvals@example.com>".into());
        assert_eq!(
            subject(&s, "https://cs.example"),
            "mailto:approvals@example.com"
        );
        s.notifications.push.subject = Some("mailto:ops@example.com".into());
        assert_eq!(subject(&s, "https://cs.example"), "mailto:ops@example.com");
    }
}

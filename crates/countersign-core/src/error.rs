use std::sync::Arc;

use countersign_proto::{ApprovalStatus, ErrorCode};

/// The one error taxonomy of Countersign. The server maps it to HTTP in one place.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The caller sent something the server cannot accept.
    #[error("{message}")]
    Invalid { code: ErrorCode, message: String },
    /// The caller is not who they must be (401): `unauthorized`, or a precise code such as
    /// `invalid_client` or `invalid_signature`.
    #[error("{message}")]
    Unauthorized { code: ErrorCode, message: String },
    /// The caller may not do this (403): `forbidden`, or a precise code such as
    /// `csrf_failed` or `access_denied`.
    #[error("{message}")]
    Forbidden { code: ErrorCode, message: String },
    #[error("{0}")]
    NotFound(String),
    /// The approval request already left `pending`.
    #[error("the request is already {}", status.as_str())]
    AlreadyDecided { status: ApprovalStatus },
    #[error("{0}")]
    AlreadyExists(String),
    /// The request clashes with the current state (409), said by a precise code such as
    /// `already_voted`, `in_use`, `not_approved` or `idempotency_key_in_use`.
    #[error("{message}")]
    Conflict { code: ErrorCode, message: String },
    #[error("{0}")]
    Unavailable(String),
    /// Too many requests (or pending requests, or failed attempts); the caller may retry
    /// after `retry_after_secs`.
    #[error("{message}")]
    RateLimited {
        code: ErrorCode,
        message: String,
        retry_after_secs: u64,
    },
    /// Something went wrong inside; the text and its cause are logged, never sent to the
    /// caller.
    #[error("internal error: {0}")]
    Internal(Internal),
}

/// What went wrong inside, and the error that caused it when there was one (a database's,
/// a parser's), kept whole for the log and for `source()`.
#[derive(Debug, Clone)]
pub struct Internal {
    context: String,
    cause: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl Internal {
    pub fn new(context: impl Into<String>) -> Internal {
        Internal {
            context: context.into(),
            cause: None,
        }
    }

    /// `context` says what was being done; `cause` is what failed.
    pub fn caused_by(
        context: impl Into<String>,
        cause: impl std::error::Error + Send + Sync + 'static,
    ) -> Internal {
        Internal {
            context: context.into(),
            cause: Some(Arc::new(cause)),
        }
    }
}

/// The context, then each cause in turn.
impl std::fmt::Display for Internal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.context)?;
        let mut separator = if self.context.is_empty() { "" } else { ": " };
        let mut cause = self
            .cause
            .as_deref()
            .map(|c| c as &(dyn std::error::Error + 'static));
        while let Some(c) = cause {
            write!(f, "{separator}{c}")?;
            separator = ": ";
            cause = c.source();
        }
        Ok(())
    }
}

impl std::error::Error for Internal {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause
            .as_deref()
            .map(|c| c as &(dyn std::error::Error + 'static))
    }
}

impl From<String> for Internal {
    fn from(context: String) -> Internal {
        Internal::new(context)
    }
}

impl From<&str> for Internal {
    fn from(context: &str) -> Internal {
        Internal::new(context)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(message: impl Into<String>) -> Error {
        Error::Invalid {
            code: ErrorCode::InvalidRequest,
            message: message.into(),
        }
    }

    pub fn unauthorized(message: impl Into<String>) -> Error {
        Error::unauthorized_with(ErrorCode::Unauthorized, message)
    }

    pub fn unauthorized_with(code: ErrorCode, message: impl Into<String>) -> Error {
        Error::Unauthorized {
            code,
            message: message.into(),
        }
    }

    pub fn forbidden(message: impl Into<String>) -> Error {
        Error::forbidden_with(ErrorCode::Forbidden, message)
    }

    pub fn forbidden_with(code: ErrorCode, message: impl Into<String>) -> Error {
        Error::Forbidden {
            code,
            message: message.into(),
        }
    }

    pub fn conflict(code: ErrorCode, message: impl Into<String>) -> Error {
        Error::Conflict {
            code,
            message: message.into(),
        }
    }

    /// The error a precise code stands for: its HTTP status picks the variant, so a 401, 403
    /// or 409 code is never reported as a bad request.
    pub fn coded(code: ErrorCode, message: impl Into<String>) -> Error {
        let message = message.into();
        match code.http_status() {
            401 => Error::Unauthorized { code, message },
            403 => Error::Forbidden { code, message },
            409 => Error::Conflict { code, message },
            _ => Error::Invalid { code, message },
        }
    }

    /// An internal error caused by `cause` (kept as the source).
    pub fn internal(cause: impl std::error::Error + Send + Sync + 'static) -> Error {
        Error::Internal(Internal::caused_by("", cause))
    }

    /// An internal error with no underlying cause.
    pub fn internal_msg(context: impl Into<String>) -> Error {
        Error::Internal(Internal::new(context))
    }

    /// The stable code this error is reported with.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::Invalid { code, .. } => *code,
            Error::Unauthorized { code, .. }
            | Error::Forbidden { code, .. }
            | Error::Conflict { code, .. } => *code,
            Error::NotFound(_) => ErrorCode::NotFound,
            Error::AlreadyDecided { .. } => ErrorCode::AlreadyDecided,
            Error::AlreadyExists(_) => ErrorCode::AlreadyExists,
            Error::Unavailable(_) => ErrorCode::Unavailable,
            Error::RateLimited { code, .. } => *code,
            Error::Internal(_) => ErrorCode::Internal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_internal_error_keeps_its_cause_for_the_log_and_for_source() {
        let cause = std::io::Error::other("disk on fire");
        let error = Error::Internal(Internal::caused_by("database", cause));
        assert_eq!(error.to_string(), "internal error: database: disk on fire");
        let Error::Internal(internal) = &error else {
            panic!("not internal: {error:?}");
        };
        let source = std::error::Error::source(internal).map(ToString::to_string);
        assert_eq!(source.as_deref(), Some("disk on fire"));
        assert_eq!(error.code(), ErrorCode::Internal);
        assert_eq!(
            Error::internal_msg("no key").to_string(),
            "internal error: no key"
        );
    }

    #[test]
    fn a_precise_code_picks_the_variant_of_its_status() {
        let variant = |code| match Error::coded(code, "x") {
            Error::Unauthorized { .. } => 401,
            Error::Forbidden { .. } => 403,
            Error::Conflict { .. } => 409,
            Error::Invalid { .. } => 400,
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(variant(ErrorCode::InvalidClient), 401);
        assert_eq!(variant(ErrorCode::InvalidSignature), 401);
        assert_eq!(variant(ErrorCode::CsrfFailed), 403);
        assert_eq!(variant(ErrorCode::AlreadyVoted), 409);
        assert_eq!(variant(ErrorCode::IdempotencyKeyInUse), 409);
        assert_eq!(variant(ErrorCode::InvalidNumber), 400);
        for code in [
            ErrorCode::InvalidClient,
            ErrorCode::InUse,
            ErrorCode::InvalidBody,
        ] {
            assert_eq!(Error::coded(code, "x").code(), code);
        }
    }
}

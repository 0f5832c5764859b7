use countersign_proto::{ApprovalStatus, ErrorCode};

/// The one error taxonomy of Countersign. The server maps it to HTTP in one place.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The caller sent something the server cannot accept.
    #[error("{message}")]
    Invalid { code: ErrorCode, message: String },
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// The approval request already left `pending`.
    #[error("the request is already {}", status.as_str())]
    AlreadyDecided { status: ApprovalStatus },
    #[error("{0}")]
    AlreadyExists(String),
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
    /// Something went wrong inside; the text is logged, never sent to the caller.
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(message: impl Into<String>) -> Error {
        Error::Invalid {
            code: ErrorCode::InvalidRequest,
            message: message.into(),
        }
    }

    pub fn invalid_with(code: ErrorCode, message: impl Into<String>) -> Error {
        Error::Invalid {
            code,
            message: message.into(),
        }
    }

    pub fn internal(e: impl std::fmt::Display) -> Error {
        Error::Internal(e.to_string())
    }

    /// The stable code this error is reported with.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::Invalid { code, .. } => *code,
            Error::Unauthorized(_) => ErrorCode::Unauthorized,
            Error::Forbidden(_) => ErrorCode::Forbidden,
            Error::NotFound(_) => ErrorCode::NotFound,
            Error::AlreadyDecided { .. } => ErrorCode::AlreadyDecided,
            Error::AlreadyExists(_) => ErrorCode::AlreadyExists,
            Error::Unavailable(_) => ErrorCode::Unavailable,
            Error::RateLimited { code, .. } => *code,
            Error::Internal(_) => ErrorCode::Internal,
        }
    }
}

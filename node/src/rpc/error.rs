//! The API's one error type, answered as kubo answers: `{"Message":..,"Code":..,"Type":"error"}`.
//!
//! A bad argument is a 400 with code 1 and its message. A command that failed for a reason the user can
//! act on (not found, not pinned, bad CAR, ...) is a 500 with code 0 and the error's chain as the message,
//! the same text the CLI prints in local mode. A fault inside the node (the block store, a panic) is a
//! 500 with a generic message; the cause goes to the log, not to the client.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::repo::StoreError;

/// An API error; see the module doc for how each kind is answered.
#[derive(Debug)]
pub(crate) enum ApiError {
    /// A missing or malformed argument or option: 400, code 1.
    BadRequest(String),
    /// The command failed: 500, code 0, with this message.
    Failed(String),
    /// A fault inside the node, already logged: 500 with a generic message.
    Internal,
}

impl ApiError {
    pub(crate) fn bad_request(msg: impl Into<String>) -> Self {
        Self::BadRequest(msg.into())
    }

    pub(crate) fn failed(msg: impl Into<String>) -> Self {
        Self::Failed(msg.into())
    }

    /// The message the client sees.
    pub(crate) fn message(&self) -> &str {
        match self {
            Self::BadRequest(m) | Self::Failed(m) => m,
            Self::Internal => "internal error",
        }
    }

    fn status_and_code(&self) -> (StatusCode, u8) {
        match self {
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, 1),
            Self::Failed(_) | Self::Internal => (StatusCode::INTERNAL_SERVER_ERROR, 0),
        }
    }
}

/// Any library error is a failed command, unless the block store failed underneath it.
impl<E: std::error::Error + 'static> From<E> for ApiError {
    fn from(e: E) -> Self {
        let mut chain = e.to_string();
        let mut source = e.source();
        let mut internal = (&e as &dyn std::error::Error).downcast_ref::<StoreError>().is_some();
        while let Some(s) = source {
            internal |= s.downcast_ref::<StoreError>().is_some();
            chain.push_str(": ");
            chain.push_str(&s.to_string());
            source = s.source();
        }
        if internal {
            tracing::error!(error = %chain, "API command failed in the block store");
            Self::Internal
        } else {
            Self::Failed(chain)
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let body = serde_json::json!({"Message": self.message(), "Code": code, "Type": "error"});
        let mut resp = (status, format!("{body}\n")).into_response();
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        resp
    }
}

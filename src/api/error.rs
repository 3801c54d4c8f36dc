//! The one place where an error becomes an HTTP status and body.

use http::{HeaderValue, Method, Response, StatusCode, header};
use serde_json::{Value, json};

use crate::registry::StoreError;

/// Everything a handler can fail with. Each variant maps to exactly one status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request itself is malformed or invalid.
    #[error("{message}")]
    BadRequest {
        code: &'static str,
        message: String,
        details: Option<Value>,
    },
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    /// 403 with a code of its own: a request refused by policy rather than by role (a quota,
    /// a non-loopback `Host` on an anonymous server, a foreign `Origin`).
    #[error("{message}")]
    Refused { code: &'static str, message: String },
    #[error("{0}")]
    NotFound(String),
    #[error("method not allowed")]
    MethodNotAllowed(Vec<Method>),
    #[error("{message}")]
    Conflict {
        message: String,
        details: Option<Value>,
    },
    #[error("request body is larger than {0} bytes")]
    TooLarge(usize),
    /// 408: the body did not arrive within the read timeout (a slow or stalled client).
    #[error("the request body did not arrive within {0:?}")]
    BodyTimeout(std::time::Duration),
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 422: well-formed, but cannot be acted on (e.g. options that make the template fail).
    #[error("{message}")]
    Unprocessable {
        code: &'static str,
        message: String,
        details: Option<Value>,
    },
    #[error("{0}")]
    NotReady(String),
    /// 500: our fault. The cause is logged once here; the client sees a generic message.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code,
            message: message.into(),
            details: None,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) | ApiError::Refused { .. } => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::NotReady(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest { code, .. }
            | ApiError::Unprocessable { code, .. }
            | ApiError::Refused { code, .. } => code,
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::Conflict { .. } => "conflict",
            ApiError::TooLarge(_) => "payload_too_large",
            ApiError::BodyTimeout(_) => "body_timeout",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::NotReady(_) => "not_ready",
            ApiError::Internal(_) => "internal",
        }
    }

    /// The response for this error: `{"error": {"code", "message", "details"?}}`.
    pub fn into_response(self) -> Response<super::body::Body> {
        let status = self.status();
        if let ApiError::Internal(cause) = &self {
            tracing::error!(error = %cause, source = ?cause.source(), "request failed");
        }
        let mut err = json!({"code": self.code(), "message": self.to_string()});
        let details = match &self {
            ApiError::BadRequest { details, .. }
            | ApiError::Conflict { details, .. }
            | ApiError::Unprocessable { details, .. } => details.clone(),
            _ => None,
        };
        if let Some(d) = details {
            err["details"] = d;
        }
        let mut resp = super::body::json_response(status, &json!({"error": err}));
        if let ApiError::MethodNotAllowed(allowed) = &self {
            let list: Vec<&str> = allowed.iter().map(Method::as_str).collect();
            if let Ok(v) = HeaderValue::from_str(&list.join(", ")) {
                resp.headers_mut().insert(header::ALLOW, v);
            }
        }
        if let ApiError::BodyTimeout(_) = &self {
            // The rest of the body may still trickle in: do not wait for it.
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let ApiError::Unauthorized(_) = &self {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => ApiError::NotFound(format!("{what} not found")),
            StoreError::AlreadyExists(what) => ApiError::Conflict {
                message: format!("{what} already exists"),
                details: None,
            },
            StoreError::Rejected(why) => ApiError::Conflict {
                message: why,
                details: None,
            },
            StoreError::BadCursor(c) => {
                ApiError::bad_request("invalid_filter", format!("invalid cursor {c:?}"))
            }
            other => ApiError::Internal(Box::new(other)),
        }
    }
}

//! The one error every endpoint answers with: a status and a JSON body that says what
//! was wrong and what to do, `{"error": {"code": "...", "message": "..."}}`.

use std::time::Duration;

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// What an error response carries.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// An error's machine-readable code and its message for people.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable code: `bad_request`, `unauthorized`, `forbidden`, `not_found`,
    /// `method_not_allowed`, `lease_lost`, `conflict`, `queue_busy`, `running`,
    /// `payload_too_large`, `unsupported_media_type`, `rate_limited`, `quota_exceeded`,
    /// `unsupported`, `unavailable`, `internal`.
    pub code: &'static str,
    /// What was wrong, and what to do.
    pub message: String,
}

/// An error an endpoint answers with.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<Duration>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), retry_after: None }
    }

    /// 400: the request is wrong.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 401: no credentials, or credentials that do not hold.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403: the credentials hold, but do not allow this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 409: the request conflicts with the job's state.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::CONFLICT, code, message)
    }

    /// 429, with when to try again.
    pub fn rate_limited(message: impl Into<String>, retry_after: Duration) -> Self {
        let mut error = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message);
        error.retry_after = Some(retry_after);
        error
    }

    /// 405: the endpoint exists, but not for this method.
    pub fn method_not_allowed() -> Self {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this endpoint does not take that method; see /v1/openapi.json",
        )
    }

    /// 503: the broker cannot be reached now, or the request ran too long.
    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// 503 with `Retry-After`: the server is at a limit of its own for now.
    pub fn busy(message: impl Into<String>, retry_after: Duration) -> Self {
        let mut error = ApiError::unavailable(message);
        error.retry_after = Some(retry_after);
        error
    }

    /// The status it answers with.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl From<dmq_core::Error> for ApiError {
    fn from(error: dmq_core::Error) -> Self {
        use dmq_core::Error;
        let message = error.to_string();
        match error {
            Error::LeaseLost { .. } => ApiError::conflict(
                "lease_lost",
                format!("{message}; the job is no longer yours: drop it without settling it"),
            ),
            Error::DuplicateJob { .. } => ApiError::conflict("conflict", message),
            Error::QueueBusy { .. } => ApiError::conflict("queue_busy", message),
            Error::QuotaExceeded { retry_after, .. } => {
                let mut error =
                    ApiError::new(StatusCode::TOO_MANY_REQUESTS, "quota_exceeded", message);
                error.retry_after = Some(retry_after);
                error
            }
            Error::InvalidArgument(_) | Error::MessageTooLarge { .. } | Error::Encode { .. } => {
                ApiError::bad_request(message)
            }
            Error::Unsupported(_) => {
                ApiError::new(StatusCode::NOT_IMPLEMENTED, "unsupported", message)
            }
            e if e.is_transient() => {
                tracing::warn!(error = %e, "the broker could not be reached");
                ApiError::unavailable("the broker could not be reached; try again shortly")
            }
            e => {
                // The broker's own words may name its address; they go to the log only.
                tracing::error!(error = %e, "a request failed");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "the broker refused the request; the server's log says why",
                )
            }
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let status = rejection.status();
        let text = rejection.body_text();
        match status {
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
                status,
                "payload_too_large",
                "the request body is over the server's limit (--max-body); pass large data by \
                 reference (a key or URL) instead",
            ),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::new(
                status,
                "unsupported_media_type",
                "send the body as JSON, with Content-Type: application/json",
            ),
            _ => ApiError::bad_request(text),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::bad_request(rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::bad_request(rejection.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: ErrorDetail { code: self.code, message: self.message } };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(after) = self.retry_after {
            let seconds = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            if let Ok(value) = HeaderValue::from_str(&seconds.max(1).to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

//! Why a request failed: an error code and a message for a person, sent back as the request's
//! error response. Bad input is refused and the connection goes on (invariant 7
//! (docs/ARCHITECTURE.md)); only transport failures end it.

use zync_proto::{ErrorCode, ErrorResponse};

/// Why a request failed; sent back as an error response.
#[derive(Debug)]
pub(crate) struct Refusal {
    code: ErrorCode,
    message: String,
}

impl Refusal {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Refusal {
        Refusal {
            code,
            message: message.into(),
        }
    }

    pub(crate) fn message(&self) -> &str {
        &self.message
    }

    pub(crate) fn code(&self) -> ErrorCode {
        self.code
    }

    /// The error response answering request `id` (`None` when the frame had no readable id).
    pub(crate) fn into_response(self, id: Option<u64>) -> ErrorResponse {
        ErrorResponse {
            id,
            code: self.code,
            message: self.message,
        }
    }
}

impl From<zync_db::DbError> for Refusal {
    fn from(e: zync_db::DbError) -> Refusal {
        tracing::error!("index error: {e}");
        Refusal::new(
            ErrorCode::Internal,
            format!("the daemon's index failed: {e}"),
        )
    }
}

impl From<zync_proto::ParseError> for Refusal {
    fn from(e: zync_proto::ParseError) -> Refusal {
        Refusal::new(e.code, e.message)
    }
}

//! RFC 9457 problem details (`application/problem+json`): every error the
//! JSON API answers, with the fields at fault named for invalid input.

use serde::Serialize;

use crate::http;

/// The media type of a problem.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// One invalid field of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// The field's JSON path (`url`, `items[3].slug`), or `body` when the
    /// body as a whole is at fault.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

/// A problem, ready to render.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// A URI naming the kind of problem (`about:blank` when the status
    /// says it all).
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// A short summary of the kind.
    pub title: &'static str,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong with this request.
    pub detail: String,
    /// The invalid fields, for 400.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// `Allow` for a 405, `Retry-After` for a 429 and the like: headers the
    /// response needs besides the body.
    #[serde(skip)]
    pub headers: Vec<(&'static str, String)>,
}

/// The problem type of invalid input (400 with `errors`).
pub const INVALID_REQUEST: &str = "urn:shorty:problem:invalid-request";

impl Problem {
    /// A problem with `status` and `detail`, titled by the status.
    pub fn new(status: u16, detail: impl Into<String>) -> Self {
        Self {
            kind: "about:blank",
            title: http::reason(status),
            status,
            detail: detail.into(),
            errors: Vec::new(),
            headers: Vec::new(),
        }
    }

    /// 400 naming `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::invalid_fields(vec![FieldError {
            field: field.into(),
            message: message.into(),
        }])
    }

    /// 400 naming every field in `errors` (at least one).
    pub fn invalid_fields(errors: Vec<FieldError>) -> Self {
        let detail = match errors.as_slice() {
            [one] => format!("{}: {}", one.field, one.message),
            many => format!("{} fields are invalid", many.len()),
        };
        Self {
            kind: INVALID_REQUEST,
            title: "Invalid request",
            errors,
            ..Self::new(400, detail)
        }
    }

    /// The same problem with one more response header.
    #[must_use]
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// The JSON body.
    pub fn body(&self) -> Vec<u8> {
        // Serialising plain strings and numbers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

//! The JSON HTTP API under `/api/v1` (issue 21), sans-IO.
//!
//! [`parse_call`] turns a request (method, path, query, body) into a typed
//! [`ApiCall`] with its input already checked, or a [`Problem`] (RFC 9457)
//! naming what is wrong; the shard runs the call through the same
//! operations the wire protocol uses and renders the outcome with
//! [`model::LinkView`] or a [`Problem`]. Nothing here knows about sockets,
//! clocks or the store.
//!
//! `GET /api/v1/openapi.json` serves [`OPENAPI`], an OpenAPI 3.1 document
//! of every route; a test checks each route it lists is routed here and
//! each route routed here is listed.

pub mod auth;
pub mod model;
pub mod problem;

use crate::http::Method;
pub use model::{CreateLink, LinkPatch, LinkView, Patch};
pub use problem::{FieldError, Problem, PROBLEM_JSON};

/// The API's version prefix.
pub const API_V1: &str = "/api/v1";

/// The OpenAPI 3.1 document of the API.
pub const OPENAPI: &str = include_str!("openapi.json");

/// Default page size of `GET /api/v1/links`.
pub const DEFAULT_LIST_LIMIT: u32 = 20;
/// Largest page size of `GET /api/v1/links`.
pub const MAX_LIST_LIMIT: u32 = 100;

/// Statistics buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    /// One bucket an hour.
    Hour,
    /// One bucket a day.
    Day,
}

/// A checked API request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ApiCall {
    /// `POST /api/v1/links`.
    Create(CreateLink),
    /// `POST /api/v1/links/bulk`: one checked creation, or the problem
    /// with it, per item.
    Bulk(Vec<Result<CreateLink, Problem>>),
    /// `GET /api/v1/links/{code}`.
    Get {
        /// The code or alias.
        code: String,
    },
    /// `PATCH /api/v1/links/{code}`.
    Update {
        /// The code or alias.
        code: String,
        /// What to change.
        patch: LinkPatch,
    },
    /// `DELETE /api/v1/links/{code}`.
    Delete {
        /// The code or alias.
        code: String,
    },
    /// `GET /api/v1/links?cursor=&limit=`: the caller's links, newest
    /// first.
    List {
        /// Where the previous page ended (opaque to clients).
        cursor: Option<String>,
        /// Page size, 1 to [`MAX_LIST_LIMIT`].
        limit: u32,
    },
    /// `GET /api/v1/links/{code}/stats?from=&to=&granularity=`.
    Stats {
        /// The code or alias.
        code: String,
        /// Start, Unix ms (inclusive).
        from_ms: Option<u64>,
        /// End, Unix ms (exclusive).
        to_ms: Option<u64>,
        /// Bucket size.
        granularity: Granularity,
    },
    /// `GET /api/v1/openapi.json`.
    OpenApi,
}

impl ApiCall {
    /// `true` for calls that change links (they need a key under
    /// `--auth required`).
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            Self::Create(_) | Self::Bulk(_) | Self::Update { .. } | Self::Delete { .. }
        )
    }

    /// The scope the call needs.
    pub fn scope(&self) -> Option<auth::Scope> {
        match self {
            Self::Create(_) | Self::Bulk(_) | Self::Update { .. } | Self::Delete { .. } => {
                Some(auth::Scope::LinksWrite)
            }
            Self::Get { .. } | Self::List { .. } => Some(auth::Scope::LinksRead),
            Self::Stats { .. } => Some(auth::Scope::StatsRead),
            Self::OpenApi => None,
        }
    }
}

/// The routes: `(method, path template)`, as the OpenAPI document lists
/// them.
pub const ROUTES: &[(&str, &str)] = &[
    ("post", "/api/v1/links"),
    ("get", "/api/v1/links"),
    ("post", "/api/v1/links/bulk"),
    ("get", "/api/v1/links/{code}"),
    ("patch", "/api/v1/links/{code}"),
    ("delete", "/api/v1/links/{code}"),
    ("get", "/api/v1/links/{code}/stats"),
    ("get", "/api/v1/openapi.json"),
];

fn not_allowed(allow: &str) -> Problem {
    Problem::new(405, format!("this route answers {allow}")).with_header("Allow", allow.to_owned())
}

fn no_body(body: &[u8]) -> Result<(), Problem> {
    if body.is_empty() {
        Ok(())
    } else {
        Err(Problem::invalid("body", "this route takes no body"))
    }
}

/// `true` when `code` could name a link (generated codes are base62, a
/// subset of the alias characters).
fn valid_code(code: &str) -> bool {
    !code.is_empty()
        && code.len() <= model::MAX_ALIAS_LEN
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The query's parameters, each named at most once and among `known`.
fn query_params(query: Option<&str>, known: &[&str]) -> Result<Vec<(String, String)>, Problem> {
    let mut params: Vec<(String, String)> = Vec::new();
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if !known.contains(&name.as_ref()) {
            return Err(Problem::invalid(
                name.into_owned(),
                format!("unknown query parameter (known: {})", known.join(", ")),
            ));
        }
        if params.iter().any(|(n, _)| *n == name) {
            return Err(Problem::invalid(name.into_owned(), "given more than once"));
        }
        params.push((name.into_owned(), value.into_owned()));
    }
    Ok(params)
}

fn param<'p>(params: &'p [(String, String)], name: &str) -> Option<&'p str> {
    params
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn time_param(params: &[(String, String)], name: &str) -> Result<Option<u64>, Problem> {
    param(params, name)
        .map(|t| model::parse_rfc3339_ms(t).map_err(|e| Problem::invalid(name, e)))
        .transpose()
}

/// Turns a request under [`API_V1`] into a checked call. `HEAD` is taken
/// as `GET` (the caller leaves the body out).
pub fn parse_call(
    method: Method,
    path: &str,
    query: Option<&str>,
    body: &[u8],
) -> Result<ApiCall, Problem> {
    let method = if method == Method::Head {
        Method::Get
    } else {
        method
    };
    let Some(rest) = path.strip_prefix(API_V1) else {
        return Err(Problem::new(
            404,
            "no such API route (the API is under /api/v1)",
        ));
    };
    let segments: Vec<&str> = rest.strip_prefix('/').unwrap_or(rest).split('/').collect();
    match segments.as_slice() {
        ["openapi.json"] => match method {
            Method::Get => no_body(body).map(|()| ApiCall::OpenApi),
            _ => Err(not_allowed("GET, HEAD")),
        },
        ["links"] => match method {
            Method::Post => {
                query_params(query, &[])?;
                let parsed = model::from_json(body, "")?;
                model::create_link(parsed, "").map(ApiCall::Create)
            }
            Method::Get => {
                no_body(body)?;
                let params = query_params(query, &["cursor", "limit"])?;
                let limit = match param(&params, "limit") {
                    None => DEFAULT_LIST_LIMIT,
                    Some(l) => l
                        .parse()
                        .ok()
                        .filter(|l| (1..=MAX_LIST_LIMIT).contains(l))
                        .ok_or_else(|| {
                            Problem::invalid("limit", format!("must be 1 to {MAX_LIST_LIMIT}"))
                        })?,
                };
                let cursor = param(&params, "cursor")
                    .filter(|c| !c.is_empty())
                    .map(str::to_owned);
                Ok(ApiCall::List { cursor, limit })
            }
            _ => Err(not_allowed("GET, HEAD, POST")),
        },
        ["links", "bulk"] => match method {
            Method::Post => {
                query_params(query, &[])?;
                model::bulk(body).map(ApiCall::Bulk)
            }
            _ => Err(not_allowed("POST")),
        },
        ["links", code] if valid_code(code) => {
            let code = (*code).to_owned();
            match method {
                Method::Get => no_body(body).map(|()| ApiCall::Get { code }),
                Method::Delete => no_body(body).map(|()| ApiCall::Delete { code }),
                Method::Patch => {
                    let parsed = model::from_json(body, "")?;
                    model::patch(parsed).map(|patch| ApiCall::Update { code, patch })
                }
                _ => Err(not_allowed("GET, HEAD, PATCH, DELETE")),
            }
        }
        ["links", code, "stats"] if valid_code(code) => match method {
            Method::Get => {
                no_body(body)?;
                let params = query_params(query, &["from", "to", "granularity"])?;
                let granularity = match param(&params, "granularity") {
                    None | Some("day") => Granularity::Day,
                    Some("hour") => Granularity::Hour,
                    Some(_) => return Err(Problem::invalid("granularity", "must be hour or day")),
                };
                Ok(ApiCall::Stats {
                    code: (*code).to_owned(),
                    from_ms: time_param(&params, "from")?,
                    to_ms: time_param(&params, "to")?,
                    granularity,
                })
            }
            _ => Err(not_allowed("GET, HEAD")),
        },
        _ => Err(Problem::new(404, "no such API route")),
    }
}

#[cfg(test)]
mod tests;

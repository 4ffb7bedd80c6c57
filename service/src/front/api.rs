//! The JSON API front (`/api/v1`, issue 21): a request already parsed
//! into an [`ApiCall`] by the sans-IO [`crate::api`] module is authorised,
//! rate-limited and run through the operations ([`crate::ops`]) the wire
//! protocol uses; outcomes are rendered as JSON or RFC 9457 problems.

use std::time::Instant;

use bytes::BytesMut;

use crate::api::auth::{presented_key, AuthError};
use crate::api::{self, ApiCall, LinkView, Problem};
use crate::codes::MAX_CODE_LEN;
use crate::http::{self, Method, Response};
use crate::limits::{Action, Limited};
use crate::metrics::{Op, Proto};
use crate::ops::{self, Step};
use crate::output::{ApiView, Output, Render, Wait, WAIT_COST};
use crate::shard::{OpResult, Shard};

impl Shard {
    /// Counts `action` for an HTTP request: behind a trusted proxy, the
    /// client its forwarding headers name.
    pub(super) fn limit_http(
        &self,
        request: &http::Request<'_>,
        action: Action,
        key_id: Option<u32>,
        now: Instant,
    ) -> Result<(), Limited> {
        let limits = &self.shared.limits;
        if limits.is_off() {
            return Ok(());
        }
        let client = crate::limits::client_behind(
            self.peer,
            request.forwarded_for,
            request.forwarded,
            &self.shared.settings.trusted_proxies,
        );
        limits.check(action, client, key_id, now)
    }

    /// A JSON API request ([`crate::api`]): checked, authorised, then run
    /// through the operations SHORTEN and RESOLVE use.
    pub(super) fn api_request(
        &mut self,
        conn: u32,
        request: &http::Request<'_>,
        body: &[u8],
        out: &mut Output,
        now: Instant,
    ) {
        let head_only = request.method == Method::Head;
        let keep_alive = request.keep_alive;
        let problem = |shard: &Self, out: &mut Output, problem: Problem| {
            shard
                .metrics()
                .request(Proto::Http, Op::Api, problem.status);
            let date = &shard.date;
            out.push_with(|dst| write_problem(dst, date, &problem, head_only, keep_alive));
        };
        let call = match api::parse_call(request.method, request.path, request.query, body) {
            Ok(call) => call,
            Err(p) => return problem(self, out, p),
        };
        if let Some(scope) = call.scope() {
            let presented = presented_key(request.authorization, request.api_key);
            let caller = self
                .shared
                .keys
                .current()
                .caller(presented, self.shared.settings.auth_required)
                .and_then(|caller| {
                    if caller.scopes.allows(scope) {
                        Ok(caller)
                    } else {
                        Err(AuthError::Forbidden(scope))
                    }
                });
            match caller {
                Err(err) => return problem(self, out, err.problem()),
                Ok(caller) if call.is_write() => {
                    if let Err(limited) =
                        self.limit_http(request, Action::Create, caller.key_id, now)
                    {
                        let mut p = Problem::new(429, limited.message());
                        for (name, value) in limited.headers() {
                            p = p.with_header(name, value);
                        }
                        return problem(self, out, p);
                    }
                }
                Ok(_) => {}
            }
        }
        let render = |view| Render::Api {
            view,
            head_only,
            keep_alive,
        };
        match call {
            ApiCall::OpenApi => {
                self.metrics().request(Proto::Http, Op::Api, 200);
                let date = &self.date;
                out.push_with(|dst| {
                    http::write(
                        dst,
                        date,
                        &Response {
                            status: 200,
                            headers: &[("Content-Type", "application/json")],
                            body: api::OPENAPI.as_bytes(),
                            head_only,
                            keep_alive,
                        },
                    )
                })
            }
            ApiCall::Create(link) if link.is_plain() => {
                let view = ApiView::Created {
                    url: link.url.as_str().into(),
                };
                let step = ops::create::shorten(self, conn, link.url.as_bytes());
                self.api_step(step, render(view), out, now);
            }
            ApiCall::Get { code } => {
                let view = ApiView::Link {
                    code: code.as_str().into(),
                };
                self.resolve(conn, code.as_bytes(), out, now, render(view), Proto::Http)
            }
            _ => problem(
                self,
                out,
                Problem::new(
                    501,
                    "this call needs link options, updates, listings or statistics, which \
                     this server version does not have yet",
                ),
            ),
        }
    }

    /// Renders an API operation's step now, or queues its wait.
    fn api_step(&mut self, step: Step, render: Render, out: &mut Output, now: Instant) {
        match step {
            Step::Pending(op) => {
                let deadline = now + self.shared.settings.commit_timeout;
                out.push_wait(
                    Wait::Op {
                        op,
                        render,
                        deadline,
                    },
                    WAIT_COST,
                )
            }
            Step::Now(result) => {
                self.metrics()
                    .request(Proto::Http, Op::Api, super::status_of(&result));
                out.push_with(|dst| self.render(&result, &render, dst));
            }
        }
    }

    /// Renders an API call's outcome as JSON or a problem.
    pub(super) fn render_api(
        &self,
        result: &OpResult,
        view: &ApiView,
        head_only: bool,
        keep_alive: bool,
        dst: &mut BytesMut,
    ) {
        let public = self.shared.settings.public_url.as_str();
        let outcome = match (result, view) {
            (OpResult::Stored(key), ApiView::Created { url }) => {
                let mut code = [0; MAX_CODE_LEN];
                let code = self.shared.codec.code(*key, &mut code);
                Ok((201, LinkView::plain(code, public, url)))
            }
            (OpResult::Url(url) | OpResult::Redirect { url, .. }, ApiView::Link { code }) => Ok((
                200,
                LinkView::plain(code, public, &String::from_utf8_lossy(url)),
            )),
            (OpResult::NotFound, _) => Err(Problem::new(404, "no link has this code")),
            (OpResult::Gone { reason, .. }, _) => Err(Problem::new(410, reason.message())),
            // The URL policy's refusals are about the URL field.
            (OpResult::Failed(code, message), ApiView::Created { .. })
                if matches!(code.0, 400 | 422) =>
            {
                // 422 (a URL that parses as JSON but is not one we take)
                // keeps its status.
                let mut problem = Problem::invalid("url", message.as_ref());
                problem.status = code.0;
                problem.title = http::reason(code.0);
                Err(problem)
            }
            (OpResult::Failed(code, message), _) => {
                let status = if (400..600).contains(&code.0) {
                    code.0
                } else {
                    500
                };
                Err(Problem::new(status, message.as_ref()))
            }
            _ => Err(Problem::new(500, "unexpected store reply")),
        };
        match outcome {
            Ok((status, link)) => {
                // Serialising strings and numbers cannot fail.
                let body = serde_json::to_vec(&link).unwrap_or_default();
                let location = format!("{}/links/{}", api::API_V1, link.code);
                let created = [
                    ("Content-Type", "application/json"),
                    ("Location", location.as_str()),
                ];
                let headers = if status == 201 {
                    &created[..]
                } else {
                    &created[..1]
                };
                http::write(
                    dst,
                    &self.date,
                    &Response {
                        status,
                        headers,
                        body: &body,
                        head_only,
                        keep_alive,
                    },
                );
            }
            Err(problem) => write_problem(dst, &self.date, &problem, head_only, keep_alive),
        }
    }
}

/// Writes `problem` as an `application/problem+json` response.
pub(super) fn write_problem(
    dst: &mut BytesMut,
    date: &str,
    problem: &Problem,
    head_only: bool,
    keep_alive: bool,
) {
    let body = problem.body();
    let mut headers: Vec<(&str, &str)> = vec![("Content-Type", api::PROBLEM_JSON)];
    headers.extend(problem.headers.iter().map(|(n, v)| (*n, v.as_str())));
    http::write(
        dst,
        date,
        &Response {
            status: problem.status,
            headers: &headers,
            body: &body,
            head_only,
            keep_alive,
        },
    );
}

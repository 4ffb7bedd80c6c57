//! One core's request handling, sans-IO.
//!
//! A [`Shard`] turns requests (frames, HTTP heads) into replies in a
//! connection's [`Output`]. A reply that cannot be given at once becomes an
//! *operation*: a SHORTEN waiting for its record to be durable, a RESOLVE
//! waiting for its URL to be read from the log or fetched from the remote
//! store. The shard hands the I/O to the backend ([`Shard::poll_log_io`],
//! [`Shard::poll_read`], [`Shard::poll_remote`]), takes the results back
//! ([`Shard::log_done`], [`Shard::read_done`], [`Shard::remote_done`]), and
//! names the connections to wake ([`Shard::take_wakes`]): only those whose
//! operations settled, never all of them.

use std::borrow::Cow;
use std::io;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use shorty_protocol::frame::{parse_frame, Status};
use shorty_protocol::{ErrorCode, Reply, Request, ServerInfo, PROTOCOL_V1};
use slab::Slab;

use crate::abuse::BlocklistRing;
use crate::api::auth::{presented_key, AuthError, KeyRing};
use crate::api::{self, ApiCall, LinkView, Problem};
use crate::cache::UrlCache;
use crate::codes::{Codec, IdAllocator, IdSpace, MAX_CODE_LEN};
use crate::forward;
use crate::health::{Health, StorageHealth};
use crate::http::{self, Front, Head, Method, Response, Route};
use crate::keydir::{KeyDir, Location};
use crate::limits::{Action, Limited, Limits};
use crate::log::record::Seal;
use crate::log::record::{decode_record, Decoded, Link, Record, RECORD_HEADER_LEN};
use crate::log::segments::{FileIdx, SegmentRef, SegmentTable};
use crate::log::{IoResult, LogIo, LogState, LogWriter};
use crate::metrics::{CoreMetrics, Op, Proto};
use crate::output::{ApiView, OpId, Output, Released, Render, Wait, WAIT_COST};
use crate::settings::Settings;
use crate::url::UrlPolicy;

/// Bytes read speculatively for a URL: most link records fit, so one read
/// usually suffices; a longer record is read again in full.
pub const URL_READ_LEN: usize = 512;

/// What [`Shard::handle_frames`] and [`Shard::handle_http`] did with the
/// bytes they were given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InputOutcome {
    /// Bytes consumed from the front of the input (whole requests only).
    pub consumed: usize,
    /// `true` when the rest holds the start of a request: its timeout runs.
    pub mid_frame: bool,
    /// `true` when that request's head is in and its body is arriving (a
    /// JSON API request): `--api-body-timeout` is added to its deadline.
    pub in_body: bool,
    /// `true` when the connection must be closed once the queued replies
    /// are written.
    pub close: bool,
}

/// The links' home: this process's own log, or a remote store.
#[derive(Debug)]
pub enum StoreMode {
    /// The embedded log and its key directory.
    Local(LocalStore),
    /// A remote store (Redis Cluster), served by the runtime.
    Remote,
}

/// The embedded log's shared parts.
#[derive(Debug)]
pub struct LocalStore {
    /// Code → record location.
    pub keydir: Arc<KeyDir>,
    /// Every segment file.
    pub segments: Arc<SegmentTable>,
    /// The id counter.
    pub ids: Arc<IdSpace>,
}

/// What the admin listener needs from the runtime.
pub trait AdminView: Send + Sync {
    /// The Prometheus text exposition of every metric.
    fn metrics_text(&self) -> String;
}

/// Everything the shards of one process share.
pub struct Shared {
    /// Limits and timeouts.
    pub settings: Settings,
    /// Ids to codes and back.
    pub codec: Codec,
    /// Which URLs are accepted.
    pub policy: UrlPolicy,
    /// Where links live.
    pub store: StoreMode,
    /// Every core's storage health.
    pub health: Arc<Health>,
    /// Every core's counters.
    pub metrics: Box<[CoreMetrics]>,
    /// Set by the runtime once it can render metrics.
    pub admin: OnceLock<Box<dyn AdminView>>,
    /// The API keys valid now (the runtime re-reads them every second).
    pub keys: KeyRing,
    /// Rate limits (off unless configured).
    pub limits: Limits,
    /// Destinations refused (`--blocklist`, reloaded on `SIGHUP`).
    pub blocklist: BlocklistRing,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("settings", &self.settings)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Checks a key presented on the wire (the AUTH request's payload)
    /// exactly as the HTTP front checks `Authorization`: the caller whose
    /// scopes then govern the connection.
    ///
    /// # Errors
    /// [`AuthError::Invalid`] for a key that is not valid now.
    pub fn authenticate(&self, key: &[u8]) -> Result<crate::api::auth::Caller, AuthError> {
        self.keys.current().authenticate(key)
    }

    /// Shared state for `cores` cores.
    pub fn new(settings: Settings, codec: Codec, store: StoreMode, cores: usize) -> Self {
        Self {
            policy: UrlPolicy::new(settings.max_url_bytes, settings.public_url.clone())
                .allow_userinfo(settings.allow_userinfo),
            settings,
            codec,
            store,
            health: Arc::new(Health::new(cores)),
            metrics: (0..cores).map(|_| CoreMetrics::default()).collect(),
            admin: OnceLock::new(),
            keys: KeyRing::default(),
            limits: Limits::default(),
            blocklist: BlocklistRing::default(),
        }
    }

    /// For tests, examples and fuzz targets: one core over an empty
    /// embedded log (segments under `/data`, never touched: the caller
    /// performs the shard's I/O), a fixed code key.
    pub fn for_tests(settings: Settings) -> Self {
        let store = LocalStore {
            keydir: Arc::new(KeyDir::new()),
            segments: Arc::new(SegmentTable::new(std::path::Path::new("/data"), 0)),
            ids: Arc::new(IdSpace::new(0)),
        };
        Self::new(
            settings,
            Codec::new(&crate::codes::CodeKey([7; 16])),
            StoreMode::Local(store),
            1,
        )
    }

    /// Shares `health` (with a remote store's thread, which reports into
    /// it) instead of a fresh one.
    pub fn with_health(mut self, health: Arc<Health>) -> Self {
        self.health = health;
        self
    }

    /// The same, with rate limits.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The key directory, with the embedded log.
    pub fn keydir(&self) -> Option<&KeyDir> {
        match &self.store {
            StoreMode::Local(local) => Some(&local.keydir),
            StoreMode::Remote => None,
        }
    }
}

/// An operation's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpResult {
    /// The URL of a code.
    Url(Bytes),
    /// No such code.
    NotFound,
    /// A SHORTEN is stored under this key.
    Stored(u64),
    /// It failed; answer with this code and message.
    Failed(ErrorCode, Cow<'static, str>),
}

#[derive(Debug)]
enum OpState {
    Waiting,
    Done(OpResult),
    /// The connection stopped waiting; drop the result when it comes.
    Abandoned,
}

#[derive(Debug)]
struct OpEntry {
    conn: u32,
    /// The code key it is about.
    key: u64,
    state: OpState,
}

/// A URL to read from the log for a RESOLVE or a redirect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UrlRead {
    /// The operation waiting for it.
    pub op: OpId,
    /// The code key.
    pub key: u64,
    /// The segment.
    pub file: FileIdx,
    /// The record's offset.
    pub offset: u64,
    /// Bytes to read.
    pub len: usize,
}

/// A request for the remote store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteRequest {
    /// Look a key up.
    Get {
        /// The operation waiting for it.
        op: OpId,
        /// The code key.
        key: u64,
    },
    /// Store a new link; the store picks the id.
    Put {
        /// The operation waiting for it.
        op: OpId,
        /// The long URL.
        url: Bytes,
    },
}

#[derive(Debug)]
struct LocalShard {
    ids: IdAllocator,
    log: LogWriter,
    keydir: Arc<KeyDir>,
}

/// One core's share of the service.
#[derive(Debug)]
pub struct Shard {
    shared: Arc<Shared>,
    core: usize,
    local: Option<LocalShard>,
    cache: UrlCache,
    ops: Slab<OpEntry>,
    reads: std::collections::VecDeque<UrlRead>,
    /// Keys being read, and the other operations waiting for the same read.
    reading: std::collections::HashMap<u64, Vec<OpId>>,
    remote: std::collections::VecDeque<RemoteRequest>,
    wake: Vec<u32>,
    date: String,
    /// The peer of the connection whose input is being handled.
    peer: Option<std::net::IpAddr>,
}

/// ERROR 401 on the wire (the protocol crate names it in v2).
const UNAUTHORIZED: ErrorCode = ErrorCode(401);
/// ERROR 429 on the wire (the protocol crate names it in v2).
const RATE_LIMITED: ErrorCode = ErrorCode(429);
/// ERROR 403 on the wire (the protocol crate names it in v2).
const FORBIDDEN: ErrorCode = ErrorCode(403);

fn error(code: ErrorCode, message: &str) -> Reply<&[u8]> {
    Reply::error(code, message.as_bytes())
}

impl Shard {
    /// Core `core`'s shard.
    pub fn new(shared: Arc<Shared>, core: usize) -> Self {
        let local = match &shared.store {
            StoreMode::Local(store) => Some(LocalShard {
                ids: IdAllocator::new(store.ids.clone()),
                log: LogWriter::new(shared.settings.log.clone(), store.segments.clone()),
                keydir: store.keydir.clone(),
            }),
            StoreMode::Remote => None,
        };
        Self {
            cache: UrlCache::new(shared.settings.cache_bytes_per_core),
            shared,
            core,
            local,
            ops: Slab::new(),
            reads: Default::default(),
            reading: Default::default(),
            remote: Default::default(),
            wake: Vec::new(),
            date: httpdate_fallback(),
            peer: None,
        }
    }

    /// The shared state.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// This core's counters.
    pub fn metrics(&self) -> &CoreMetrics {
        &self.shared.metrics[self.core]
    }

    /// Sets the HTTP `Date` value (an IMF-fixdate), which the runtime
    /// refreshes every second.
    pub fn set_date(&mut self, date: &str) {
        self.date.clear();
        self.date.push_str(date);
    }

    /// Sets the peer whose input the next `handle_*` calls handle (rate
    /// limits count per client).
    pub fn set_peer(&mut self, peer: Option<std::net::IpAddr>) {
        self.peer = peer;
    }

    /// Counts `action` against the limits.
    fn limit(&self, action: Action, key_id: Option<u32>, now: Instant) -> Result<(), Limited> {
        self.shared.limits.check(action, self.peer, key_id, now)
    }

    /// As [`limit`](Self::limit), for an HTTP request: behind a trusted
    /// proxy, the client its forwarding headers name.
    fn limit_http(
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

    /// The HTTP `Date` value.
    pub fn date(&self) -> &str {
        &self.date
    }

    /// Operations in flight.
    pub fn ops_in_flight(&self) -> usize {
        self.ops.len()
    }

    fn new_op(&mut self, conn: u32, key: u64) -> OpId {
        self.ops.insert(OpEntry {
            conn,
            key,
            state: OpState::Waiting,
        }) as OpId
    }

    fn complete(&mut self, op: OpId, result: OpResult) {
        let Some(entry) = self.ops.get_mut(op as usize) else {
            return;
        };
        match entry.state {
            OpState::Waiting => {
                entry.state = OpState::Done(result);
                self.wake.push(entry.conn);
            }
            OpState::Abandoned => {
                self.ops.remove(op as usize);
            }
            OpState::Done(_) => {}
        }
    }

    /// The connections whose operations settled since the last call.
    pub fn take_wakes(&mut self) -> std::vec::Drain<'_, u32> {
        self.wake.drain(..)
    }

    // ----- the framed protocol -----

    /// Handles every complete frame at the front of `input` for connection
    /// `conn`, while fewer than `--max-output-bytes` are queued or in flight.
    pub fn handle_frames(
        &mut self,
        conn: u32,
        input: &[u8],
        out: &mut Output,
        now: Instant,
    ) -> InputOutcome {
        let settings = &self.shared.settings;
        let (max, cap, delay) = (
            settings.max_frame_len(),
            settings.max_output_bytes,
            settings.delay,
        );
        let mut outcome = InputOutcome::default();
        let mut delayed = false;
        loop {
            let rest = input.get(outcome.consumed..).unwrap_or_default();
            if out.committed_bytes() >= cap {
                // Back-pressure: the rest waits until replies drain.
                outcome.mid_frame = false;
                return outcome;
            }
            match parse_frame(rest, max) {
                Ok(Status::Complete(frame)) => {
                    outcome.consumed += frame.encoded_len();
                    if !delay.is_zero() && !delayed {
                        // The seed's artificial work: replies to requests
                        // read now are held for `--delay`. A timer, never a
                        // blocked core.
                        out.push_wait(Wait::Until(now + delay), WAIT_COST);
                        delayed = true;
                    }
                    self.handle_payload(conn, frame.payload(), out, now);
                }
                Ok(Status::Partial { .. }) => {
                    outcome.mid_frame = !rest.is_empty();
                    return outcome;
                }
                Err(err) => {
                    // The payload is never read: the stream cannot be
                    // resynchronised, so answer and close.
                    self.metrics()
                        .request(Proto::Framed, Op::Other, err.error_code().0);
                    out.push(&error(err.error_code(), &err.to_string()));
                    outcome.close = true;
                    return outcome;
                }
            }
        }
    }

    /// Handles one frame payload.
    fn handle_payload(&mut self, conn: u32, payload: &[u8], out: &mut Output, now: Instant) {
        let request = match Request::parse_payload(payload) {
            Ok(request) => request,
            Err(err) => {
                self.metrics()
                    .request(Proto::Framed, Op::Other, err.error_code().0);
                return out.push(&error(err.error_code(), &err.to_string()));
            }
        };
        let (op, status) = match request {
            // Until the connection can authenticate (AUTH, protocol v2),
            // `--auth required` refuses every wire write.
            Request::Bare(_) | Request::Shorten(_) if self.shared.settings.auth_required => {
                let render = Render::Shortened {
                    bare: matches!(request, Request::Bare(_)),
                };
                return self.refuse(out, &render, UNAUTHORIZED, &AuthError::Missing.message());
            }
            Request::Bare(url) | Request::Shorten(url) => {
                let render = Render::Shortened {
                    bare: matches!(request, Request::Bare(_)),
                };
                if let Err(limited) = self.limit(Action::Create, None, now) {
                    return self.refuse(out, &render, RATE_LIMITED, &limited.message());
                }
                return self.shorten(conn, url, render, out, now);
            }
            Request::Resolve(code) => {
                return self.resolve(conn, code, out, now, Render::Resolved, Proto::Framed)
            }
            Request::Ping(body) => {
                out.push(&Reply::Pong(body));
                (Op::Ping, 0)
            }
            Request::Hello { version: 0, .. } => {
                out.push(&error(
                    ErrorCode::UNSUPPORTED_VERSION,
                    "this server speaks protocol version 1",
                ));
                (Op::Hello, ErrorCode::UNSUPPORTED_VERSION.0)
            }
            Request::Hello { version, .. } => {
                let settings = &self.shared.settings;
                let clamp = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
                // The version this server implements, not the protocol
                // crate's highest: that grows before the server learns it.
                out.push(&Reply::<&[u8]>::Hello(ServerInfo::new(
                    version.min(PROTOCOL_V1),
                    clamp(settings.max_frame_len()),
                    clamp(settings.max_url_bytes),
                )));
                (Op::Hello, 0)
            }
            // `Request` is non-exhaustive: a kind this version does not
            // handle.
            _ => {
                out.push(&error(
                    ErrorCode::UNKNOWN_OPCODE,
                    "request kind not supported",
                ));
                (Op::Other, ErrorCode::UNKNOWN_OPCODE.0)
            }
        };
        self.metrics().request(Proto::Framed, op, status);
    }

    /// Refuses a request now, in its place, rendered as `render` would
    /// render the failure of its operation.
    fn refuse(&self, out: &mut Output, render: &Render, code: ErrorCode, message: &str) {
        let (proto, op) = labels(render);
        self.metrics().request(proto, op, code.0);
        let failed = OpResult::Failed(code, message.to_owned().into());
        out.push_with(|dst| self.render(&failed, render, dst));
    }

    /// Makes a new link for `url` (a SHORTEN, or a plain API creation),
    /// answered as `render` says once it is durable.
    fn shorten(&mut self, conn: u32, url: &[u8], render: Render, out: &mut Output, now: Instant) {
        let shared = self.shared.clone();
        let checked = shared.policy.check(url, |code| {
            shared
                .codec
                .parse(code.as_bytes())
                .is_some_and(|key| match &self.local {
                    Some(local) => local.keydir.contains(key),
                    // The remote store is not asked synchronously: the local
                    // cache is the best cheap evidence.
                    None => self.cache.contains(key),
                })
        });
        let url = match checked {
            Ok(url) => url,
            Err(err) => return self.refuse(out, &render, err.error_code(), &err.to_string()),
        };
        if let Some(rule) = shared.blocklist.current().blocks(url) {
            let message = format!(
                "destination blocked by rule `{}` (line {} of --blocklist)",
                rule.text, rule.line
            );
            return self.refuse(out, &render, FORBIDDEN, &message);
        }
        let deadline = now + shared.settings.commit_timeout;
        let Some(local) = self.local.as_mut() else {
            let op = self.new_op(conn, 0);
            self.remote.push_back(RemoteRequest::Put {
                op,
                url: Bytes::copy_from_slice(url.as_bytes()),
            });
            return out.push_wait(
                Wait::Op {
                    op,
                    render,
                    deadline,
                },
                WAIT_COST,
            );
        };
        // An imported link may already hold the code an id maps to (and
        // custom aliases will), and a few codes are reserved words: skip
        // such ids. The key directory is asked for every new id, whatever
        // the data directory's files say: a lookup costs far less than the
        // record's write, and a code's owner must never depend on a marker
        // file an operator can lose (issue 18, defect 12).
        let (id, key) = loop {
            let id = local.ids.next_id();
            let Some(key) = shared.codec.new_key(id) else {
                continue;
            };
            if !local.keydir.contains(key) {
                break (id, key);
            }
        };
        let op = self.ops.insert(OpEntry {
            conn,
            key,
            state: OpState::Waiting,
        }) as OpId;
        let link = Link {
            key,
            id,
            url: url.as_bytes(),
        };
        match local.log.append(&link, u64::from(op)) {
            Ok(()) => out.push_wait(
                Wait::Op {
                    op,
                    render,
                    deadline,
                },
                WAIT_COST,
            ),
            Err(failure) => {
                // Disk full, busy or broken: refused now, in its place.
                self.ops.remove(op as usize);
                let code = match failure {
                    crate::log::LogFailure::Broken => ErrorCode::INTERNAL,
                    _ => ErrorCode::OVERLOADED,
                };
                self.refuse(out, &render, code, failure.message());
            }
        }
    }

    /// Looks a code up for a RESOLVE or a redirect: from the cache at once,
    /// else as an operation (a log read, a remote GET).
    fn resolve(
        &mut self,
        conn: u32,
        code: &[u8],
        out: &mut Output,
        now: Instant,
        render: Render,
        proto: Proto,
    ) {
        let (_, op_kind) = labels(&render);
        let Some(key) = self.shared.codec.parse(code) else {
            self.metrics().request(proto, op_kind, 404);
            return out.push_with(|dst| self.render(&OpResult::NotFound, &render, dst));
        };
        let cached = self.cache.get(key);
        self.metrics().cache(cached.is_some());
        if let Some(url) = cached {
            self.metrics().request(proto, op_kind, 0);
            return out.push_with(|dst| self.render(&OpResult::Url(url), &render, dst));
        }
        let deadline = now + self.shared.settings.store_timeout;
        let location = match &self.local {
            None => None,
            Some(local) => match local.keydir.get(key) {
                Some(location) => Some(location),
                None => {
                    self.metrics().request(proto, op_kind, 404);
                    return out.push_with(|dst| self.render(&OpResult::NotFound, &render, dst));
                }
            },
        };
        let op = self.new_op(conn, key);
        match location {
            Some(Location { file, offset }) => {
                // Single flight: a read of this key already in flight
                // answers this request too.
                match self.reading.entry(key) {
                    std::collections::hash_map::Entry::Occupied(mut waiting) => {
                        waiting.get_mut().push(op)
                    }
                    std::collections::hash_map::Entry::Vacant(slot) => {
                        slot.insert(Vec::new());
                        self.reads.push_back(UrlRead {
                            op,
                            key,
                            file,
                            offset: u64::from(offset),
                            len: URL_READ_LEN,
                        });
                    }
                }
            }
            None => self.remote.push_back(RemoteRequest::Get { op, key }),
        }
        // Counted as the largest reply a URL can make until it settles.
        let cost = self.shared.settings.max_url_bytes + 512;
        out.push_wait(
            Wait::Op {
                op,
                render,
                deadline,
            },
            cost,
        );
    }

    /// Encodes the reply of an operation's `result` into `dst`.
    fn render(&self, result: &OpResult, render: &Render, dst: &mut BytesMut) {
        match render {
            Render::Redirect {
                head_only,
                keep_alive,
                query,
            } => self.render_redirect(result, *head_only, *keep_alive, query.as_deref(), dst),
            Render::Api {
                view,
                head_only,
                keep_alive,
            } => self.render_api(result, view, *head_only, *keep_alive, dst),
            &Render::Shortened { bare } => {
                let reply_bytes;
                let reply = match result {
                    OpResult::Stored(key) => {
                        let mut code = [0; MAX_CODE_LEN];
                        let public = self.shared.settings.public_url.as_str();
                        let code = self.shared.codec.code(*key, &mut code);
                        let mut s = String::with_capacity(public.len() + code.len());
                        s.push_str(public);
                        s.push_str(code);
                        reply_bytes = s;
                        if bare {
                            Reply::Bare(reply_bytes.as_bytes())
                        } else {
                            Reply::Shortened(reply_bytes.as_bytes())
                        }
                    }
                    OpResult::Failed(code, message) => error(*code, message),
                    _ => error(ErrorCode::INTERNAL, "unexpected store reply"),
                };
                encode(&reply, dst);
            }
            Render::Resolved => {
                let reply = match result {
                    OpResult::Url(url) => Reply::Resolved(&url[..]),
                    OpResult::NotFound => {
                        error(ErrorCode::NOT_FOUND, "no URL is stored under this code")
                    }
                    OpResult::Failed(code, message) => error(*code, message),
                    OpResult::Stored(_) => error(ErrorCode::INTERNAL, "unexpected store reply"),
                };
                encode(&reply, dst);
            }
        }
    }

    fn render_api(
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
            (OpResult::Url(url), ApiView::Link { code }) => Ok((
                200,
                LinkView::plain(code, public, &String::from_utf8_lossy(url)),
            )),
            (OpResult::NotFound, _) => Err(Problem::new(404, "no link has this code")),
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

    fn render_redirect(
        &self,
        result: &OpResult,
        head_only: bool,
        keep_alive: bool,
        query: Option<&str>,
        dst: &mut BytesMut,
    ) {
        let date = &self.date;
        let respond = |dst: &mut BytesMut, status, headers: &[(&str, &str)], body: &str| {
            http::write(
                dst,
                date,
                &Response {
                    status,
                    headers,
                    body: body.as_bytes(),
                    head_only,
                    keep_alive,
                },
            )
        };
        match result {
            OpResult::Url(url) => {
                let url = String::from_utf8_lossy(url);
                // `query` is only there when forwarding is on (a link's own
                // option will decide it here once links carry options).
                let settings = &self.shared.settings;
                let url = forward::merge(
                    &url,
                    query,
                    true,
                    settings.forward_query_clash,
                    settings.max_url_bytes,
                );
                let location = http::location(&url);
                respond(
                    dst,
                    self.shared.settings.redirect_status,
                    &[("Location", &location)],
                    "",
                );
            }
            OpResult::NotFound => respond(dst, 404, &[], "no URL is stored under this code\n"),
            OpResult::Failed(code, message) => {
                let status = if code.0 == 503 { 503 } else { 500 };
                respond(dst, status, &[], &format!("{message}\n"))
            }
            OpResult::Stored(_) => respond(dst, 500, &[], "unexpected store reply\n"),
        }
    }

    /// Settles `wait` if it can be: used by [`Output::release`]. An
    /// operation past its deadline is abandoned and answered 503.
    pub fn settle(&mut self, wait: &Wait, dst: &mut BytesMut, now: Instant) -> Released {
        let (op, render, deadline) = match wait {
            Wait::Until(at) => {
                return if now >= *at {
                    Released::Done
                } else {
                    Released::Pending
                }
            }
            Wait::Op {
                op,
                render,
                deadline,
            } => (*op, render, *deadline),
        };
        let (proto, kind) = labels(render);
        let done = match self.ops.get(op as usize).map(|e| &e.state) {
            Some(OpState::Done(_)) => match self.ops.remove(op as usize).state {
                OpState::Done(result) => result,
                _ => return Released::Pending,
            },
            Some(OpState::Waiting) if now >= deadline => {
                if let Some(entry) = self.ops.get_mut(op as usize) {
                    entry.state = OpState::Abandoned;
                }
                let message = match render {
                    Render::Shortened { .. }
                    | Render::Api {
                        view: ApiView::Created { .. },
                        ..
                    } => {
                        "the log did not confirm the URL within --commit-timeout; it may still \
                         have been stored: retry"
                    }
                    _ => "the store did not answer within --store-timeout",
                };
                OpResult::Failed(ErrorCode::OVERLOADED, message.into())
            }
            Some(_) => return Released::Pending,
            None => OpResult::Failed(ErrorCode::INTERNAL, "lost operation".into()),
        };
        let status = match &done {
            OpResult::Url(_) | OpResult::Stored(_) => 0,
            OpResult::NotFound => 404,
            OpResult::Failed(code, _) => code.0,
        };
        self.metrics().request(proto, kind, status);
        self.render(&done, render, dst);
        Released::Done
    }

    /// A connection going away stops waiting for `wait`.
    pub fn abandon(&mut self, wait: &Wait) {
        if let Wait::Op { op, .. } = wait {
            let op = *op;
            if let Some(entry) = self.ops.get_mut(op as usize) {
                if matches!(entry.state, OpState::Waiting) {
                    entry.state = OpState::Abandoned;
                } else {
                    self.ops.remove(op as usize);
                }
            }
        }
    }

    // ----- the HTTP fronts -----

    /// Handles every complete HTTP request at the front of `input`.
    pub fn handle_http(
        &mut self,
        conn: u32,
        front: Front,
        input: &[u8],
        out: &mut Output,
        now: Instant,
    ) -> InputOutcome {
        let cap = self.shared.settings.max_output_bytes;
        let mut outcome = InputOutcome::default();
        loop {
            let rest = input.get(outcome.consumed..).unwrap_or_default();
            if rest.is_empty() || out.committed_bytes() >= cap {
                return outcome;
            }
            let shared = self.shared.clone();
            match http::parse(rest, &shared.settings) {
                Head::Complete { len, request } => {
                    // A body (API routes only, bounded by `--api-max-body`
                    // in `parse`) must be in whole before the request runs.
                    let Some(body) = rest.get(len..len + request.body_len) else {
                        outcome.mid_frame = true;
                        outcome.in_body = true;
                        return outcome;
                    };
                    outcome.consumed += len + request.body_len;
                    self.http_request(conn, front, &request, body, out, now);
                    if !request.keep_alive {
                        outcome.close = true;
                        return outcome;
                    }
                }
                Head::Partial => {
                    outcome.mid_frame = true;
                    return outcome;
                }
                Head::Refused { status, body } => {
                    self.metrics().request(Proto::Http, Op::Other, status);
                    let date = self.date.clone();
                    out.push_with(|dst| {
                        http::write(
                            dst,
                            &date,
                            &Response {
                                status,
                                headers: &[],
                                body: body.as_bytes(),
                                head_only: false,
                                keep_alive: false,
                            },
                        )
                    });
                    outcome.close = true;
                    return outcome;
                }
            }
        }
    }

    fn http_request(
        &mut self,
        conn: u32,
        front: Front,
        request: &http::Request<'_>,
        body: &[u8],
        out: &mut Output,
        now: Instant,
    ) {
        let head_only = request.method == Method::Head;
        let keep_alive = request.keep_alive;
        let date = self.date.clone();
        let respond = |out: &mut Output, status: u16, headers: &[(&str, &str)], body: &[u8]| {
            out.push_with(|dst| {
                http::write(
                    dst,
                    &date,
                    &Response {
                        status,
                        headers,
                        body,
                        head_only,
                        keep_alive,
                    },
                )
            })
        };
        let shared = self.shared.clone();
        let route = http::route(&shared.settings, front, request.path);
        if let Route::Api(_) = route {
            return self.api_request(conn, request, body, out, now);
        }
        if !matches!(request.method, Method::Get | Method::Head) {
            self.metrics().request(Proto::Http, Op::Other, 405);
            return respond(out, 405, &[("Allow", "GET, HEAD")], b"only GET and HEAD\n");
        }
        if let Route::Code(_) = route {
            if let Err(limited) = self.limit_http(request, Action::Redirect, None, now) {
                self.metrics().request(Proto::Http, Op::Redirect, 429);
                let headers = limited.headers();
                let headers: Vec<(&str, &str)> =
                    headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
                let body = format!("{}\n", limited.message());
                return respond(out, 429, &headers, body.as_bytes());
            }
        }
        match route {
            Route::Code(code) => self.resolve(
                conn,
                code.as_bytes(),
                out,
                now,
                Render::Redirect {
                    head_only,
                    keep_alive,
                    query: request
                        .query
                        .filter(|q| shared.settings.forward_query && !q.is_empty())
                        .map(Box::from),
                },
                Proto::Http,
            ),
            // The public front's health check is readiness (a load
            // balancer should stop sending new links to a server that
            // cannot take them; redirects still work there); the admin
            // listener's is liveness.
            Route::Health if front == Front::Admin => {
                self.metrics().request(Proto::Http, Op::Health, 200);
                respond(out, 200, &[], b"alive\n")
            }
            Route::Health | Route::Ready => match shared.health.problem() {
                Some((core, state)) => {
                    self.metrics().request(Proto::Http, Op::Health, 503);
                    let body = format!("not ready: core {core}: {}\n", state.reason());
                    respond(out, 503, &[], body.as_bytes())
                }
                None => {
                    self.metrics().request(Proto::Http, Op::Health, 200);
                    respond(out, 200, &[], b"ok\n")
                }
            },
            Route::Metrics => {
                self.metrics().request(Proto::Http, Op::Health, 200);
                let text = shared
                    .admin
                    .get()
                    .map(|a| a.metrics_text())
                    .unwrap_or_default();
                respond(
                    out,
                    200,
                    &[(
                        "Content-Type",
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    text.as_bytes(),
                )
            }
            Route::NotFound | Route::Api(_) => {
                self.metrics().request(Proto::Http, Op::Other, 404);
                respond(out, 404, &[], b"not found\n")
            }
        }
    }

    /// A JSON API request ([`crate::api`]): checked, authorised, then run
    /// through the operations SHORTEN and RESOLVE use.
    fn api_request(
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
            // The caller's key id is the link's owner once links record
            // one (issue 19's operations take it as their Principal).
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
                self.shorten(conn, link.url.as_bytes(), render(view), out, now)
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

    // ----- the log -----

    /// The next log operation for the backend.
    pub fn poll_log_io(&mut self, now: Instant) -> Option<LogIo> {
        self.local.as_mut()?.log.poll_io(now)
    }

    /// `true` when the log has an operation to hand out now.
    pub fn log_has_work(&self) -> bool {
        self.local.as_ref().is_some_and(|l| l.log.has_work())
    }

    /// When the log next needs [`poll_log_io`](Self::poll_log_io) even
    /// without new records.
    pub fn log_timeout(&self) -> Option<Instant> {
        self.local.as_ref()?.log.poll_timeout()
    }

    /// Since when the log's batch in flight has been running.
    pub fn log_in_flight_since(&self) -> Option<Instant> {
        self.local.as_ref()?.log.in_flight_since()
    }

    /// Reports a log operation's outcome. Links of a durable batch enter the
    /// key directory (and this core's cache) before any waiting reply is
    /// released, so a code resolves exactly when its SHORTEN is
    /// acknowledged. Returns the segment sealed, if one was (for its hint
    /// file).
    pub fn log_done(
        &mut self,
        io: &LogIo,
        result: IoResult,
        now: Instant,
    ) -> Option<(SegmentRef, Seal)> {
        let local = self.local.as_mut()?;
        // Keys whose insert failed: the code already maps to another link
        // (taken between the SHORTEN's check and its durability). Their
        // records are durable, but the code does not resolve to their
        // URL, so they are never acknowledged.
        let mut taken = Vec::new();
        if let (LogIo::Write(batch), IoResult::Ok) = (io, &result) {
            let mut records = 0;
            for (link, offset) in batch.links() {
                let location = Location {
                    file: batch.segment.idx,
                    // Segments are bounded far below 4 GiB.
                    offset: u32::try_from(offset).unwrap_or(u32::MAX),
                };
                // Not cached here: caching every new link costs more than
                // the one log read a link's first click costs; reads fill
                // the cache.
                if !local.keydir.insert(link.key, location) {
                    taken.push(link.key);
                }
                records += 1;
            }
            if records > 0 {
                self.shared.metrics[self.core]
                    .batch_records
                    .observe(f64::from(records));
            }
        }
        if let IoResult::Fatal(reason) = &result {
            tracing::error!(core = self.core, "the log failed: {reason}");
        }
        let settled = local.log.io_done(result, now);
        self.shared
            .health
            .set(self.core, log_health(local.log.state()));
        for token in settled.durable {
            let op = token as OpId;
            let key = self.ops.get(op as usize).map_or(0, |e| e.key);
            if taken.contains(&key) {
                tracing::error!(
                    core = self.core,
                    "a new link's code was taken while its record was being written; the \
                     SHORTEN fails"
                );
                self.complete(
                    op,
                    OpResult::Failed(
                        ErrorCode::INTERNAL,
                        Cow::Borrowed("the link's code is already taken"),
                    ),
                );
                continue;
            }
            self.complete(op, OpResult::Stored(key));
        }
        if let Some(failure) = settled.failure {
            let code = match failure {
                crate::log::LogFailure::Broken => ErrorCode::INTERNAL,
                _ => ErrorCode::OVERLOADED,
            };
            for token in settled.failed {
                self.complete(
                    token as OpId,
                    OpResult::Failed(code, Cow::Borrowed(failure.message())),
                );
            }
        }
        settled.sealed
    }

    /// `Some(reason)` once the log has failed for good (the process must
    /// stop).
    pub fn log_broken(&self) -> Option<&str> {
        match self.local.as_ref()?.log.state() {
            LogState::Broken(reason) => Some(reason),
            _ => None,
        }
    }

    /// Marks this core's log as stalled (or recovered from a stall) in the
    /// process-wide health.
    pub fn set_stalled(&self, stalled: bool) {
        let Some(local) = self.local.as_ref() else {
            return;
        };
        let state = if stalled {
            StorageHealth::Stalled
        } else {
            log_health(local.log.state())
        };
        self.shared.health.set(self.core, state);
    }

    /// Begins a clean stop of the log (seal the current segment).
    pub fn begin_shutdown(&mut self) {
        if let Some(local) = self.local.as_mut() {
            local.log.begin_shutdown();
        }
    }

    /// `true` once the log has nothing left to do at a clean stop.
    pub fn is_shut_down(&self) -> bool {
        self.local.as_ref().is_none_or(|l| l.log.is_shut_down())
    }

    // ----- URL reads -----

    /// The next URL read for the backend.
    pub fn poll_read(&mut self) -> Option<UrlRead> {
        self.reads.pop_front()
    }

    /// `true` when reads wait to be issued.
    pub fn has_reads(&self) -> bool {
        !self.reads.is_empty()
    }

    /// Reports a URL read: `bytes` from the record's offset (possibly fewer
    /// than asked, at the end of the file).
    pub fn read_done(&mut self, read: UrlRead, result: io::Result<Bytes>) {
        self.metrics().url_read();
        let settle = |shard: &mut Self, result: OpResult| {
            let others = shard.reading.remove(&read.key).unwrap_or_default();
            for op in others {
                shard.complete(op, result.clone());
            }
            shard.complete(read.op, result);
        };
        let bytes = match result {
            Ok(bytes) => bytes,
            Err(err) => {
                tracing::error!(
                    file = read.file,
                    offset = read.offset,
                    "reading a URL failed: {err}"
                );
                // Every request that joined this read fails with it, and
                // the key is no longer being read: the next RESOLVE tries
                // again.
                return settle(
                    self,
                    OpResult::Failed(ErrorCode::INTERNAL, "the URL could not be read".into()),
                );
            }
        };
        match decode_record(&bytes) {
            Decoded::Record(Record::Link(link), _) if link.key == read.key => {
                let url = bytes.slice_ref(link.url);
                self.cache.insert(read.key, link.url);
                settle(self, OpResult::Url(url));
            }
            Decoded::Incomplete if read.len == URL_READ_LEN && bytes.len() == URL_READ_LEN => {
                // A longer record: read it whole.
                let body = u32::from_le_bytes(bytes[..4].try_into().unwrap_or_default()) as usize;
                self.reads.push_back(UrlRead {
                    len: RECORD_HEADER_LEN + body,
                    ..read
                });
            }
            other => {
                tracing::error!(
                    file = read.file,
                    offset = read.offset,
                    key = read.key,
                    "a stored link is damaged ({}); run `verify`",
                    match other {
                        Decoded::Record(..) => "it holds another key",
                        other => other.reason(),
                    }
                );
                settle(
                    self,
                    OpResult::Failed(ErrorCode::INTERNAL, "the stored URL is damaged".into()),
                );
            }
        }
    }

    // ----- the remote store -----

    /// The next request for the remote store.
    pub fn poll_remote(&mut self) -> Option<RemoteRequest> {
        self.remote.pop_front()
    }

    /// `true` when requests wait for the remote store.
    pub fn has_remote(&self) -> bool {
        !self.remote.is_empty()
    }

    /// Reports a remote store answer.
    pub fn remote_done(&mut self, op: OpId, result: OpResult) {
        let key = self.ops.get(op as usize).map(|e| e.key);
        match (&result, key) {
            (OpResult::Url(url), Some(key)) => self.cache.insert(key, url),
            (OpResult::Stored(key), _) => {
                // The new link is likely clicked soon; the URL is not at
                // hand here, so nothing is cached.
                let _ = key;
            }
            _ => {}
        }
        self.complete(op, result);
    }

    /// Cache hits and misses, and its use.
    pub fn cache_usage(&self) -> (usize, u64) {
        self.cache.usage()
    }
}

/// What a log's state means for the core's health.
fn log_health(state: &LogState) -> StorageHealth {
    match state {
        LogState::Available => StorageHealth::Ok,
        LogState::DiskFull => StorageHealth::DiskFull,
        LogState::Broken(_) => StorageHealth::Broken,
    }
}

/// The metric labels of a reply rendered as `render`.
fn labels(render: &Render) -> (Proto, Op) {
    match render {
        Render::Shortened { .. } => (Proto::Framed, Op::Shorten),
        Render::Resolved => (Proto::Framed, Op::Resolve),
        Render::Redirect { .. } => (Proto::Http, Op::Redirect),
        Render::Api { .. } => (Proto::Http, Op::Api),
    }
}

/// Writes `problem` as an `application/problem+json` response.
fn write_problem(
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

fn encode<B: AsRef<[u8]>>(reply: &Reply<B>, dst: &mut BytesMut) {
    crate::output::encode_reply(reply, dst);
}

/// A valid `Date` until the runtime sets the real one.
fn httpdate_fallback() -> String {
    "Thu, 01 Jan 1970 00:00:00 GMT".to_owned()
}

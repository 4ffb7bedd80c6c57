//! What the core needs to know of the configuration: limits, timeouts and
//! the public base URL, as plain values. The runtime crate parses them from
//! the command line, the environment and the config file, and checks them.

use std::time::Duration;

use url::Url;

use crate::log::LogConfig;

/// Default `--max-url-bytes`.
pub const DEFAULT_MAX_URL_BYTES: usize = 8192;

/// Frame payload bytes allowed on top of `--max-url-bytes`: the opcode of a
/// SHORTEN, with room to spare for future fields.
pub const FRAME_OVERHEAD: usize = 64;

/// Default `--max-output-bytes`: reply bytes one connection may have queued
/// but not yet sent before it stops reading (Redis's
/// `client-output-buffer-limit` plays the same part).
pub const DEFAULT_MAX_OUTPUT_BYTES: usize = 256 * 1024;

/// Default `--linger-bytes`: after answering a request it refuses
/// (HTTP 414, 431, 400, 408; framed ERROR 413, 408), the server reads and
/// discards at most this much more before it closes (lingering close).
pub const DEFAULT_LINGER_BYTES: usize = 1 << 20;

/// Default `--linger-timeout`: how long a lingering close waits for
/// the peer to close.
pub const DEFAULT_LINGER_TIMEOUT: Duration = Duration::from_secs(5);

/// The most headers `--http-max-headers` may allow (the parser's header
/// array lives on the stack).
pub const MAX_HEADERS_CAP: usize = 128;

/// Default `--api-max-body`: the largest JSON API request body (a bulk
/// creation of 100 links of about 600 bytes each fits).
pub const DEFAULT_API_MAX_BODY: usize = 64 * 1024;

/// Everything request handling and connections are configured with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Base of the short URLs handed out; ends with `/`.
    pub public_url: Url,
    /// HTTP redirect status: 301, 302, 307 or 308.
    pub redirect_status: u16,
    /// Forward a visitor's query into the redirect's URL
    /// ([`crate::forward`]).
    pub forward_query: bool,
    /// Whose value stays when the visitor's query and the URL's name the
    /// same parameter.
    pub forward_query_clash: crate::forward::Clash,
    /// Longest URL accepted by SHORTEN.
    pub max_url_bytes: usize,
    /// Largest HTTP request head accepted.
    pub http_max_head_bytes: usize,
    /// Most headers in an HTTP request.
    pub http_max_headers: usize,
    /// Close a connection that sends nothing (and waits for nothing) this
    /// long.
    pub idle_timeout: Duration,
    /// A frame must complete this soon after its first byte.
    pub frame_timeout: Duration,
    /// An HTTP request head must complete this soon after its first byte.
    pub http_header_timeout: Duration,
    /// Largest JSON API request body (`Content-Length`); larger get 413.
    pub api_max_body: usize,
    /// Once its head is in, an API request's body must arrive within this
    /// time (on top of `http_header_timeout`), or 408 and a close.
    pub api_body_timeout: Duration,
    /// `--auth required`: every write (and every JSON API call) needs a
    /// valid key, on both fronts; `false` (`optional`): a caller without a
    /// key may do everything.
    pub auth_required: bool,
    /// Accept URLs with user information (`user:pass@host`).
    pub allow_userinfo: bool,
    /// Refuse (400) URLs on this server's own host, under `public_url`:
    /// set when `--public-url` was given explicitly ([`crate::url`] says
    /// why not otherwise).
    pub refuse_self_links: bool,
    /// Proxies whose `X-Forwarded-For` / `Forwarded` name the client
    /// (`--trusted-proxies`).
    pub trusted_proxies: Vec<crate::limits::Cidr>,
    /// The one header trusted proxies name the client in
    /// (`--client-ip-header`).
    pub client_ip_header: crate::limits::ClientIpHeader,
    /// Bytes a lingering close discards at most before it closes.
    pub linger_bytes: usize,
    /// How long a lingering close waits at most for the peer to close.
    pub linger_timeout: Duration,
    /// A connection whose replies make no progress this long (the peer does
    /// not read) is closed.
    pub write_timeout: Duration,
    /// Artificial work per request (the seed's demo): its reply is held
    /// this long after the request arrived.
    pub delay: Duration,
    /// A SHORTEN not durable this soon after it arrived is answered 503.
    pub commit_timeout: Duration,
    /// A store operation (a URL read, a remote store round trip) not
    /// finished this soon is answered 503.
    pub store_timeout: Duration,
    /// Reply bytes a connection may queue before it stops reading.
    pub max_output_bytes: usize,
    /// Bytes of URLs each core's cache may hold.
    pub cache_bytes_per_core: usize,
    /// The log writer's settings.
    pub log: LogConfig,
    /// How long a deleted alias cannot be claimed again (`--alias-quarantine`):
    /// delete-then-reclaim is a known phishing trick.
    pub alias_quarantine: Duration,
    /// `--ui`: serve the web page and QR codes on the public front.
    pub ui: bool,
    /// Count clicks (`--stats`; `off` disables counting).
    pub stats: bool,
    /// With a remote store (`--store-cache-ttl`): how long a core may serve
    /// a link from its cache, which bounds how long another node's update
    /// or delete takes to be seen here. Zero: nothing is cached.
    pub remote_cache_ttl: Duration,
}

/// `--store-cache-ttl`'s default: one second.
pub const DEFAULT_REMOTE_CACHE_TTL: Duration = Duration::from_secs(1);

/// `--alias-quarantine`'s default: 30 days.
pub const DEFAULT_ALIAS_QUARANTINE: Duration = Duration::from_secs(30 * 86_400);

impl Settings {
    /// The largest frame payload accepted.
    pub fn max_frame_len(&self) -> usize {
        self.max_url_bytes.saturating_add(FRAME_OVERHEAD)
    }

    /// Settings for tests and examples: the defaults of the command line,
    /// with `public_url`.
    pub fn for_tests(public_url: &str) -> Self {
        Self {
            public_url: Url::parse(public_url).unwrap_or_else(|_| {
                Url::parse("http://127.0.0.1:5000/").unwrap_or_else(|_| unreachable!())
            }),
            redirect_status: 302,
            forward_query: true,
            forward_query_clash: crate::forward::Clash::KeepTarget,
            max_url_bytes: DEFAULT_MAX_URL_BYTES,
            http_max_head_bytes: 8192,
            http_max_headers: 32,
            idle_timeout: Duration::from_secs(60),
            frame_timeout: Duration::from_secs(10),
            http_header_timeout: Duration::from_secs(10),
            api_max_body: DEFAULT_API_MAX_BODY,
            api_body_timeout: Duration::from_secs(10),
            auth_required: false,
            allow_userinfo: false,
            refuse_self_links: false,
            trusted_proxies: Vec::new(),
            client_ip_header: crate::limits::ClientIpHeader::XForwardedFor,
            linger_bytes: DEFAULT_LINGER_BYTES,
            linger_timeout: DEFAULT_LINGER_TIMEOUT,
            write_timeout: Duration::from_secs(30),
            delay: Duration::ZERO,
            commit_timeout: Duration::from_secs(5),
            store_timeout: Duration::from_secs(2),
            max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
            cache_bytes_per_core: 1 << 20,
            log: LogConfig {
                segment_bytes: 64 << 20,
                sync: crate::log::SyncPolicy::Always,
                retry_interval: Duration::from_secs(1),
                max_pending_bytes: 64 << 20,
            },
            alias_quarantine: DEFAULT_ALIAS_QUARANTINE,
            ui: true,
            stats: true,
            remote_cache_ttl: DEFAULT_REMOTE_CACHE_TTL,
        }
    }
}

//! The command line both server binaries share, the TOML config file, and
//! the checks that refuse nonsense before anything starts.
//!
//! Every flag of the server can also come from the environment
//! (`SHORTY_LISTEN`, ...) and from the config file (`--config PATH` or
//! `SHORTY_CONFIG`; keys are the long flag names: `listen =
//! "127.0.0.1:9000"`, `public-url = "..."`). Precedence: command line >
//! environment > file > built-in defaults. The file's values are installed
//! as clap's defaults before parsing, which gives exactly that order; an
//! unknown key is an error naming the key and the file. `dist/shorty.toml`
//! documents every key.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use shorty_service::forward::Clash;
use shorty_service::limits::{Cidr, LimitSettings, Rate, DEFAULT_MAX_CLIENTS};
use shorty_service::log::record::MAX_URL_IN_RECORD;
use shorty_service::log::{LogConfig, SyncPolicy};
use shorty_service::settings::{
    Settings, DEFAULT_API_MAX_BODY, DEFAULT_LINGER_BYTES, FRAME_OVERHEAD, MAX_HEADERS_CAP,
};
use url::Url;

/// Smallest `--segment-bytes`.
pub const MIN_SEGMENT_BYTES: u64 = 64 * 1024;
/// Largest `--segment-bytes`: record offsets are 32-bit in the key
/// directory and hint files, and a segment may overshoot by one batch.
pub const MAX_SEGMENT_BYTES: u64 = 1 << 30;
/// Most bytes of records one core may have waiting for a batch.
pub const MAX_PENDING_LOG_BYTES: usize = 64 << 20;

/// Shorty: a thread-per-core URL shortener over TCP.
#[derive(Debug, Clone, Parser)]
#[command(
    version,
    args_conflicts_with_subcommands = true,
    about = "Shorty: a thread-per-core URL shortener over TCP.",
    long_about = "Shorty: a thread-per-core URL shortener over TCP.\n\n\
        Clients send frames (a 4-byte little-endian length, then the payload): a bare long URL \
        (the original Shorty protocol) or a typed message (see protocol/PROTOCOL.md). Every \
        acknowledged URL is in the durable log under --data-dir before the reply is sent.\n\n\
        Every flag can also be set in the environment (SHORTY_...) or in a TOML file \
        (--config); the command line wins over the environment, which wins over the file."
)]
pub struct Cli {
    /// An offline tool instead of the server.
    #[command(subcommand)]
    pub command: Option<Tool>,
    /// The server's flags.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// The offline tools.
#[derive(Debug, Clone, Subcommand)]
pub enum Tool {
    /// Check a data directory's log (every record's checksum, every hint)
    /// without changing it, and say what a restart would do. Exit 0 when
    /// clean, 1 when a restart would cut or refuse.
    Verify {
        /// The data directory.
        #[arg(long, env = "SHORTY_DATA_DIR", default_value = "./shorty-data")]
        data_dir: PathBuf,
    },
    /// Write every link as JSON lines `{"code":"...","url":"..."}` to FILE
    /// (or standard output). Works on a running server's directory: it
    /// includes every link durable when each segment is read.
    Export {
        /// The data directory.
        #[arg(long, env = "SHORTY_DATA_DIR", default_value = "./shorty-data")]
        data_dir: PathBuf,
        /// Export from a Redis store instead (`redis://HOST:PORT,...`).
        #[arg(long, env = "SHORTY_STORE", value_parser = parse_store)]
        store: Option<StoreSpec>,
        /// Where to write; standard output when absent or `-`.
        file: Option<PathBuf>,
    },
    /// Load links from JSON lines (as `export` writes them), keeping their
    /// codes. A code that already maps to another URL is refused and
    /// counted. The server must not be running on the directory.
    Import {
        /// The data directory.
        #[arg(long, env = "SHORTY_DATA_DIR", default_value = "./shorty-data")]
        data_dir: PathBuf,
        /// Import into a Redis store instead (`redis://HOST:PORT,...`): the
        /// way from one machine's log to a cluster.
        #[arg(long, env = "SHORTY_STORE", value_parser = parse_store)]
        store: Option<StoreSpec>,
        /// The server's public base URL, as it is run with (`--public-url`):
        /// a URL or expired-URL under it is refused, as that server refuses
        /// it (a link to itself is a redirect loop). Without it, nothing is
        /// refused for where it points.
        #[arg(long, env = "SHORTY_PUBLIC_URL", value_parser = parse_public_url)]
        public_url: Option<Url>,
        /// The JSON lines; standard input when `-`.
        file: PathBuf,
    },
    /// Merge (compact) the log of a stopped server: rewrite every sealed
    /// segment whose dead share is above the threshold, then remove it. A
    /// running server does the same by itself (--merge-interval, SIGUSR1).
    Merge {
        /// The data directory.
        #[arg(long, env = "SHORTY_DATA_DIR", default_value = "./shorty-data")]
        data_dir: PathBuf,
        /// As the server's flag.
        #[arg(long, env = "SHORTY_MERGE_THRESHOLD", default_value = "50%", value_parser = parse_share)]
        merge_threshold: f64,
        /// As the server's flag.
        #[arg(long, env = "SHORTY_MERGE_RATE", default_value_t = 32 << 20, value_parser = clap::value_parser!(u64).range(1..))]
        merge_rate: u64,
        /// As the server's flag (the same environment variable): an
        /// alias's tombstone is forgotten once it is over, as the server's
        /// own merges do.
        #[arg(long, env = "SHORTY_ALIAS_QUARANTINE", default_value = "30d", value_parser = parse_duration)]
        alias_quarantine: Duration,
    },
    // ----- statistics (issue 20) -----
    /// Print one link's click statistics as JSON (totals, series, top
    /// referrers) from the data directory's store. The server must not be
    /// running on the directory.
    Stats {
        /// The data directory.
        #[arg(long, env = "SHORTY_DATA_DIR", default_value = "./shorty-data")]
        data_dir: PathBuf,
        /// Start of the series (Unix ms; default: 48 hours ago).
        #[arg(long)]
        from: Option<u64>,
        /// End of the series (Unix ms, exclusive; default: now).
        #[arg(long)]
        to: Option<u64>,
        /// `hour` or `day`.
        #[arg(long, value_enum, default_value = "hour")]
        granularity: StatsGranularity,
        /// The short code (or the whole short URL).
        code: String,
    },
    /// Manage API keys (stored hashed in DATA_DIR/keys.json, or in the
    /// Redis store with --store redis://...; running servers apply changes
    /// within seconds).
    Keys {
        /// The data directory.
        #[arg(long, env = "SHORTY_DATA_DIR", default_value = "./shorty-data")]
        data_dir: PathBuf,
        /// Keep the keys in a Redis store instead (`redis://HOST:PORT,...`),
        /// shared by every node serving it.
        #[arg(long, env = "SHORTY_STORE", value_parser = parse_store)]
        store: Option<StoreSpec>,
        /// What to do.
        #[command(subcommand)]
        action: KeysAction,
    },
    // ----- engineer KEYS (issue 21) -----
    /// Disable every link to blocked destinations (rules as in a
    /// --blocklist file), through the running server: a new version of
    /// each, as an API PATCH {"disabled": true} makes. Prints their codes.
    DisableDestination(DisableArgs),
}

/// `disable-destination`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct DisableArgs {
    /// The data directory whose links are read (a running server's is
    /// fine).
    #[arg(long, env = "SHORTY_DATA_DIR", default_value = "./shorty-data")]
    pub data_dir: PathBuf,
    /// Read the links from a Redis store instead (`redis://HOST:PORT,...`).
    #[arg(long, env = "SHORTY_STORE", value_parser = parse_store)]
    pub store: Option<StoreSpec>,
    /// The running server's framed-protocol address, which disables each
    /// link (an UPDATE, as the API's PATCH).
    #[arg(long, default_value = "127.0.0.1:9000")]
    pub server: String,
    /// An API key with the links:all scope (needed under --auth required).
    #[arg(long, env = "SHORTY_API_KEY")]
    pub api_key: Option<String>,
    /// Also every rule of this blocklist file.
    #[arg(long)]
    pub blocklist: Option<PathBuf>,
    /// Blocklist rules: `evil.example` (it and every name under it),
    /// `.evil.example` (only the names under it), an IP address.
    pub rules: Vec<String>,
}

/// `stats --granularity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatsGranularity {
    /// Hourly buckets.
    Hour,
    /// Daily (UTC) buckets.
    Day,
}

/// `keys ...`.
#[derive(Debug, Clone, Subcommand)]
pub enum KeysAction {
    /// Make a key and print it (only this once).
    Create {
        /// A name for it, unique.
        #[arg(long)]
        name: String,
        /// Comma-separated: links:write, links:all, links:read, stats:read.
        #[arg(long)]
        scopes: String,
        /// It stops working after this long (`90d`).
        #[arg(long, value_parser = parse_duration)]
        expires: Option<Duration>,
        /// Its own limit on new links (`N/s`, `N/min`, `N/h`), instead of
        /// --rate-create-key and --rate-create for requests made with it
        /// (lower for a trial key, higher for a trusted service).
        #[arg(long)]
        rate_create: Option<String>,
    },
    /// List the keys (never the keys themselves).
    List,
    /// Revoke a key by name.
    Revoke {
        /// Its name.
        name: String,
    },
}

/// Where `--http` and `--admin` listen, if anywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaybeAddr(pub Option<SocketAddr>);

fn parse_maybe_addr(text: &str) -> Result<MaybeAddr, String> {
    if text.eq_ignore_ascii_case("off") {
        return Ok(MaybeAddr(None));
    }
    text.parse()
        .map(|addr| MaybeAddr(Some(addr)))
        .map_err(|e| format!("expected ADDRESS:PORT or `off`: {e}"))
}

/// The log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `--sync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Sync {
    /// Acknowledge only after the record is fdatasync'ed (group commit).
    Always,
    /// Do not sync before acknowledging; FOR BENCHMARKS ONLY.
    Never,
}

/// `--forward-query-clash`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ForwardQueryClash {
    /// The URL's own value stays.
    KeepTarget,
    /// The visitor's value replaces the URL's.
    VisitorWins,
}

/// The server's flags.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// A TOML file of settings (keys are the long flag names).
    #[arg(long, env = "SHORTY_CONFIG")]
    pub config: Option<PathBuf>,

    /// Address for the framed protocol.
    #[arg(long, env = "SHORTY_LISTEN", default_value = "127.0.0.1:9000")]
    pub listen: SocketAddr,

    /// Address of the HTTP front that redirects short URLs, or `off`.
    #[arg(long, env = "SHORTY_HTTP", default_value = "127.0.0.1:5000", value_parser = parse_maybe_addr)]
    pub http: MaybeAddr,

    /// Address of the operators' HTTP listener (/metrics, /healthz,
    /// /readyz), or `off`. Never exposed on the public front.
    #[arg(long, env = "SHORTY_ADMIN", default_value = "127.0.0.1:9100", value_parser = parse_maybe_addr)]
    pub admin: MaybeAddr,

    /// Base of the short URLs handed out: a code is appended to it. Must be
    /// an http or https URL; a missing trailing `/` is added [default:
    /// `http://` + the --http address].
    #[arg(long, env = "SHORTY_PUBLIC_URL", value_parser = parse_public_url)]
    pub public_url: Option<Url>,

    /// Status of HTTP redirects: 301, 302, 307 or 308. 301 and 308 are cached
    /// by browsers for good.
    #[arg(long, env = "SHORTY_REDIRECT_STATUS", default_value_t = 302, value_parser = parse_redirect_status)]
    pub redirect_status: u16,

    /// Forward a visitor's query into the redirect: `GET /CODE?utm_source=x`
    /// goes to the link's URL with `utm_source=x` appended (a name the URL
    /// already has keeps the URL's value; its fragment stays). `false` to
    /// redirect to the URL as stored.
    #[arg(long, env = "SHORTY_FORWARD_QUERY", default_value_t = true, action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true", value_parser = clap::value_parser!(bool))]
    pub forward_query: bool,

    /// When the visitor's query and the URL's own name the same parameter:
    /// `keep-target` keeps the URL's value (the visitor's is dropped),
    /// `visitor-wins` puts the visitor's value in its place.
    #[arg(
        long,
        env = "SHORTY_FORWARD_QUERY_CLASH",
        default_value = "keep-target"
    )]
    pub forward_query_clash: ForwardQueryClash,

    /// Largest HTTP request head (request line and headers) accepted, in
    /// bytes; larger ones get 431 and a close.
    #[arg(long, env = "SHORTY_HTTP_MAX_HEAD_BYTES", default_value_t = 8192, value_parser = clap::value_parser!(u32).range(256..=1_048_576))]
    pub http_max_head_bytes: u32,

    /// Most headers in an HTTP request (1 to 128); more get 431 and a close.
    #[arg(long, env = "SHORTY_HTTP_MAX_HEADERS", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=MAX_HEADERS_CAP as i64))]
    pub http_max_headers: u32,

    /// Once an HTTP request has begun, its whole head must arrive within
    /// this time, or the server answers 408 and closes (slowloris defence).
    #[arg(long, env = "SHORTY_HTTP_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub http_header_timeout: Duration,

    /// After refusing a request (HTTP 414, 431, 400, 408; on the framed
    /// protocol, ERROR 413 or 408 before a close) the server answers,
    /// shuts its sending side, and reads and discards at most this many
    /// more bytes before closing, so the client reads the answer instead of
    /// a connection reset (lingering close).
    #[arg(long, env = "SHORTY_LINGER_BYTES", default_value_t = DEFAULT_LINGER_BYTES as u32, value_parser = clap::value_parser!(u32).range(1..=1_073_741_824))]
    pub linger_bytes: u32,

    /// How long such a lingering close waits at most for the client to
    /// close.
    #[arg(long, env = "SHORTY_LINGER_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub linger_timeout: Duration,

    /// Directory of the durable log and the code key (created if missing).
    #[arg(long, env = "SHORTY_DATA_DIR", default_value = "./shorty-data")]
    pub data_dir: PathBuf,

    /// Worker threads, one per core, each with its own listener
    /// [default: the number of available cores].
    #[arg(long, env = "SHORTY_THREADS")]
    pub threads: Option<NonZeroUsize>,

    /// Artificial work per request, e.g. `1s` or `250ms` (the original
    /// Shorty demo slept 1 s per request): replies to the requests read
    /// together from a connection are held this long. A timer: it never
    /// blocks a core. Applies to the framed protocol, not to HTTP.
    #[arg(long, env = "SHORTY_DELAY", default_value = "0s", value_parser = humantime::parse_duration)]
    pub delay: Duration,

    /// Most simultaneous client connections served, all threads together.
    /// Beyond it new clients wait for a slot (up to --queue-timeout), as
    /// with the original server's `Pool(100)`.
    #[arg(long, env = "SHORTY_MAX_CONNECTIONS", default_value_t = 16_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// Most simultaneous connections from one client address (an IPv6
    /// address counts by its /64), all threads together; beyond it the
    /// client is answered 503 at once, so one peer cannot take every
    /// --max-connections slot. 0: no limit (the default, as behind a
    /// reverse proxy every client has the proxy's address). Set it on a
    /// server that faces the internet itself, e.g. to 256.
    #[arg(long, env = "SHORTY_MAX_CONNECTIONS_PER_IP", default_value_t = 0)]
    pub max_connections_per_ip: u32,

    /// Accept a connection only once its first bytes arrive, holding it in
    /// the kernel until then for about this long (`TCP_DEFER_ACCEPT`, as
    /// nginx's `listen ... deferred`, which also waits 1 s); after that it
    /// is accepted anyway and --idle-timeout applies. The client speaks
    /// first on both protocols, so its request is there when the core
    /// takes the connection (one wake-up instead of two), and a connection
    /// that says nothing holds no slot meanwhile (up to the listen backlog
    /// of them: beyond it the kernel's SYN cookies accept at once). At
    /// shutdown such a connection is dropped silently; its client sees a
    /// reset when it sends. Whole seconds, rounded up. 0s: accept at once.
    #[arg(long, env = "SHORTY_DEFER_ACCEPT", default_value = "1s", value_parser = humantime::parse_duration)]
    pub defer_accept: Duration,

    /// How long a client beyond --max-connections waits for a slot before
    /// it is answered 503 (OVERLOADED) and closed.
    #[arg(long, env = "SHORTY_QUEUE_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub queue_timeout: Duration,

    /// Longest URL accepted by SHORTEN, in bytes. The largest frame accepted
    /// is this plus 64 bytes.
    #[arg(long, env = "SHORTY_MAX_URL_BYTES", default_value_t = 8192, value_parser = clap::value_parser!(u32).range(16..=MAX_URL_IN_RECORD as i64))]
    pub max_url_bytes: u32,

    /// Reply bytes one connection may have queued but not sent; past it the
    /// connection stops reading until the peer reads (back-pressure).
    #[arg(long, env = "SHORTY_MAX_OUTPUT_BYTES", default_value_t = 256 * 1024, value_parser = clap::value_parser!(u32).range(4096..))]
    pub max_output_bytes: u32,

    // ----- engineer LIFE (issue 19) -----
    /// How long a deleted alias cannot be claimed again (delete-then-reclaim
    /// is a phishing trick). A deleted generated code is never reused.
    #[arg(long, env = "SHORTY_ALIAS_QUARANTINE", default_value = "30d", value_parser = parse_duration)]
    pub alias_quarantine: Duration,

    // ----- engineer REDIS (issue 19, Redis store) -----
    /// With a Redis store: how long a core may serve a link from its cache
    /// before asking the store again, so an update or delete made through
    /// another node is seen here within this time (0: no cache).
    #[arg(long, env = "SHORTY_STORE_CACHE_TTL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub store_cache_ttl: Duration,

    /// Close a connection that sends nothing (and waits for nothing) for
    /// this long.
    #[arg(long, env = "SHORTY_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// Once a frame's first byte has arrived, the whole frame must arrive
    /// within this time, or the connection is closed (slowloris defence).
    #[arg(long, env = "SHORTY_FRAME_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub frame_timeout: Duration,

    /// Close a connection whose peer does not read its replies for this
    /// long.
    #[arg(long, env = "SHORTY_WRITE_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub write_timeout: Duration,

    /// A SHORTEN whose record is not durable this soon (a hung disk) is
    /// answered 503; the connection goes on.
    #[arg(long, env = "SHORTY_COMMIT_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub commit_timeout: Duration,

    /// A URL read from the log, or a request to a remote store, that takes
    /// longer than this is answered 503.
    #[arg(long, env = "SHORTY_STORE_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub store_timeout: Duration,

    /// Bytes of hot URLs kept in memory, all cores together, so popular
    /// links cost no disk read (0 disables the cache).
    #[arg(long, env = "SHORTY_CACHE_BYTES", default_value_t = 64 << 20)]
    pub cache_bytes: u64,

    /// Where links live: `local` (this server's log in --data-dir) or
    /// `redis://[:PASSWORD@]HOST:PORT[,HOST:PORT...]`: seed nodes of a Redis
    /// Cluster (7.0+) or one Redis, shared by every Shorty node.
    #[arg(long, env = "SHORTY_STORE", default_value = "local", value_parser = parse_store)]
    pub store: StoreSpec,

    /// With a Redis store: replicas that must confirm a new link (WAIT)
    /// before it is acknowledged. The server refuses to start when no
    /// primary has that many (use 0 for a single Redis without replicas).
    #[arg(long, env = "SHORTY_STORE_REPLICAS", default_value_t = 1)]
    pub store_replicas: u32,

    /// With a Redis Cluster store: read links from replicas too (spreads
    /// reads; a code a replica does not have yet is asked of its primary).
    #[arg(long, env = "SHORTY_STORE_READ_REPLICAS")]
    pub store_read_replicas: bool,

    /// `always`: acknowledge a SHORTEN only after its record is fdatasync'ed
    /// (group commit). `never`: do not sync; FOR BENCHMARKS ONLY, a crash
    /// can lose acknowledged URLs.
    #[arg(long, env = "SHORTY_SYNC", value_enum, default_value = "always")]
    pub sync: Sync,

    /// On SIGTERM/SIGINT, how long in-flight requests may take to finish
    /// before the server exits anyway.
    #[arg(long, env = "SHORTY_SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Duration,

    /// Size at which a log segment is sealed and a new one started (64 KiB
    /// to 1 GiB).
    #[arg(long, env = "SHORTY_SEGMENT_BYTES", default_value_t = 64 << 20, value_parser = clap::value_parser!(u64).range(MIN_SEGMENT_BYTES..=MAX_SEGMENT_BYTES))]
    pub segment_bytes: u64,

    /// Log level (error, warn, info, debug, trace, off) or a tracing filter
    /// (`info,shorty_runtime=debug`). `RUST_LOG`, when set, takes
    /// precedence.
    #[arg(long, env = "SHORTY_LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// `text` or `json` (one object per line).
    #[arg(long, env = "SHORTY_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    // --- Merge (engineer MERGE's block) ---
    /// Merge (compact) a sealed log segment once this share of its bytes is
    /// dead (superseded, deleted or expired records): `50%` or `0.5`.
    /// `0%` merges any segment with a dead byte.
    #[arg(long, env = "SHORTY_MERGE_THRESHOLD", default_value = "50%", value_parser = parse_share)]
    pub merge_threshold: f64,

    /// The merge's disk I/O budget, bytes read plus written per second, so
    /// compaction never starves the serving cores' reads and syncs.
    #[arg(long, env = "SHORTY_MERGE_RATE", default_value_t = 32 << 20, value_parser = clap::value_parser!(u64).range(1..))]
    pub merge_rate: u64,

    /// How often the merge thread looks for segments worth merging (`0s`:
    /// never by itself; SIGUSR1 still starts a check at once).
    #[arg(long, env = "SHORTY_MERGE_INTERVAL", default_value = "10m", value_parser = humantime::parse_duration)]
    pub merge_interval: Duration,

    /// The merge thread's nice value (0-19): on a core the serving threads
    /// keep busy, the merge takes what they leave (at 19, about 1.5 % of a
    /// CPU the serving thread wants) instead of half of it. Above 0 its disk
    /// I/O is also in the idle class (served when no other request waits).
    #[arg(long, env = "SHORTY_MERGE_NICE", default_value_t = crate::merge::DEFAULT_NICE, value_parser = clap::value_parser!(i32).range(0..=19))]
    pub merge_nice: i32,

    // --- issue 22 (the web page): engineer PAGE's block ---
    /// Serve the web page (`/`, `/static/...`) and QR codes
    /// (`/api/v1/links/CODE/qr.svg`) on the public front: `on` or `off`.
    #[arg(long, env = "SHORTY_UI", default_value = "on", action = clap::ArgAction::Set, value_parser = parse_on_off)]
    pub ui: bool,

    // ----- statistics (issue 20) -----
    /// Click statistics: `on` counts every GET redirect per link (human or
    /// bot, hour, referring host) and stores them under --data-dir (or in
    /// the Redis store); `off` counts nothing.
    #[arg(long, env = "SHORTY_STATS", value_enum, default_value = "on")]
    pub stats: OnOff,

    /// How often each core hands its click counts to the stats writer (10ms
    /// to 60s): a crash loses at most this much of the counts.
    #[arg(long, env = "SHORTY_STATS_FLUSH", default_value = "1s", value_parser = parse_stats_flush)]
    pub stats_flush: Duration,

    // ----- The JSON API, keys and limits (issue 21) -----
    /// Largest JSON API request body (`Content-Length`), in bytes; larger
    /// ones get 413 and a close. Bodies are taken on /api/ routes only.
    #[arg(long, env = "SHORTY_API_MAX_BODY", default_value_t = DEFAULT_API_MAX_BODY as u32, value_parser = clap::value_parser!(u32).range(256..=16_777_216))]
    pub api_max_body: u32,

    /// Once an API request's head is in, its body must arrive within this
    /// time, or the server answers 408 and closes.
    #[arg(long, env = "SHORTY_API_BODY_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub api_body_timeout: Duration,

    /// `required`: every write (and every JSON API call but the OpenAPI
    /// document) needs an API key, on both fronts; `optional`: callers
    /// without a key may do everything. Default: `required` when any
    /// listener binds a non-loopback address, `optional` on loopback only
    /// (the seed's client keeps working with no key). Redirects and
    /// RESOLVE never need a key.
    #[arg(long, env = "SHORTY_AUTH", value_enum)]
    pub auth: Option<AuthPolicy>,

    /// New links (SHORTEN, API creations) each client address may make:
    /// `N/s`, `N/min`, `N/h` (in bursts of up to N), or `off`. IPv6
    /// clients count per /64.
    #[arg(long, env = "SHORTY_RATE_CREATE", default_value = "60/min", value_parser = parse_rate)]
    pub rate_create: RateArg,

    /// New links each API key may make (`off`: no per-key limit).
    #[arg(long, env = "SHORTY_RATE_CREATE_KEY", default_value = "600/min", value_parser = parse_rate)]
    pub rate_create_key: RateArg,

    /// Redirects each client address may follow.
    #[arg(long, env = "SHORTY_RATE_REDIRECT", default_value = "6000/min", value_parser = parse_rate)]
    pub rate_redirect: RateArg,

    /// Client entries each rate limiter keeps at most (the coldest are
    /// forgotten first): the bound on the limiters' memory under an
    /// address spray, about 110 bytes an entry.
    #[arg(long, env = "SHORTY_RATE_MAX_CLIENTS", default_value_t = DEFAULT_MAX_CLIENTS as u32, value_parser = clap::value_parser!(u32).range(1..=100_000_000))]
    pub rate_max_clients: u32,

    /// Limit loopback clients too (by default local tools and benchmarks
    /// are never limited).
    #[arg(long, env = "SHORTY_RATE_LIMIT_LOOPBACK", default_value_t = false, action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true", value_parser = clap::value_parser!(bool))]
    pub rate_limit_loopback: bool,

    /// Destinations refused (403 naming the rule): one domain a line
    /// (`example.com` blocks it and every name under it, `.example.com`
    /// only the names under it), `#` comments. Re-read on SIGHUP.
    #[arg(long, env = "SHORTY_BLOCKLIST")]
    pub blocklist: Option<PathBuf>,

    /// Accept URLs carrying a user name or password (`user:pass@host`);
    /// refused by default (credentials leak through redirects, and
    /// `https://bank.com@evil.example/` is a phishing staple).
    #[arg(long, env = "SHORTY_ALLOW_USERINFO", default_value_t = false, action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true", value_parser = clap::value_parser!(bool))]
    pub allow_userinfo: bool,

    /// Proxies (comma-separated addresses or CIDR blocks, or `none`) whose
    /// `X-Forwarded-For` / `Forwarded` headers name the client that rate
    /// limits count; from any other peer these headers are ignored.
    #[arg(long, env = "SHORTY_TRUSTED_PROXIES", default_value = "none", value_parser = parse_cidrs)]
    pub trusted_proxies: Cidrs,

    /// The one header (`x-forwarded-for` or `forwarded`) in which the
    /// trusted proxies name the client; the other is ignored, so a client
    /// cannot choose its own address through a header the proxy does not
    /// set.
    #[arg(long, env = "SHORTY_CLIENT_IP_HEADER", default_value = "x-forwarded-for",
          value_parser = shorty_service::limits::ClientIpHeader::parse)]
    pub client_ip_header: shorty_service::limits::ClientIpHeader,

    // ----- issue 23 (per core, at the floor): engineer FLOOR's block -----
    /// shorty-uring only: set each core's ring up with io_uring
    /// `DEFER_TASKRUN` (Linux 6.1), driven through an eventfd
    /// (vendor/PATCHES.md, tokio-uring patch 2): `on` or `off`. Off by
    /// default: measured not better than without it (issue 23). A kernel
    /// that refuses it gets a ring without it. shorty-glommio ignores it.
    #[arg(long, env = "SHORTY_URING_DEFER_TASKRUN", default_value = "off", action = clap::ArgAction::Set, value_parser = parse_on_off)]
    pub uring_defer_taskrun: bool,

    /// shorty-uring only: receive on each connection with one multishot
    /// io_uring receive (Linux 6.0) instead of a receive per read
    /// (vendor/PATCHES.md, tokio-uring patch 3): `on` or `off`. On by
    /// default: measured one ring operation fewer per keep-alive request
    /// and not costlier (issue 23). A kernel that refuses it gets a receive
    /// per read. shorty-glommio ignores it.
    #[arg(long, env = "SHORTY_URING_MULTISHOT_RECV", default_value = "on", action = clap::ArgAction::Set, value_parser = parse_on_off)]
    pub uring_multishot_recv: bool,

    /// shorty-uring only: accept on each listener with one multishot io_uring
    /// accept (Linux 5.19) instead of an accept per connection: `on` or
    /// `off`. On by default: measured one ring operation fewer per
    /// connection and ~10 % less CPU per connection-per-request redirect
    /// (issue 23). A kernel that refuses it gets an accept per connection.
    /// shorty-glommio ignores it.
    #[arg(long, env = "SHORTY_URING_MULTISHOT_ACCEPT", default_value = "on", action = clap::ArgAction::Set, value_parser = parse_on_off)]
    pub uring_multishot_accept: bool,

    /// shorty-glommio only: accept on each listener with one multishot
    /// io_uring accept (Linux 5.19; vendored glommio patch 5) instead of an
    /// `accept4` system call per connection: `on` or `off`. A kernel that
    /// refuses it gets an `accept4` per connection. shorty-uring ignores it.
    #[arg(long, env = "SHORTY_GLOMMIO_MULTISHOT_ACCEPT", default_value = "on", action = clap::ArgAction::Set, value_parser = parse_on_off)]
    pub glommio_multishot_accept: bool,
}

/// `on`/`off` (and `true`/`false`) for switches such as `--ui`.
fn parse_on_off(text: &str) -> Result<bool, String> {
    match text {
        "on" | "true" => Ok(true),
        "off" | "false" => Ok(false),
        _ => Err("must be `on` or `off`".into()),
    }
}

/// `--stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnOff {
    /// Enabled.
    On,
    /// Disabled.
    Off,
}

/// Longest `--stats-flush`: a core's pending counts then span at most two
/// hours (see `shorty_service::stats::Pending`).
pub const MAX_STATS_FLUSH: Duration = Duration::from_secs(60);

fn parse_stats_flush(text: &str) -> Result<Duration, String> {
    let d = parse_duration(text)?;
    if d < Duration::from_millis(10) || d > MAX_STATS_FLUSH {
        return Err("must be from 10ms to 60s".into());
    }
    Ok(d)
}

/// `--trusted-proxies`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cidrs(pub Vec<Cidr>);

fn parse_cidrs(text: &str) -> Result<Cidrs, String> {
    if text.trim().eq_ignore_ascii_case("none") {
        return Ok(Cidrs(Vec::new()));
    }
    text.split(',')
        .map(Cidr::parse)
        .collect::<Result<_, _>>()
        .map(Cidrs)
}

/// A `--rate-...` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateArg(pub Option<Rate>);

fn parse_rate(text: &str) -> Result<RateArg, String> {
    Rate::parse(text).map(RateArg)
}

/// `--auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthPolicy {
    /// Writes need a valid key.
    Required,
    /// Callers without a key may do everything; a key presented must
    /// still be valid.
    Optional,
}

impl ServeArgs {
    /// The rate limits' settings.
    pub fn limit_settings(&self) -> LimitSettings {
        LimitSettings {
            create_per_client: self.rate_create.0,
            create_per_key: self.rate_create_key.0,
            redirect_per_client: self.rate_redirect.0,
            max_clients: self.rate_max_clients as usize,
            loopback: self.rate_limit_loopback,
        }
    }

    /// `true` when writes need a key: `--auth`, or by default whenever a
    /// listener binds a non-loopback address.
    pub fn auth_required(&self) -> bool {
        match self.auth {
            Some(policy) => policy == AuthPolicy::Required,
            None => [Some(self.listen), self.http.0, self.admin.0]
                .into_iter()
                .flatten()
                .any(|a| !a.ip().is_loopback()),
        }
    }
}

/// `--store`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSpec {
    /// This server's own log.
    Local,
    /// A Redis Cluster (or one Redis).
    Redis(RedisSpec),
}

fn parse_store(text: &str) -> Result<StoreSpec, String> {
    if text == "local" {
        return Ok(StoreSpec::Local);
    }
    parse_spec(text).map(StoreSpec::Redis)
}

/// Where `--store` points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSpec {
    /// Seed nodes, as `redis://[:password@]host:port` URLs.
    pub nodes: Vec<String>,
}

/// Parses `redis://[:PASSWORD@]HOST:PORT[,HOST:PORT...]`.
///
/// # Errors
/// A message saying what is expected.
pub fn parse_spec(text: &str) -> Result<RedisSpec, String> {
    let rest = text
        .strip_prefix("redis://")
        .ok_or("expected `local` or redis://[:PASSWORD@]HOST:PORT[,HOST:PORT...]")?;
    let (credentials, hosts) = match rest.rsplit_once('@') {
        Some((creds, hosts)) => (Some(creds), hosts),
        None => (None, rest),
    };
    let nodes: Vec<String> = hosts
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(|host| match credentials {
            Some(c) => format!("redis://{c}@{host}"),
            None => format!("redis://{host}"),
        })
        .collect();
    if nodes.is_empty() {
        return Err("no HOST:PORT given".into());
    }
    for node in &nodes {
        redis::Client::open(node.as_str()).map_err(|e| format!("{node}: {e}"))?;
    }
    Ok(RedisSpec { nodes })
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if d.is_zero() {
        return Err("must be more than 0".into());
    }
    Ok(d)
}

/// A share, as `50%` or `0.5`, from 0 to 1 (`--merge-threshold`).
fn parse_share(text: &str) -> Result<f64, String> {
    let (number, scale) = match text.strip_suffix('%') {
        Some(p) => (p, 100.0),
        None => (text, 1.0),
    };
    let share = number
        .trim()
        .parse::<f64>()
        .map_err(|e| format!("expected a share such as 50% or 0.5: {e}"))?
        / scale;
    if (0.0..1.0).contains(&share) {
        Ok(share)
    } else {
        Err("must be at least 0% and below 100%".into())
    }
}

fn parse_redirect_status(text: &str) -> Result<u16, String> {
    match text.parse() {
        Ok(status @ (301 | 302 | 307 | 308)) => Ok(status),
        _ => Err("must be 301, 302, 307 or 308".into()),
    }
}

fn parse_public_url(text: &str) -> Result<Url, String> {
    let mut url = Url::parse(text).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err("must be an http:// or https:// URL with a host".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must not have a query or fragment".into());
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

/// A filter directive is a level, or a target-level list; a bare word that
/// is not a level (`loud`) would silently select a target named `loud` and
/// turn logging off, so it is refused.
pub fn check_log_filter(filter: &str) -> Result<(), String> {
    const LEVELS: [&str; 6] = ["error", "warn", "info", "debug", "trace", "off"];
    for directive in filter.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let level = directive.rsplit('=').next().unwrap_or(directive);
        let bare = !directive.contains('=');
        if bare
            && !LEVELS.contains(&directive.to_ascii_lowercase().as_str())
            && !directive.contains("::")
        {
            return Err(format!(
                "`{directive}` is not a log level (error, warn, info, debug, trace, off) \
                 or a TARGET=LEVEL directive"
            ));
        }
        if !bare && !LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
            return Err(format!("`{level}` in `{directive}` is not a log level"));
        }
    }
    tracing_subscriber::EnvFilter::try_new(filter)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

impl ServeArgs {
    /// Worker threads to run.
    pub fn threads(&self) -> usize {
        self.threads
            .map(NonZeroUsize::get)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, NonZeroUsize::get))
    }

    /// Checks what flags cannot check alone.
    ///
    /// # Errors
    /// A message naming the flag and what is wrong.
    pub fn check(&self) -> Result<(), String> {
        check_log_filter(&self.log_level).map_err(|e| format!("--log-level: {e}"))?;
        if let Ok(filter) = std::env::var("RUST_LOG") {
            check_log_filter(&filter).map_err(|e| format!("RUST_LOG: {e}"))?;
        }
        if self.public_url.is_none() {
            match self.http.0 {
                None => {
                    return Err("--http is off: set --public-url to the base of the short \
                                URLs (some other front must serve them)"
                        .into())
                }
                Some(addr) if addr.ip().is_unspecified() => {
                    return Err(format!(
                        "--http listens on every address ({addr}): set --public-url to the \
                         base clients should use"
                    ))
                }
                Some(_) => {}
            }
        }
        let fixed = [Some(self.listen), self.http.0, self.admin.0];
        let fixed: Vec<SocketAddr> = fixed
            .into_iter()
            .flatten()
            .filter(|a| a.port() != 0)
            .collect();
        if fixed
            .iter()
            .enumerate()
            .any(|(i, a)| fixed[i + 1..].contains(a))
        {
            return Err("--listen, --http and --admin must be different addresses".into());
        }
        Ok(())
    }

    /// The public base URL: `--public-url`, or `http://` + the address the
    /// HTTP front actually listens on.
    pub fn public_url(&self, http_bound: Option<SocketAddr>) -> Url {
        if let Some(url) = &self.public_url {
            return url.clone();
        }
        let addr = http_bound.or(self.http.0).unwrap_or(self.listen);
        Url::parse(&format!("http://{addr}/")).unwrap_or_else(|_| {
            Url::parse("http://127.0.0.1:5000/").unwrap_or_else(|_| unreachable!())
        })
    }

    /// The core's settings, with the public base URL resolved.
    pub fn settings(&self, public_url: Url) -> Settings {
        let threads = self.threads() as u64;
        Settings {
            public_url,
            redirect_status: self.redirect_status,
            forward_query: self.forward_query,
            forward_query_clash: match self.forward_query_clash {
                ForwardQueryClash::KeepTarget => Clash::KeepTarget,
                ForwardQueryClash::VisitorWins => Clash::VisitorWins,
            },
            max_url_bytes: self.max_url_bytes as usize,
            http_max_head_bytes: self.http_max_head_bytes as usize,
            http_max_headers: self.http_max_headers as usize,
            idle_timeout: self.idle_timeout,
            frame_timeout: self.frame_timeout,
            http_header_timeout: self.http_header_timeout,
            api_max_body: self.api_max_body as usize,
            api_body_timeout: self.api_body_timeout,
            auth_required: self.auth_required(),
            allow_userinfo: self.allow_userinfo,
            // ----- engineer KEYS (issue 21) -----
            refuse_self_links: self.public_url.is_some(),
            trusted_proxies: self.trusted_proxies.0.clone(),
            client_ip_header: self.client_ip_header,
            linger_bytes: self.linger_bytes as usize,
            linger_timeout: self.linger_timeout,
            write_timeout: self.write_timeout,
            delay: self.delay,
            commit_timeout: self.commit_timeout,
            store_timeout: self.store_timeout,
            max_output_bytes: (self.max_output_bytes as usize)
                .max(self.max_url_bytes as usize + FRAME_OVERHEAD),
            cache_bytes_per_core: (self.cache_bytes / threads.max(1)) as usize,
            log: LogConfig {
                segment_bytes: self.segment_bytes,
                sync: match self.sync {
                    Sync::Always => SyncPolicy::Always,
                    Sync::Never => SyncPolicy::Never,
                },
                retry_interval: Duration::from_secs(1),
                max_pending_bytes: MAX_PENDING_LOG_BYTES,
            },
            // ----- engineer LIFE (issue 19) -----
            alias_quarantine: self.alias_quarantine,
            ui: self.ui,
            // ----- engineer STATS (issue 20) -----
            stats: self.stats == OnOff::On,
            // ----- engineer REDIS (issue 19, Redis store) -----
            remote_cache_ttl: self.store_cache_ttl,
        }
    }
}

/// Finds `--config PATH` (or `--config=PATH`, or `SHORTY_CONFIG`) before
/// clap parses anything, since the file provides clap's defaults.
fn config_path(args: &[OsString]) -> Option<PathBuf> {
    let mut iter = args.iter().skip(1);
    while let Some(arg) = iter.next() {
        let arg = arg.to_string_lossy();
        if arg == "--" {
            break;
        }
        if arg == "--config" {
            return iter.next().map(PathBuf::from);
        }
        if let Some(path) = arg.strip_prefix("--config=") {
            return Some(PathBuf::from(path));
        }
    }
    std::env::var_os("SHORTY_CONFIG").map(PathBuf::from)
}

fn toml_value(value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Installs the file's values as the command's defaults.
fn apply_file(mut command: clap::Command, path: &Path) -> Result<clap::Command, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("config file {}: {e}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e| format!("config file {}: {e}", path.display()))?;
    for (key, value) in table {
        let known = command
            .get_arguments()
            .any(|a| a.get_long() == Some(key.as_str()) && key != "config");
        if !known {
            return Err(format!(
                "config file {}: unknown key `{key}` (keys are the long flag names; see \
                 --help)",
                path.display()
            ));
        }
        let value = toml_value(&value).ok_or_else(|| {
            format!(
                "config file {}: `{key}` must be a string, number or boolean",
                path.display()
            )
        })?;
        let id = command
            .get_arguments()
            .find(|a| a.get_long() == Some(key.as_str()))
            .map(|a| a.get_id().clone())
            .ok_or_else(|| format!("config file {}: unknown key `{key}`", path.display()))?;
        command = command.mut_arg(id, |arg| arg.default_value(value));
    }
    Ok(command)
}

/// Parses the command line (with the config file and environment) of the
/// binary `name`.
///
/// # Errors
/// A config file problem, as a message; clap's own errors exit the
/// process the way clap does (with `--help` and `--version` output).
pub fn parse(name: &'static str, args: Vec<OsString>) -> Result<Cli, String> {
    let mut command = Cli::command().name(name).bin_name(name);
    if let Some(path) = config_path(&args) {
        command = apply_file(command, &path)?;
    }
    let matches = command
        .try_get_matches_from(args)
        .unwrap_or_else(|e| e.exit());
    Cli::from_arg_matches(&matches).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Result<Cli, String> {
        let args: Vec<OsString> = std::iter::once("shorty-test")
            .chain(args.iter().copied())
            .map(OsString::from)
            .collect();
        let command = Cli::command().name("shorty-test");
        let command = match config_path(&args) {
            Some(path) => apply_file(command, &path)?,
            None => command,
        };
        let matches = command
            .try_get_matches_from(args)
            .map_err(|e| e.to_string())?;
        Cli::from_arg_matches(&matches).map_err(|e| e.to_string())
    }

    #[test]
    fn specs_parse() {
        let spec = parse_spec("redis://127.0.0.1:7000,127.0.0.1:7001").unwrap();
        assert_eq!(
            spec.nodes,
            ["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"]
        );
        let spec = parse_spec("redis://:s3cret@10.0.0.1:6379,10.0.0.2:6379").unwrap();
        assert_eq!(
            spec.nodes,
            [
                "redis://:s3cret@10.0.0.1:6379",
                "redis://:s3cret@10.0.0.2:6379"
            ]
        );
        assert!(parse_spec("http://x").is_err());
        assert!(parse_spec("redis://").is_err());
    }

    #[test]
    fn a_store_cache_ttl_of_0_means_no_cache() {
        for zero in ["0", "0s", "0ms"] {
            let c = cli(&["--store-cache-ttl", zero]).unwrap().serve;
            assert_eq!(c.store_cache_ttl, Duration::ZERO, "{zero}");
        }
        let c = cli(&["--store-cache-ttl", "250ms"]).unwrap().serve;
        assert_eq!(c.store_cache_ttl, Duration::from_millis(250));
        assert!(cli(&["--store-cache-ttl", "soon"]).is_err());
    }

    #[test]
    fn defaults() {
        let c = cli(&[]).unwrap().serve;
        assert_eq!(c.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(c.public_url(None).as_str(), "http://127.0.0.1:5000/");
        assert_eq!(c.admin, MaybeAddr(Some("127.0.0.1:9100".parse().unwrap())));
        assert_eq!(c.sync, Sync::Always);
        assert!(c.check().is_ok());
        let s = c.settings(c.public_url(None));
        assert_eq!(s.max_frame_len(), 8192 + 64);
        assert_eq!(s.max_output_bytes, 256 * 1024);
    }

    #[test]
    fn the_public_url_follows_the_http_front() {
        let c = cli(&["--http", "127.0.0.1:8080"]).unwrap().serve;
        assert_eq!(c.public_url(None).as_str(), "http://127.0.0.1:8080/");
        assert_eq!(
            c.public_url(Some("127.0.0.1:43210".parse().unwrap()))
                .as_str(),
            "http://127.0.0.1:43210/",
            "port 0 resolves to the bound port"
        );
        let c = cli(&["--http", "off"]).unwrap().serve;
        assert!(c.check().unwrap_err().contains("--public-url"));
        let c = cli(&["--http", "0.0.0.0:80"]).unwrap().serve;
        assert!(c.check().unwrap_err().contains("every address"));
        let c = cli(&["--http", "off", "--public-url", "https://s.example/x"])
            .unwrap()
            .serve;
        assert!(c.check().is_ok());
        assert_eq!(c.public_url(None).as_str(), "https://s.example/x/");
    }

    #[test]
    fn nonsense_is_refused() {
        for args in [
            &["--max-connections", "0"][..],
            &["--max-url-bytes", "0"],
            &["--max-url-bytes", "20000000"],
            &["--segment-bytes", "10"],
            &["--threads", "0"],
            &["--idle-timeout", "0s"],
            &["--redirect-status", "303"],
            &["--http-max-headers", "500"],
            &["--public-url", "ftp://x/"],
        ] {
            assert!(cli(args).is_err(), "{args:?} accepted");
        }
        let c = cli(&["--log-level", "loud"]).unwrap().serve;
        assert!(c.check().unwrap_err().contains("loud"));
        for ok in [
            "info",
            "debug",
            "info,shorty_runtime=debug",
            "warn,glommio=error",
            "off",
        ] {
            assert!(check_log_filter(ok).is_ok(), "{ok}");
        }
        assert!(check_log_filter("info,x=loud").is_err());
    }

    #[test]
    fn file_then_environment_then_command_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shorty.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:7000\"\nidle-timeout = \"5s\"\nmax-connections = 50\n",
        )
        .unwrap();
        let p = path.to_str().unwrap();
        let c = cli(&["--config", p]).unwrap().serve;
        assert_eq!(c.listen, "127.0.0.1:7000".parse().unwrap());
        assert_eq!(
            (c.idle_timeout, c.max_connections),
            (Duration::from_secs(5), 50)
        );
        let c = cli(&["--config", p, "--listen", "127.0.0.1:7001"])
            .unwrap()
            .serve;
        assert_eq!(
            c.listen,
            "127.0.0.1:7001".parse().unwrap(),
            "flag over file"
        );
        // (The environment layer is clap's own `env`, between the two; it
        // is exercised end to end by the runtime's config test.)
        std::fs::write(&path, "listen = \"127.0.0.1:7000\"\nlisten-on = 3\n").unwrap();
        let err = cli(&["--config", p]).unwrap_err();
        assert!(
            err.contains("listen-on") && err.contains("shorty.toml"),
            "{err}"
        );
        std::fs::write(&path, "max-connections = 0\n").unwrap();
        assert!(
            cli(&["--config", p]).is_err(),
            "file values are checked too"
        );
    }

    #[test]
    fn ui_is_on_unless_turned_off() {
        let ui = |args: &[&str]| {
            let c = cli(args).unwrap().serve;
            c.settings(c.public_url(None)).ui
        };
        assert!(ui(&[]));
        assert!(ui(&["--ui", "on"]));
        assert!(!ui(&["--ui", "off"]));
        assert!(!ui(&["--ui=off"]));
        assert!(cli(&["--ui", "maybe"]).is_err());
    }

    #[test]
    fn the_shipped_config_documents_every_flag_with_its_default() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../dist/shorty.toml");
        let text = std::fs::read_to_string(path).unwrap();
        let command = Cli::command();
        let flags: Vec<&str> = command
            .get_arguments()
            .filter_map(|a| a.get_long())
            .filter(|l| !["config", "help", "version"].contains(l))
            .collect();
        for flag in &flags {
            assert!(
                text.contains(&format!("# {flag} = ")),
                "{flag} is not in {path}"
            );
        }
        // Uncommented, the lines with concrete defaults are a valid file
        // that changes nothing.
        let uncommented: String = text
            .lines()
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| {
                let key = l.split(" = ").next().unwrap_or_default();
                flags.contains(&key) && !["threads", "public-url"].contains(&key)
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("all.toml");
        std::fs::write(&file, &uncommented).unwrap();
        let from_file = cli(&["--config", file.to_str().unwrap()]).unwrap().serve;
        let defaults = cli(&[]).unwrap().serve;
        assert_eq!(
            format!("{:?}", from_file.settings(from_file.public_url(None))),
            format!("{:?}", defaults.settings(defaults.public_url(None)))
        );
    }

    #[test]
    fn subcommands_parse() {
        let c = cli(&["verify", "--data-dir", "/d"]).unwrap();
        assert!(matches!(c.command, Some(Tool::Verify { .. })));
        let c = cli(&["export", "--data-dir", "/d", "out.jsonl"]).unwrap();
        assert!(matches!(
            c.command,
            Some(Tool::Export { file: Some(_), .. })
        ));
        let c = cli(&["import", "--data-dir", "/d", "-"]).unwrap();
        assert!(matches!(c.command, Some(Tool::Import { .. })));
    }

    #[test]
    fn help_documents_every_flag() {
        let help = Cli::command().render_long_help().to_string();
        for flag in [
            "--listen",
            "--http",
            "--admin",
            "--public-url",
            "--data-dir",
            "--threads",
            "--delay",
            "--max-connections",
            "--queue-timeout",
            "--max-url-bytes",
            "--max-output-bytes",
            "--idle-timeout",
            "--frame-timeout",
            "--write-timeout",
            "--commit-timeout",
            "--store-timeout",
            "--cache-bytes",
            "--sync",
            "--segment-bytes",
            "--log-level",
            "--log-format",
            "--config",
        ] {
            assert!(help.contains(flag), "{flag} missing from --help");
        }
        assert!(help.contains("FOR BENCHMARKS ONLY"));
        assert!(help.contains("SHORTY_LISTEN"));
    }

    #[test]
    fn query_forwarding_is_on_unless_turned_off() {
        let forward = |args: &[&str]| {
            let c = cli(args).unwrap().serve;
            c.settings(c.public_url(None)).forward_query
        };
        assert!(forward(&[]));
        assert!(forward(&["--forward-query"]));
        assert!(forward(&["--forward-query", "true"]));
        assert!(!forward(&["--forward-query", "false"]));
        assert!(!forward(&["--forward-query=false"]));
        assert!(cli(&["--forward-query", "maybe"]).is_err());
        let clash = |args: &[&str]| {
            let c = cli(args).unwrap().serve;
            c.settings(c.public_url(None)).forward_query_clash
        };
        assert_eq!(clash(&[]), Clash::KeepTarget);
        assert_eq!(
            clash(&["--forward-query-clash", "visitor-wins"]),
            Clash::VisitorWins
        );
        assert_eq!(
            clash(&["--forward-query-clash=keep-target"]),
            Clash::KeepTarget
        );
        assert!(cli(&["--forward-query-clash", "both"]).is_err());
        let s = {
            let c = cli(&["--linger-bytes", "4096", "--linger-timeout", "1s"])
                .unwrap()
                .serve;
            c.settings(c.public_url(None))
        };
        assert_eq!(
            (s.linger_bytes, s.linger_timeout),
            (4096, Duration::from_secs(1))
        );
        assert!(cli(&["--linger-bytes", "0"]).is_err());
    }
}

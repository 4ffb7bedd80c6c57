//! The command line shared by both servers, parsed with clap.
//!
//! Every flag can also come from the environment (`SHORTY_LISTEN`, ...);
//! a flag on the command line wins. `--help` lists them with defaults.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use url::Url;

use crate::log::{SyncPolicy, DEFAULT_SEGMENT_BYTES};

/// Default for `--max-url-bytes`.
pub const DEFAULT_MAX_URL_BYTES: usize = 8192;

/// Frame payload bytes allowed on top of `--max-url-bytes`: the opcode of a
/// SHORTEN, with room to spare for future fields.
pub const FRAME_OVERHEAD: usize = 64;

/// The configuration of a Shorty server.
#[derive(Debug, Clone, Parser)]
#[command(
    version,
    about = "Shorty: a thread-per-core URL shortener over TCP.",
    long_about = "Shorty: a thread-per-core URL shortener over TCP.\n\n\
        Clients send frames (a 4-byte little-endian length, then the payload): a bare long URL \
        (the original Shorty protocol) or a typed message (see protocol/PROTOCOL.md). Every \
        acknowledged URL is in the durable log under --data-dir before the reply is sent."
)]
pub struct Config {
    /// Address for the framed protocol.
    #[arg(long, env = "SHORTY_LISTEN", default_value = "127.0.0.1:9000")]
    pub listen: SocketAddr,

    /// Address of the HTTP front that redirects short URLs, or `off`.
    #[arg(long, env = "SHORTY_HTTP", default_value = "127.0.0.1:5000", value_parser = parse_http)]
    pub http: HttpListen,

    /// Status of HTTP redirects: 301, 302, 307 or 308. 301 and 308 are cached
    /// by browsers for good.
    #[arg(long, env = "SHORTY_REDIRECT_STATUS", default_value_t = 302, value_parser = parse_redirect_status)]
    pub redirect_status: u16,

    /// Largest HTTP request head (request line and headers) accepted, in
    /// bytes; larger ones get 431 and a close.
    #[arg(long, env = "SHORTY_HTTP_MAX_HEAD_BYTES", default_value_t = 8192)]
    pub http_max_head_bytes: usize,

    /// Most headers in an HTTP request (at most 128); more get 431 and a
    /// close.
    #[arg(long, env = "SHORTY_HTTP_MAX_HEADERS", default_value_t = 32, value_parser = parse_max_headers)]
    pub http_max_headers: usize,

    /// Once an HTTP request has begun, its whole head must arrive within
    /// this time, or the server answers 408 and closes (slowloris defence).
    #[arg(long, env = "SHORTY_HTTP_HEADER_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub http_header_timeout: Duration,

    /// Base of the short URLs handed out: a code is appended to it. Must be
    /// an http or https URL; a missing trailing `/` is added.
    #[arg(long, env = "SHORTY_PUBLIC_URL", default_value = "http://127.0.0.1:5000/", value_parser = parse_public_url)]
    pub public_url: Url,

    /// Directory of the durable log and the code key (created if missing).
    #[arg(long, env = "SHORTY_DATA_DIR", default_value = "./shorty-data")]
    pub data_dir: PathBuf,

    /// Worker threads, one per core, each with its own listener
    /// [default: the number of available cores].
    #[arg(long, env = "SHORTY_THREADS")]
    pub threads: Option<NonZeroUsize>,

    /// Artificial work before answering, e.g. `1s` or `250ms` (the original
    /// Shorty demo slept 1 s per request): the requests read together from
    /// a connection wait this long once, then are answered. A timer: it
    /// never blocks a core. Applies to the framed protocol, not to HTTP.
    #[arg(long, env = "SHORTY_DELAY", default_value = "0s", value_parser = humantime::parse_duration)]
    pub delay: Duration,

    /// Most simultaneous client connections served, all threads together.
    /// At the limit new clients wait, unserved, until a connection closes
    /// (each thread holds at most one accepted; the rest wait in the
    /// kernel's listen backlog), as the original server's `Pool(100)` did.
    #[arg(long, env = "SHORTY_MAX_CONNECTIONS", default_value_t = 16_000)]
    pub max_connections: usize,

    /// Longest URL accepted by SHORTEN, in bytes. The largest frame accepted
    /// is this plus 64 bytes.
    #[arg(long, env = "SHORTY_MAX_URL_BYTES", default_value_t = DEFAULT_MAX_URL_BYTES)]
    pub max_url_bytes: usize,

    /// Close a connection that sends nothing for this long.
    #[arg(long, env = "SHORTY_IDLE_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,

    /// Once a frame's first byte has arrived, the whole frame must arrive
    /// within this time, or the connection is closed (slowloris defence).
    #[arg(long, env = "SHORTY_FRAME_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub frame_timeout: Duration,

    /// `always`: acknowledge a SHORTEN only after its record is fdatasync'ed
    /// (group commit). `never`: do not sync; FOR BENCHMARKS ONLY, a crash
    /// can lose acknowledged URLs.
    #[arg(long, env = "SHORTY_SYNC", value_enum, default_value = "always")]
    pub sync: SyncPolicy,

    /// On SIGTERM/SIGINT, how long in-flight requests may take to finish
    /// before the server exits anyway.
    #[arg(long, env = "SHORTY_SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Duration,

    /// Size at which a log segment is closed and a new one started.
    #[arg(long, env = "SHORTY_SEGMENT_BYTES", default_value_t = DEFAULT_SEGMENT_BYTES)]
    pub segment_bytes: u64,

    /// Log level (error, warn, info, debug, trace) or a tracing filter.
    /// `RUST_LOG`, when set, takes precedence.
    #[arg(long, env = "SHORTY_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
}

impl Config {
    /// Worker threads to run.
    pub fn threads(&self) -> usize {
        self.threads
            .map(NonZeroUsize::get)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, NonZeroUsize::get))
    }

    /// The largest frame payload accepted.
    pub fn max_frame_len(&self) -> usize {
        self.max_url_bytes.saturating_add(FRAME_OVERHEAD)
    }
}

/// Where the HTTP front listens, if anywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpListen(pub Option<SocketAddr>);

fn parse_http(text: &str) -> Result<HttpListen, String> {
    if text.eq_ignore_ascii_case("off") {
        return Ok(HttpListen(None));
    }
    text.parse()
        .map(|addr| HttpListen(Some(addr)))
        .map_err(|e| format!("expected ADDRESS:PORT or `off`: {e}"))
}

fn parse_max_headers(text: &str) -> Result<usize, String> {
    match text.parse() {
        Ok(n @ 1..=crate::http::MAX_HEADERS_CAP) => Ok(n),
        _ => Err(format!("must be 1 to {}", crate::http::MAX_HEADERS_CAP)),
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

/// Installs the `tracing` subscriber: `RUST_LOG` if set, else `--log-level`.
pub fn init_logging(config: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // A second initialisation (tests) is harmless; ignore it.
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_seed() {
        let c = Config::try_parse_from(["shorty"]).unwrap();
        assert_eq!(c.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(c.public_url.as_str(), "http://127.0.0.1:5000/");
        assert_eq!(c.delay, Duration::ZERO);
        assert_eq!(c.sync, SyncPolicy::Always);
        assert_eq!(c.max_frame_len(), 8192 + 64);
        assert_eq!(c.http, HttpListen(Some("127.0.0.1:5000".parse().unwrap())));
        assert_eq!(c.redirect_status, 302);
        assert_eq!((c.http_max_head_bytes, c.http_max_headers), (8192, 32));
        assert!(c.threads() >= 1);
    }

    #[test]
    fn flags_parse() {
        let c = Config::try_parse_from([
            "shorty",
            "--delay",
            "250ms",
            "--sync",
            "never",
            "--public-url",
            "https://s.example/x",
            "--threads",
            "3",
            "--idle-timeout",
            "2s",
        ])
        .unwrap();
        assert_eq!(c.delay, Duration::from_millis(250));
        assert_eq!(c.sync, SyncPolicy::Never);
        assert_eq!(c.public_url.as_str(), "https://s.example/x/");
        assert_eq!(c.threads(), 3);
        assert_eq!(c.idle_timeout, Duration::from_secs(2));
        assert!(Config::try_parse_from(["shorty", "--public-url", "ftp://x/"]).is_err());
        assert!(Config::try_parse_from(["shorty", "--threads", "0"]).is_err());
        assert!(Config::try_parse_from(["shorty", "--delay", "soon"]).is_err());
        let c = Config::try_parse_from(["shorty", "--http", "off", "--redirect-status", "308"])
            .unwrap();
        assert_eq!((c.http, c.redirect_status), (HttpListen(None), 308));
        assert!(Config::try_parse_from(["shorty", "--redirect-status", "303"]).is_err());
        assert!(Config::try_parse_from(["shorty", "--http-max-headers", "500"]).is_err());
    }

    #[test]
    fn help_documents_every_flag_and_the_benchmark_only_sync_mode() {
        use clap::CommandFactory;
        let help = Config::command().render_long_help().to_string();
        for flag in [
            "--listen",
            "--public-url",
            "--data-dir",
            "--threads",
            "--delay",
            "--max-connections",
            "--max-url-bytes",
            "--idle-timeout",
            "--frame-timeout",
            "--sync",
            "--log-level",
        ] {
            assert!(help.contains(flag), "{flag} missing from --help");
        }
        assert!(help.contains("FOR BENCHMARKS ONLY"));
        assert!(help.contains("SHORTY_LISTEN"));
    }
}

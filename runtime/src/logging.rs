//! Logs: `tracing` to standard error, as text or one JSON object per line
//! (`--log-format`), filtered by `RUST_LOG` if set, else `--log-level`
//! (both checked at start: a typo is an error, not silence).

use crate::config::LogFormat;

/// Installs the subscriber. A second call (tests) is harmless.
pub fn init(level: &str, format: LogFormat) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

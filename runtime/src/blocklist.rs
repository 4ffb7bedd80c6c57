//! `--blocklist FILE`: read at start (a file that does not parse refuses
//! the start) and again on every `SIGHUP`, from a thread of its own; a
//! reload that fails keeps the rules in force and says why.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use shorty_service::abuse::Blocklist;
use shorty_service::shard::Shared;

/// Reads the blocklist at `path`.
///
/// # Errors
/// The file cannot be read, or a line is not a domain.
pub fn load(path: &Path) -> Result<Blocklist, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Blocklist::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Installs the blocklist at `path` in `shared`, and re-reads it on every
/// `SIGHUP`.
///
/// # Errors
/// As [`load`], or the signal handler cannot be installed.
pub fn start(path: &Path, shared: &Arc<Shared>) -> Result<(), String> {
    let list = load(path)?;
    tracing::info!(rules = list.len(), path = %path.display(), "blocklist loaded");
    shared.blocklist.install(list);
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP])
        .map_err(|e| format!("cannot handle SIGHUP: {e}"))?;
    let (path, shared): (PathBuf, _) = (path.to_owned(), shared.clone());
    std::thread::Builder::new()
        .name("shorty-blocklist".into())
        .spawn(move || {
            for _ in signals.forever() {
                match load(&path) {
                    Ok(list) => {
                        tracing::info!(rules = list.len(), "blocklist reloaded");
                        shared.blocklist.install(list);
                    }
                    Err(err) => {
                        tracing::error!("blocklist not reloaded, the old rules stay: {err}")
                    }
                }
            }
        })
        .map(|_| ())
        .map_err(|e| format!("cannot start the blocklist thread: {e}"))
}

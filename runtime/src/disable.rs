//! `disable-destination RULE...`: disables, in bulk, the links already made
//! to destinations an operator has since blocked (issue 21's abuse
//! controls; the blocklist only refuses new links).
//!
//! Rules are blocklist lines (`evil.example` is that host and every name
//! under it; `.evil.example` only the names under it), matched by the same
//! [`Blocklist`] the server uses, or the rules of a `--blocklist` file.
//! The links are read as `export` reads them (the data directory, which a
//! running server may hold, or the Redis store), and each match is
//! disabled **through the running server**, by the wire's UPDATE (what
//! the API's PATCH runs too): a new version of the link, durable before it
//! is acknowledged, seen by every core at once, with the owner and scope
//! rules of any change (a key with `links:all` under `--auth required`).
//! Writing the log or the store behind the server's back could race its
//! own changes of the same links; going through it cannot.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use shorty_client::{Client, LinkPatch};
use shorty_service::abuse::Blocklist;

use crate::config::StoreSpec;
use crate::tools::ExportedLink;

/// What `disable-destination` did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Disabled {
    /// Codes disabled now.
    pub disabled: Vec<String>,
    /// Matching links that were disabled already.
    pub already: usize,
    /// Matching links the server no longer has (deleted since the read).
    pub gone: usize,
}

/// The links of `dir` (or of the Redis store), as exported.
fn links(dir: &Path, store: Option<&StoreSpec>) -> Result<Vec<ExportedLink>, String> {
    let mut lines = Vec::new();
    match store {
        Some(StoreSpec::Redis(spec)) => {
            crate::tools::export_redis_links(spec, &mut lines)?;
        }
        _ => {
            crate::tools::export_links(dir, &mut lines)
                .map_err(|e| format!("{}: {e}", dir.display()))?;
        }
    }
    lines
        .split(|&b| b == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| serde_json::from_slice(line).map_err(|e| format!("an exported line: {e}")))
        .collect()
}

/// Disables every link of `dir` (or the store) whose destination `rules`
/// block, through the server at `server` (its framed-protocol address),
/// presenting `api_key` when given.
///
/// # Errors
/// The links cannot be read, the server refuses (401/403) or fails.
pub fn disable(
    dir: &Path,
    store: Option<&StoreSpec>,
    rules: &Blocklist,
    server: &str,
    api_key: Option<&str>,
) -> Result<Disabled, String> {
    let matching: Vec<ExportedLink> = links(dir, store)?
        .into_iter()
        .filter(|link| rules.blocks(&link.url).is_some())
        .collect();
    let mut done = Disabled::default();
    if matching.is_empty() {
        return Ok(done);
    }
    let mut client = Client::connect(server).map_err(|e| format!("{server}: {e}"))?;
    if let Some(key) = api_key {
        client.auth(key).map_err(|e| format!("AUTH: {e}"))?;
    }
    let mut patch = LinkPatch::default();
    patch.disabled = Some(true);
    for link in matching {
        if link.disabled {
            done.already += 1;
            continue;
        }
        match client.update(&link.code, &patch) {
            Ok(_) => done.disabled.push(link.code),
            // Deleted since the export read it: nothing left to disable.
            Err(shorty_client::Error::Server { code, .. }) if code.0 == 404 => done.gone += 1,
            Err(e) => return Err(format!("{}: {e}", link.code)),
        }
    }
    Ok(done)
}

/// The tool: rules from the command line and `--blocklist`.
pub fn run(
    dir: &Path,
    store: Option<&StoreSpec>,
    rules: &[String],
    blocklist: Option<&Path>,
    server: &str,
    api_key: Option<&str>,
) -> ExitCode {
    let result = (|| {
        let mut text = rules.join("\n");
        if let Some(path) = blocklist {
            text.push('\n');
            text.push_str(
                &std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?,
            );
        }
        let list = Blocklist::parse(&text)?;
        if list.is_empty() {
            return Err("name at least one domain (or --blocklist FILE)".to_owned());
        }
        disable(dir, store, &list, server, api_key)
    })();
    match result {
        Ok(done) => {
            let mut out = std::io::stdout().lock();
            for code in &done.disabled {
                let _ = writeln!(out, "{code}");
            }
            eprintln!(
                "disable-destination: {} disabled, {} already disabled, {} deleted meanwhile",
                done.disabled.len(),
                done.already,
                done.gone
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("disable-destination: {err}");
            ExitCode::FAILURE
        }
    }
}

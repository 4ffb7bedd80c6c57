//! API keys on disk: `keys create|list|revoke` on both server binaries, and
//! the thread that keeps every core's [`KeyRing`](shorty_service::api::auth::KeyRing) in step with the file.
//!
//! The file is `keys.json` in the data directory ([`KeysFile`]): only each
//! key's SHA-256 is stored. Every change is written atomically (a
//! temporary file, `fsync`, `rename`, `fsync` of the directory), so a
//! reader sees the old file or the new one, never half of one. The running
//! server re-reads it within a second of a change (polled: no inotify, and
//! the same code works on every file system) and at each key's expiry, so a
//! revoke takes effect on every core without a restart. With
//! `--store redis://` the keys are still per node (each node's data
//! directory): sharing them through Redis is not built yet.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use shorty_service::api::auth::{
    hash_key, key_text, KeyRecord, KeyTable, KeysFile, Scopes, KEYS_FILE,
};
use shorty_service::shard::Shared;

/// How often the running server looks at the keys file.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// Now, as Unix ms.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The keys file of data directory `dir`.
pub fn path(dir: &Path) -> PathBuf {
    dir.join(KEYS_FILE)
}

/// Reads the keys file; no file is no keys.
///
/// # Errors
/// The file cannot be read or is not a keys file.
pub fn load(dir: &Path) -> Result<KeysFile, String> {
    let path = path(dir);
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| format!("{}: not a keys file: {e}", path.display())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(KeysFile::default()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Writes the keys file atomically.
///
/// # Errors
/// Any I/O error.
pub fn save(dir: &Path, file: &KeysFile) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    serde_json::to_writer_pretty(&mut tmp, file)?;
    tmp.write_all(b"\n")?;
    tmp.as_file().sync_all()?;
    tmp.persist(path(dir)).map_err(|e| e.error)?;
    fs::File::open(dir)?.sync_all()
}

/// Makes a key: returns its text (shown once) and its record, added to the
/// file.
///
/// # Errors
/// A name already used, scopes that are not scopes, no randomness, I/O.
pub fn create(
    dir: &Path,
    name: &str,
    scopes: &str,
    expires_in: Option<Duration>,
) -> Result<(String, KeyRecord), String> {
    let scopes = Scopes::parse(scopes)?;
    if scopes == Scopes::default() {
        return Err("--scopes: name at least one scope".into());
    }
    if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
        return Err("--name: 1 to 64 printable characters".into());
    }
    let mut file = load(dir)?;
    if file.keys.iter().any(|k| k.name == name) {
        return Err(format!("a key named {name} already exists"));
    }
    let mut random = [0u8; 32];
    getrandom::fill(&mut random).map_err(|e| format!("no randomness: {e}"))?;
    let text = key_text(&random);
    let now = now_ms();
    let record = KeyRecord {
        id: file.next_id(),
        name: name.to_owned(),
        sha256: hash_key(text.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
        scopes: scopes.names(),
        created_at_ms: now,
        expires_at_ms: expires_in
            .map(|d| now.saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))),
        revoked_at_ms: None,
    };
    file.keys.push(record.clone());
    save(dir, &file).map_err(|e| format!("{}: {e}", path(dir).display()))?;
    Ok((text, record))
}

/// Revokes key `name` (kept in the file, so its id is never reused).
///
/// # Errors
/// No such key, or I/O.
pub fn revoke(dir: &Path, name: &str) -> Result<(), String> {
    let mut file = load(dir)?;
    let key = file
        .keys
        .iter_mut()
        .find(|k| k.name == name)
        .ok_or_else(|| format!("no key is named {name}"))?;
    if key.revoked_at_ms.is_none() {
        key.revoked_at_ms = Some(now_ms());
    }
    save(dir, &file).map_err(|e| format!("{}: {e}", path(dir).display()))
}

fn ms_text(ms: Option<u64>) -> String {
    ms.map_or_else(|| "-".into(), shorty_service::api::model::rfc3339_ms)
}

/// `keys create|list|revoke`.
pub fn run(dir: &Path, action: &crate::config::KeysAction) -> ExitCode {
    use crate::config::KeysAction;
    let result = match action {
        KeysAction::Create {
            name,
            scopes,
            expires,
        } => create(dir, name, scopes, *expires).map(|(text, record)| {
            println!("{text}");
            eprintln!(
                "key {} (id {}, scopes {}) created; it is shown only this once",
                record.name, record.id, record.scopes
            );
        }),
        KeysAction::List => load(dir).map(|file| {
            println!("id\tname\tscopes\tcreated\texpires\trevoked");
            for k in &file.keys {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    k.id,
                    k.name,
                    k.scopes,
                    ms_text(Some(k.created_at_ms)),
                    ms_text(k.expires_at_ms),
                    ms_text(k.revoked_at_ms)
                );
            }
        }),
        KeysAction::Revoke { name } => revoke(dir, name).map(|()| {
            eprintln!("key {name} revoked; running servers stop taking it within seconds");
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("keys: {err}");
            ExitCode::FAILURE
        }
    }
}

/// What of the file a change would alter (polling compares these).
fn stamp(path: &Path) -> Option<(SystemTime, u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len(), meta.ino()))
}

/// The next expiry after `now`, when the table must be rebuilt.
fn next_expiry(file: &KeysFile, now: u64) -> Option<u64> {
    file.keys
        .iter()
        .filter_map(|k| k.expires_at_ms)
        .filter(|&t| t > now)
        .min()
}

/// Loads the keys into `shared` now, then keeps them current from a
/// thread of its own (off the serving cores).
///
/// # Errors
/// The file exists but is damaged: the server refuses to start rather than
/// run without the keys an operator made.
pub fn start_reloader(dir: &Path, shared: &Arc<Shared>) -> Result<(), String> {
    let path = path(dir);
    let file = load(dir)?;
    let now = now_ms();
    shared.keys.install(KeyTable::from_file(&file, now)?);
    let mut expiry = next_expiry(&file, now);
    let mut seen = stamp(&path);
    let (dir, shared) = (dir.to_owned(), shared.clone());
    std::thread::Builder::new()
        .name("shorty-keys".into())
        .spawn(move || loop {
            std::thread::sleep(RELOAD_INTERVAL);
            let now = now_ms();
            let current = stamp(&path);
            if current == seen && expiry.is_none_or(|t| now < t) {
                continue;
            }
            seen = current;
            match load(&dir).and_then(|file| {
                expiry = next_expiry(&file, now);
                KeyTable::from_file(&file, now)
            }) {
                Ok(table) => {
                    tracing::info!(keys = table.len(), "API keys reloaded");
                    shared.keys.install(table);
                }
                // A damaged file keeps the keys in force as they were
                // (a half-edited file must not open or close the door).
                Err(err) => tracing::error!("API keys not reloaded: {err}"),
            }
        })
        .map(|_| ())
        .map_err(|e| format!("cannot start the keys thread: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_list_revoke_round_trip_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (key, record) = create(dir.path(), "ci", "links:write", None).unwrap();
        assert!(key.starts_with("shorty_") && key.len() == 7 + 64);
        assert!(
            create(dir.path(), "ci", "links:read", None).is_err(),
            "names are unique"
        );
        assert!(create(dir.path(), "x", "links:admin", None).is_err());
        let text = fs::read_to_string(path(dir.path())).unwrap();
        assert!(!text.contains(&key[7..]), "the key itself is never stored");
        let table = KeyTable::from_file(&load(dir.path()).unwrap(), now_ms()).unwrap();
        assert_eq!(
            table.authenticate(key.as_bytes()).unwrap().key_id,
            Some(record.id)
        );
        revoke(dir.path(), "ci").unwrap();
        let table = KeyTable::from_file(&load(dir.path()).unwrap(), now_ms()).unwrap();
        assert!(table.authenticate(key.as_bytes()).is_err());
        let (_, second) = create(dir.path(), "ci2", "links:read", None).unwrap();
        assert_eq!(second.id, record.id + 1, "a revoked key's id is not reused");
    }

    #[test]
    fn the_reloader_applies_a_revoke_without_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (key, _) = create(dir.path(), "ci", "links:write", None).unwrap();
        let shared = Arc::new(Shared::for_tests(
            shorty_service::settings::Settings::for_tests("http://s/"),
        ));
        start_reloader(dir.path(), &shared).unwrap();
        assert!(shared.authenticate(key.as_bytes()).is_ok());
        revoke(dir.path(), "ci").unwrap();
        let deadline = std::time::Instant::now() + 10 * RELOAD_INTERVAL;
        while shared.authenticate(key.as_bytes()).is_ok() {
            assert!(std::time::Instant::now() < deadline, "revoke not applied");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

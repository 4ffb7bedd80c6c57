//! API keys: `keys create|list|revoke` on both server binaries, and the
//! thread that keeps every core's [`KeyRing`](shorty_service::api::auth::KeyRing)
//! in step with the key table.
//!
//! The table lives in one of two places ([`KeyStore`]), holding only each
//! key's SHA-256 either way:
//! - `keys.json` in the data directory (`--store local`): every change is
//!   written atomically (a temporary file, `fsync`, `rename`, `fsync` of
//!   the directory), so a reader sees the old file or the new one, never
//!   half of one. The server looks at the file's stamp every second.
//! - the Redis store (`--store redis://…`), so every node shares one
//!   table: a hash [`REDIS_KEYS`] (key name → the record as JSON, as
//!   `keys.json` holds it) and a counter [`REDIS_KEY_IDS`] that hands out
//!   ids (never reused, and the same on every node, so a link's owner means
//!   one key everywhere). Names are claimed with `HSETNX`, so two operators
//!   creating one name at once cannot both succeed. Each node reads the
//!   whole hash every second (`HGETALL`: one small reply; tables hold tens
//!   of keys, not millions) and installs a new table only when it changed.
//!
//! Either way a revoke or an expiry takes effect within about a second, on
//! every core (and node), without a restart. A reload that fails (a
//! damaged file or record, an unreachable store) keeps the keys in force
//! as they were: a half-edited table must not open or close the door, and
//! with a Redis store every write needs the store anyway.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::Value;
use shorty_service::api::auth::{
    hash_key, key_text, KeyRecord, KeyTable, KeysFile, Scopes, KEYS_FILE,
};
use shorty_service::limits::Rate;
use shorty_service::shard::Shared;

use crate::config::{RedisSpec, StoreSpec};
use crate::redis_store::Conn;

/// How often the running server looks at the key table.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(1);
/// The Redis hash of keys: name → record (JSON).
pub const REDIS_KEYS: &str = "shorty:keys";
/// The Redis counter of key ids.
pub const REDIS_KEY_IDS: &str = "shorty:keys:id";
/// A request to the Redis store from the keys tool or the reloader that
/// takes longer fails (the reloader then keeps the table it has).
const REDIS_TIMEOUT: Duration = Duration::from_secs(5);

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

/// Runs `change` (a read, change and write of the keys file of `dir`)
/// under an exclusive lock on `dir/keys.lock`, so two `keys` commands run
/// at once never lose each other's change: without it two creates both
/// read the file, both take the next id, and the last write drops the
/// other's key — or a create undoes a revoke (review of 4647e0a). The lock
/// is advisory (`flock`), held by this process until `change` returns; the
/// server never writes the file, it only reads it.
fn with_file_lock<T>(dir: &Path, change: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    let lock_path = dir.join("keys.lock");
    let lock = fs::create_dir_all(dir)
        .and_then(|()| {
            fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
        })
        .and_then(|file| file.lock().map(|()| file))
        .map_err(|e| format!("{}: {e}", lock_path.display()))?;
    let result = change();
    drop(lock);
    result
}

/// What `keys create` is asked for.
#[derive(Debug, Clone, Default)]
pub struct NewKey<'a> {
    /// Its name, unique.
    pub name: &'a str,
    /// Comma-separated scopes.
    pub scopes: &'a str,
    /// It stops working after this long.
    pub expires_in: Option<Duration>,
    /// Its own limit on new links (`10/min`).
    pub rate_create: Option<&'a str>,
}

/// A new key's text (shown once) and its record, with id `id`.
fn make_key(new: &NewKey<'_>, id: u32) -> Result<(String, KeyRecord), String> {
    let scopes = Scopes::parse(new.scopes)?;
    if scopes == Scopes::default() {
        return Err("--scopes: name at least one scope".into());
    }
    let name = new.name;
    if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
        return Err("--name: 1 to 64 printable characters".into());
    }
    let rate_create = match new.rate_create {
        Some(text) => {
            let rate = Rate::parse(text).map_err(|e| format!("--rate-create {e}"))?;
            if rate.is_none() {
                return Err("--rate-create: a key's own limit cannot be off".into());
            }
            Some(text.trim().to_owned())
        }
        None => None,
    };
    let mut random = [0u8; 32];
    getrandom::fill(&mut random).map_err(|e| format!("no randomness: {e}"))?;
    let text = key_text(&random);
    let now = now_ms();
    let record = KeyRecord {
        id,
        name: name.to_owned(),
        sha256: hash_key(text.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
        scopes: scopes.names(),
        created_at_ms: now,
        expires_at_ms: new
            .expires_in
            .map(|d| now.saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))),
        revoked_at_ms: None,
        rate_create,
    };
    Ok((text, record))
}

/// Makes a key in the keys file of `dir`: returns its text (shown once)
/// and its record.
///
/// # Errors
/// A name already used, scopes that are not scopes, no randomness, I/O.
pub fn create(dir: &Path, new: &NewKey<'_>) -> Result<(String, KeyRecord), String> {
    with_file_lock(dir, || create_locked(dir, new))
}

fn create_locked(dir: &Path, new: &NewKey<'_>) -> Result<(String, KeyRecord), String> {
    let mut file = load(dir)?;
    // Checked before the name is looked up, so a bad request says what is
    // wrong with it rather than that the name is taken.
    let (text, record) = make_key(new, file.next_id())?;
    if file.keys.iter().any(|k| k.name == record.name) {
        return Err(format!("a key named {} already exists", record.name));
    }
    file.keys.push(record.clone());
    save(dir, &file).map_err(|e| format!("{}: {e}", path(dir).display()))?;
    Ok((text, record))
}

/// Revokes key `name` in the keys file of `dir` (kept in the file, so its
/// id is never reused).
///
/// # Errors
/// No such key, or I/O.
pub fn revoke(dir: &Path, name: &str) -> Result<(), String> {
    with_file_lock(dir, || revoke_locked(dir, name))
}

fn revoke_locked(dir: &Path, name: &str) -> Result<(), String> {
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

/// The key table in the Redis store.
pub struct RedisKeys {
    runtime: tokio::runtime::Runtime,
    conn: Conn,
}

impl RedisKeys {
    /// Connects to `spec` (its own connection, on the caller's thread).
    ///
    /// # Errors
    /// The store cannot be reached.
    pub fn connect(spec: &RedisSpec) -> Result<Self, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let conn = runtime.block_on(crate::redis_store::connect(spec, REDIS_TIMEOUT, false))?;
        Ok(Self { runtime, conn })
    }

    /// One command; an error reply is an error.
    fn query(&mut self, cmd: &redis::Cmd) -> Result<Value, String> {
        let conn = &mut self.conn;
        self.runtime
            .block_on(conn.query(cmd))
            .map_err(|e| format!("the store: {e}"))
    }

    /// Every key in the store, by id.
    ///
    /// # Errors
    /// The store fails, or a record is not a key record.
    pub fn load(&mut self) -> Result<KeysFile, String> {
        let reply = self.query(redis::cmd("HGETALL").arg(REDIS_KEYS))?;
        let map: HashMap<String, Vec<u8>> = redis::from_redis_value(reply)
            .map_err(|e| format!("{REDIS_KEYS} in the store is not a hash of keys: {e}"))?;
        let mut keys = Vec::with_capacity(map.len());
        for (name, json) in map {
            let record: KeyRecord = serde_json::from_slice(&json)
                .map_err(|e| format!("{REDIS_KEYS} {name}: not a key record: {e}"))?;
            if record.name != name {
                return Err(format!(
                    "{REDIS_KEYS} {name}: the record names {}",
                    record.name
                ));
            }
            keys.push(record);
        }
        keys.sort_by_key(|k| k.id);
        Ok(KeysFile { keys })
    }

    /// Makes a key in the store.
    ///
    /// # Errors
    /// A name already used, a bad request, the store fails.
    pub fn create(&mut self, new: &NewKey<'_>) -> Result<(String, KeyRecord), String> {
        // Checked before an id is spent on it.
        make_key(new, 1)?;
        let reply = self.query(redis::cmd("INCR").arg(REDIS_KEY_IDS))?;
        let id = match reply {
            Value::Int(id) => u32::try_from(id)
                .ok()
                .filter(|&id| id > 0)
                .ok_or_else(|| format!("{REDIS_KEY_IDS} in the store is out of range: {id}"))?,
            other => return Err(format!("INCR {REDIS_KEY_IDS} answered {other:?}")),
        };
        let (text, record) = make_key(new, id)?;
        let json = serde_json::to_vec(&record).map_err(|e| e.to_string())?;
        match self.query(
            redis::cmd("HSETNX")
                .arg(REDIS_KEYS)
                .arg(&record.name)
                .arg(json),
        )? {
            Value::Int(1) => Ok((text, record)),
            Value::Int(0) => Err(format!("a key named {} already exists", record.name)),
            other => Err(format!("HSETNX {REDIS_KEYS} answered {other:?}")),
        }
    }

    /// Revokes key `name` in the store (kept, so its id and name are
    /// never reused).
    ///
    /// # Errors
    /// No such key, the store fails.
    pub fn revoke(&mut self, name: &str) -> Result<(), String> {
        let reply = self.query(redis::cmd("HGET").arg(REDIS_KEYS).arg(name))?;
        let json: Option<Vec<u8>> = redis::from_redis_value(reply)
            .map_err(|e| format!("HGET {REDIS_KEYS} answered: {e}"))?;
        let json = json.ok_or_else(|| format!("no key is named {name}"))?;
        let mut record: KeyRecord = serde_json::from_slice(&json)
            .map_err(|e| format!("{REDIS_KEYS} {name}: not a key record: {e}"))?;
        if record.revoked_at_ms.is_some() {
            return Ok(());
        }
        record.revoked_at_ms = Some(now_ms());
        let json = serde_json::to_vec(&record).map_err(|e| e.to_string())?;
        // Two revokes racing write the same thing; nothing else changes a
        // record once made, so no compare-and-set is needed.
        match self.query(redis::cmd("HSET").arg(REDIS_KEYS).arg(name).arg(json))? {
            Value::Int(_) => Ok(()),
            other => Err(format!("HSET {REDIS_KEYS} answered {other:?}")),
        }
    }
}

/// Where the key table lives.
pub enum KeyStore {
    /// `keys.json` in this data directory.
    File(PathBuf),
    /// The Redis store, shared by every node.
    Redis(Box<RedisKeys>),
}

impl KeyStore {
    /// The table of a server with data directory `dir` and store `store`.
    ///
    /// # Errors
    /// The Redis store cannot be reached.
    pub fn open(dir: &Path, store: &StoreSpec) -> Result<Self, String> {
        match store {
            StoreSpec::Local => Ok(KeyStore::File(dir.to_owned())),
            StoreSpec::Redis(spec) => {
                if path(dir).exists() {
                    tracing::warn!(
                        "{} is not read: with --store redis:// the keys are in the store",
                        path(dir).display()
                    );
                }
                RedisKeys::connect(spec).map(|r| KeyStore::Redis(Box::new(r)))
            }
        }
    }

    /// Every key.
    ///
    /// # Errors
    /// As [`load`] or [`RedisKeys::load`].
    pub fn load(&mut self) -> Result<KeysFile, String> {
        match self {
            KeyStore::File(dir) => load(dir),
            KeyStore::Redis(r) => r.load(),
        }
    }

    /// Makes a key.
    ///
    /// # Errors
    /// As [`create`] or [`RedisKeys::create`].
    pub fn create(&mut self, new: &NewKey<'_>) -> Result<(String, KeyRecord), String> {
        match self {
            KeyStore::File(dir) => create(dir, new),
            KeyStore::Redis(r) => r.create(new),
        }
    }

    /// Revokes a key.
    ///
    /// # Errors
    /// As [`revoke`] or [`RedisKeys::revoke`].
    pub fn revoke(&mut self, name: &str) -> Result<(), String> {
        match self {
            KeyStore::File(dir) => revoke(dir, name),
            KeyStore::Redis(r) => r.revoke(name),
        }
    }
}

fn ms_text(ms: Option<u64>) -> String {
    ms.map_or_else(|| "-".into(), shorty_service::api::model::rfc3339_ms)
}

/// `keys create|list|revoke` on the table of data directory `dir`, or of
/// the Redis store when `store` names one.
pub fn run(dir: &Path, store: Option<&StoreSpec>, action: &crate::config::KeysAction) -> ExitCode {
    use crate::config::KeysAction;
    let result =
        KeyStore::open(dir, store.unwrap_or(&StoreSpec::Local)).and_then(|mut keys| match action {
            KeysAction::Create {
                name,
                scopes,
                expires,
                rate_create,
            } => keys
                .create(&NewKey {
                    name,
                    scopes,
                    expires_in: *expires,
                    rate_create: rate_create.as_deref(),
                })
                .map(|(text, record)| {
                    println!("{text}");
                    eprintln!(
                        "key {} (id {}, scopes {}) created; it is shown only this once",
                        record.name, record.id, record.scopes
                    );
                }),
            KeysAction::List => keys.load().map(|file| {
                println!("id\tname\tscopes\tcreated\texpires\trevoked\trate-create");
                for k in &file.keys {
                    println!(
                        "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                        k.id,
                        k.name,
                        k.scopes,
                        ms_text(Some(k.created_at_ms)),
                        ms_text(k.expires_at_ms),
                        ms_text(k.revoked_at_ms),
                        k.rate_create.as_deref().unwrap_or("-")
                    );
                }
            }),
            KeysAction::Revoke { name } => keys.revoke(name).map(|()| {
                eprintln!("key {name} revoked; running servers stop taking it within seconds");
            }),
        });
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
/// The table exists but is damaged, or the store cannot be read: the
/// server refuses to start rather than run without the keys an operator
/// made.
pub fn start_reloader(mut store: KeyStore, shared: &Arc<Shared>) -> Result<(), String> {
    let mut last = store.load()?;
    let now = now_ms();
    shared.keys.install(KeyTable::from_file(&last, now)?);
    let mut expiry = next_expiry(&last, now);
    let mut seen = match &store {
        KeyStore::File(dir) => stamp(&path(dir)),
        KeyStore::Redis(_) => None,
    };
    let mut failing: Option<String> = None;
    let shared = shared.clone();
    std::thread::Builder::new()
        .name("shorty-keys".into())
        .spawn(move || loop {
            std::thread::sleep(RELOAD_INTERVAL);
            let now = now_ms();
            let expired = expiry.is_some_and(|t| now >= t);
            if let KeyStore::File(dir) = &store {
                // The file's stamp first: most seconds nothing changed,
                // and a stat is cheaper than a read.
                let current = stamp(&path(dir));
                if current == seen && !expired {
                    continue;
                }
                seen = current;
            }
            let loaded = store.load().and_then(|file| {
                let table = KeyTable::from_file(&file, now)?;
                Ok((file, table))
            });
            match loaded {
                Ok((file, table)) => {
                    failing = None;
                    if file == last && !expired {
                        continue;
                    }
                    expiry = next_expiry(&file, now);
                    last = file;
                    tracing::info!(keys = table.len(), "API keys reloaded");
                    shared.keys.install(table);
                }
                // Said once per distinct failure, not every second.
                Err(err) => {
                    if failing.as_ref() != Some(&err) {
                        tracing::error!("API keys not reloaded, the old ones stay: {err}");
                        failing = Some(err);
                    }
                }
            }
        })
        .map(|_| ())
        .map_err(|e| format!("cannot start the keys thread: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_key<'a>(name: &'a str, scopes: &'a str) -> NewKey<'a> {
        NewKey {
            name,
            scopes,
            ..NewKey::default()
        }
    }

    /// Review of 4647e0a: six `keys create` at once printed six keys of
    /// which `keys list` showed two, and a revoke beside a create was
    /// undone in 3 of 8 tries.
    #[test]
    fn concurrent_creates_and_revokes_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        create(dir.path(), &new_key("victim", "links:read")).unwrap();
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let dir = dir.path().to_owned();
                std::thread::spawn(move || {
                    if i == 0 {
                        revoke(&dir, "victim").unwrap();
                    } else {
                        let name = format!("k{i}");
                        create(&dir, &new_key(&name, "links:read")).unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let file = load(dir.path()).unwrap();
        assert_eq!(file.keys.len(), 8, "every key made is kept");
        let ids: std::collections::HashSet<u32> = file.keys.iter().map(|k| k.id).collect();
        assert_eq!(ids.len(), 8, "ids are unique");
        let victim = file.keys.iter().find(|k| k.name == "victim").unwrap();
        assert!(victim.revoked_at_ms.is_some(), "the revoke holds");
    }

    #[test]
    fn create_list_revoke_round_trip_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (key, record) = create(dir.path(), &new_key("ci", "links:write")).unwrap();
        assert!(key.starts_with("shorty_") && key.len() == 7 + 64);
        assert!(
            create(dir.path(), &new_key("ci", "links:read")).is_err(),
            "names are unique"
        );
        assert!(create(dir.path(), &new_key("x", "links:admin")).is_err());
        for bad in ["off", "5/week", "0/s"] {
            let new = NewKey {
                rate_create: Some(bad),
                ..new_key("r", "links:write")
            };
            assert!(create(dir.path(), &new).is_err(), "{bad}");
        }
        let limited = NewKey {
            rate_create: Some("5/min"),
            ..new_key("limited", "links:write")
        };
        let (limited_key, _) = create(dir.path(), &limited).unwrap();
        let text = fs::read_to_string(path(dir.path())).unwrap();
        assert!(!text.contains(&key[7..]), "the key itself is never stored");
        let table = KeyTable::from_file(&load(dir.path()).unwrap(), now_ms()).unwrap();
        assert_eq!(
            table.authenticate(key.as_bytes()).unwrap().key_id,
            Some(record.id)
        );
        let limited_id = table.authenticate(limited_key.as_bytes()).unwrap().key_id;
        assert_eq!(table.create_rate(limited_id), Rate::parse("5/min").unwrap());
        assert_eq!(table.create_rate(Some(record.id)), None);
        revoke(dir.path(), "ci").unwrap();
        let table = KeyTable::from_file(&load(dir.path()).unwrap(), now_ms()).unwrap();
        assert!(table.authenticate(key.as_bytes()).is_err());
        let (_, second) = create(dir.path(), &new_key("ci2", "links:read")).unwrap();
        assert_eq!(second.id, record.id + 2, "a revoked key's id is not reused");
    }

    #[test]
    fn the_reloader_applies_a_revoke_without_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (key, _) = create(dir.path(), &new_key("ci", "links:write")).unwrap();
        let shared = Arc::new(Shared::for_tests(
            shorty_service::settings::Settings::for_tests("http://s/"),
        ));
        start_reloader(KeyStore::File(dir.path().to_owned()), &shared).unwrap();
        assert!(shared.authenticate(key.as_bytes()).is_ok());
        revoke(dir.path(), "ci").unwrap();
        let deadline = std::time::Instant::now() + 10 * RELOAD_INTERVAL;
        while shared.authenticate(key.as_bytes()).is_ok() {
            assert!(std::time::Instant::now() < deadline, "revoke not applied");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

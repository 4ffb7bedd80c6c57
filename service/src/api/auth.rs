//! API keys and scopes, sans-IO: the keys file's format, the table every
//! core checks presented keys against, and the `--auth` policy.
//!
//! A key is 32 random bytes, shown once as `shorty_` + 64 hex digits; only
//! its SHA-256 is stored. A presented key is hashed and compared with
//! every stored hash in constant time (`subtle`), so neither the hash
//! lookup nor the comparison tells an attacker how close a guess came.
//! The runtime (`shorty_runtime::keys`) writes the file, re-reads it every
//! second, and installs a new [`KeyTable`] in the [`KeyRing`] every core
//! reads: a revoke or an expiry takes effect within about a second, on
//! every core, without a restart. Expired and revoked keys are left out
//! of the table when it is built.

use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::problem::Problem;
use crate::limits::Rate;
pub use crate::link::{Principal, Scopes};

/// The keys file's name in the data directory.
pub const KEYS_FILE: &str = "keys.json";
/// What every key begins with (so leaked keys are easy to scan for).
pub const KEY_PREFIX: &str = "shorty_";

/// One permission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Create links, and change or delete its own.
    LinksWrite,
    /// Change or delete any link.
    LinksAll,
    /// Read links.
    LinksRead,
    /// Read statistics.
    StatsRead,
}

impl Scope {
    /// Every scope, with its name.
    pub const ALL: [(Scope, &'static str); 4] = [
        (Scope::LinksWrite, "links:write"),
        (Scope::LinksAll, "links:all"),
        (Scope::LinksRead, "links:read"),
        (Scope::StatsRead, "stats:read"),
    ];

    /// The scope as the operations' [`Scopes`] set.
    pub fn scopes(self) -> Scopes {
        match self {
            Scope::LinksWrite => Scopes::LINKS_WRITE,
            Scope::LinksAll => Scopes::LINKS_ALL,
            Scope::LinksRead => Scopes::LINKS_READ,
            Scope::StatsRead => Scopes::STATS_READ,
        }
    }

    /// Its name (`links:write`).
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(s, _)| *s == self)
            .map_or("", |(_, n)| n)
    }
}

// The key store's names for the operations' one scope set
// ([`crate::link::Scopes`]): an inherent impl in this module, so the link
// model knows nothing of how keys spell them.
impl Scopes {
    /// Parses `links:write,links:read`.
    ///
    /// # Errors
    /// The first name that is not a scope.
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut scopes = Scopes::default();
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let (scope, _) = Scope::ALL.iter().find(|(_, n)| *n == name).ok_or_else(|| {
                format!("`{name}` is not a scope (links:write, links:all, links:read, stats:read)")
            })?;
            scopes.0 |= scope.scopes().0;
        }
        Ok(scopes)
    }

    /// `true` when `scope` is granted. `links:all` implies `links:write`.
    pub fn allows(self, scope: Scope) -> bool {
        self.contains(scope.scopes())
            || (scope == Scope::LinksWrite && self.contains(Scopes::LINKS_ALL))
    }

    /// The names, comma-separated.
    pub fn names(self) -> String {
        Scope::ALL
            .iter()
            .filter(|(s, _)| self.contains(s.scopes()))
            .map(|(_, n)| *n)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// One key as the keys file holds it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyRecord {
    /// Its id: recorded as a link's owner (never reused).
    pub id: u32,
    /// Its name, unique among the file's keys.
    pub name: String,
    /// SHA-256 of the key, 64 hex digits.
    pub sha256: String,
    /// Comma-separated scopes.
    pub scopes: String,
    /// When it was made, Unix ms.
    pub created_at_ms: u64,
    /// When it stops working, Unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<u64>,
    /// When it was revoked, Unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at_ms: Option<u64>,
    /// Its own limit on new links (`10/min`), replacing `--rate-create-key`
    /// and `--rate-create` for requests made with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_create: Option<String>,
}

/// The keys file (`keys.json`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysFile {
    /// Every key ever made, revoked ones included (their ids are never
    /// handed out again).
    pub keys: Vec<KeyRecord>,
}

impl KeysFile {
    /// The id for a new key.
    pub fn next_id(&self) -> u32 {
        self.keys.iter().map(|k| k.id).max().map_or(1, |id| id + 1)
    }
}

/// SHA-256 of a key as presented.
pub fn hash_key(key: &[u8]) -> [u8; 32] {
    Sha256::digest(key).into()
}

/// A key's text for 32 random bytes.
pub fn key_text(random: &[u8; 32]) -> String {
    let mut text = String::with_capacity(KEY_PREFIX.len() + 64);
    text.push_str(KEY_PREFIX);
    for b in random {
        text.push_str(&format!("{b:02x}"));
    }
    text
}

fn parse_hex32(text: &str) -> Option<[u8; 32]> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        *out.get_mut(i)? = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

/// Why a request is not authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthError {
    /// No key, where one is required.
    Missing,
    /// A key that is not (or no longer) valid: unknown, revoked, expired.
    Invalid,
    /// A valid key without the scope the request needs.
    Forbidden(Scope),
}

impl AuthError {
    /// Its HTTP status (and wire error code): 401 or 403.
    pub fn status(self) -> u16 {
        match self {
            AuthError::Missing | AuthError::Invalid => 401,
            AuthError::Forbidden(_) => 403,
        }
    }

    /// What to tell the client.
    pub fn message(self) -> String {
        match self {
            AuthError::Missing => "an API key is required (Authorization: Bearer KEY, or \
                                   X-Api-Key: KEY; on the wire, AUTH)"
                .into(),
            AuthError::Invalid => "the API key is not valid (unknown, revoked or expired)".into(),
            AuthError::Forbidden(scope) => {
                format!("the API key lacks the {} scope", scope.name())
            }
        }
    }

    /// As an HTTP problem (401 with `WWW-Authenticate`).
    pub fn problem(self) -> Problem {
        let problem = Problem::new(self.status(), self.message());
        if self.status() == 401 {
            problem.with_header("WWW-Authenticate", "Bearer realm=\"shorty\"")
        } else {
            problem
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    hash: [u8; 32],
    id: u32,
    scopes: Scopes,
    rate_create: Option<Rate>,
}

/// The keys valid now, as every core checks them.
#[derive(Debug, Clone, Default)]
pub struct KeyTable {
    entries: Vec<Entry>,
}

impl KeyTable {
    /// The keys of `file` valid at `now_ms` (revoked and expired ones left
    /// out).
    ///
    /// # Errors
    /// A record that is damaged (a hash that is not 64 hex digits, a scope
    /// that is not one), naming the key.
    pub fn from_file(file: &KeysFile, now_ms: u64) -> Result<Self, String> {
        let mut entries = Vec::with_capacity(file.keys.len());
        for key in &file.keys {
            let hash = parse_hex32(&key.sha256)
                .ok_or_else(|| format!("key {}: sha256 is not 64 hex digits", key.name))?;
            let scopes =
                Scopes::parse(&key.scopes).map_err(|e| format!("key {}: {e}", key.name))?;
            let rate_create = match &key.rate_create {
                Some(text) => Rate::parse(text)
                    .map_err(|e| format!("key {}: rateCreate {e}", key.name))?
                    .ok_or_else(|| format!("key {}: rateCreate cannot be off", key.name))
                    .map(Some)?,
                None => None,
            };
            let live = key.revoked_at_ms.is_none() && key.expires_at_ms.is_none_or(|t| now_ms < t);
            if live {
                entries.push(Entry {
                    hash,
                    id: key.id,
                    scopes,
                    rate_create,
                });
            }
        }
        Ok(Self { entries })
    }

    /// The limit on new links of key `key_id`, when it has its own
    /// (`keys create --rate-create`).
    pub fn create_rate(&self, key_id: Option<u32>) -> Option<Rate> {
        let id = key_id?;
        self.entries.iter().find(|e| e.id == id)?.rate_create
    }

    /// Keys in the table.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// `true` when no key is valid.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Checks a presented key (an HTTP header's value, or a wire AUTH
    /// request's payload). Every stored hash is compared, in constant time.
    ///
    /// # Errors
    /// [`AuthError::Invalid`] for a key that is not valid now.
    pub fn authenticate(&self, presented: &[u8]) -> Result<Principal, AuthError> {
        let hash = hash_key(presented);
        let mut found: Option<&Entry> = None;
        for entry in &self.entries {
            if bool::from(entry.hash.ct_eq(&hash)) {
                found = Some(entry);
            }
        }
        found
            .map(|e| Principal {
                key_id: Some(e.id),
                scopes: e.scopes,
            })
            .ok_or(AuthError::Invalid)
    }

    /// What key `id` may do now: `None` once it is revoked or expired.
    /// A wire connection proved its key once, with AUTH; it asks this
    /// before each batch of requests so that a revoke reaches connections
    /// already open, as it reaches the HTTP front's next request.
    pub fn principal_of(&self, id: u32) -> Option<Principal> {
        self.entries.iter().find(|e| e.id == id).map(|e| Principal {
            key_id: Some(e.id),
            scopes: e.scopes,
        })
    }

    /// Who is calling, under the `--auth` policy: a presented key must be
    /// valid; without one, `required` refuses and `optional` grants every
    /// scope (the seed's client on a loopback-only server).
    ///
    /// # Errors
    /// 401 ([`AuthError::Missing`], [`AuthError::Invalid`]).
    pub fn caller(&self, presented: Option<&[u8]>, required: bool) -> Result<Principal, AuthError> {
        match presented {
            Some(key) => self.authenticate(key),
            None if required => Err(AuthError::Missing),
            None => Ok(Principal::unauthenticated(false)),
        }
    }
}

/// The key from a request's headers: `Authorization: Bearer KEY` or
/// `X-Api-Key: KEY`.
pub fn presented_key<'a>(
    authorization: Option<&'a [u8]>,
    api_key: Option<&'a [u8]>,
) -> Option<&'a [u8]> {
    if let Some(value) = api_key {
        return Some(value.trim_ascii());
    }
    let value = authorization?.trim_ascii();
    // The scheme is case-insensitive (RFC 9110 §11.1). Another scheme
    // (Basic) presents no API key: an empty one, which fails as invalid
    // rather than passing as absent.
    match value.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case(b"bearer ") => {
            value.get(7..).map(<[u8]>::trim_ascii)
        }
        _ => Some(&[]),
    }
}

/// The table every core reads, swapped whole when the keys change.
#[derive(Debug, Default)]
pub struct KeyRing(RwLock<Arc<KeyTable>>);

impl KeyRing {
    /// The keys valid now.
    pub fn current(&self) -> Arc<KeyTable> {
        // A poisoned lock still holds a whole table (it is only ever
        // replaced, never edited in place).
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Installs a new table.
    pub fn install(&self, table: KeyTable) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(table);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> (KeysFile, String) {
        let key = key_text(&[7; 32]);
        let hash = hash_key(key.as_bytes());
        let record = KeyRecord {
            id: 3,
            name: "ci".into(),
            sha256: hash.iter().map(|b| format!("{b:02x}")).collect(),
            scopes: "links:write,links:read".into(),
            created_at_ms: 1,
            expires_at_ms: Some(1000),
            revoked_at_ms: None,
            rate_create: Some("5/min".into()),
        };
        (KeysFile { keys: vec![record] }, key)
    }

    #[test]
    fn a_key_authenticates_until_it_expires_or_is_revoked() {
        let (mut file, key) = file();
        let table = KeyTable::from_file(&file, 999).unwrap();
        let caller = table.authenticate(key.as_bytes()).unwrap();
        assert_eq!(caller.key_id, Some(3));
        assert_eq!(table.create_rate(Some(3)), Rate::parse("5/min").unwrap());
        assert_eq!(table.create_rate(Some(4)), None);
        assert!(caller.scopes.allows(Scope::LinksWrite));
        assert!(!caller.scopes.allows(Scope::StatsRead));
        assert_eq!(
            table.authenticate(b"shorty_00").unwrap_err(),
            AuthError::Invalid
        );
        let expired = KeyTable::from_file(&file, 1000).unwrap();
        assert_eq!(
            expired.authenticate(key.as_bytes()).unwrap_err(),
            AuthError::Invalid
        );
        file.keys[0].revoked_at_ms = Some(5);
        let revoked = KeyTable::from_file(&file, 10).unwrap();
        assert!(revoked.authenticate(key.as_bytes()).is_err());
    }

    #[test]
    fn the_policy_decides_for_callers_without_a_key() {
        let (file, key) = file();
        let table = KeyTable::from_file(&file, 0).unwrap();
        assert_eq!(table.caller(None, true), Err(AuthError::Missing));
        assert_eq!(table.caller(None, false).unwrap().scopes, Scopes::ALL);
        assert_eq!(
            table.caller(Some(b"wrong"), false),
            Err(AuthError::Invalid),
            "a wrong key is refused even when keys are optional"
        );
        assert!(table.caller(Some(key.as_bytes()), true).is_ok());
    }

    #[test]
    fn keys_come_from_either_header() {
        assert_eq!(presented_key(Some(b"Bearer abc "), None), Some(&b"abc"[..]));
        assert_eq!(presented_key(Some(b"bearer abc"), None), Some(&b"abc"[..]));
        assert_eq!(presented_key(None, Some(b"xyz")), Some(&b"xyz"[..]));
        assert_eq!(presented_key(Some(b"Basic dXNlcg=="), None), Some(&b""[..]));
        assert_eq!(presented_key(None, None), None);
    }

    #[test]
    fn scopes_parse_and_links_all_implies_write() {
        let s = Scopes::parse("links:all, stats:read").unwrap();
        assert!(s.allows(Scope::LinksWrite) && s.allows(Scope::StatsRead));
        assert!(!s.allows(Scope::LinksRead));
        assert_eq!(s.names(), "links:all,stats:read");
        assert!(Scopes::parse("links:admin").is_err());
    }
}

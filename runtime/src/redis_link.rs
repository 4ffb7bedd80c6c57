//! How a link lies in the Redis store (`shorty:l:<code or alias>`, a
//! string), and the scripts that change it (issue 19's lifecycle).
//!
//! **Values.** Three shapes share the one key, so a redirect is still one
//! `GET` whatever the link is:
//! - a plain link made by SHORTEN (and every link stored before the
//!   lifecycle existed): the URL itself, version 0. An accepted URL starts
//!   with its scheme's letter, never with the bytes below.
//! - a link with options (an alias, an expiry, ... or any link once
//!   updated): `0x01`, the version as 16 lowercase hex digits, the URL's
//!   length (`u32` LE), the URL, then the option list (format 3's TLVs,
//!   without the version tag: the header's version is the one that counts).
//! - a deleted link: `0x02` and the version's 16 hex digits. It keeps the
//!   name taken: for ever for a code (a deleted code is never handed out
//!   again, and no alias may take it), for `--alias-quarantine` for an
//!   alias (the tombstone's `PX`), after which the alias may be claimed
//!   again.
//!
//! **Expiry** is an option judged on read by the same code as the local
//! store's (`ops::resolve::judge`), not a `PEXPIREAT`: after expiry the
//! link still answers 410 or redirects to its expired-URL, and its alias
//! stays taken.
//!
//! **Click limits** are counted in the store, so that nodes share one
//! count ([`COUNT_SCRIPT`], only for links with `max_clicks`: others pay
//! nothing). The count is not `WAIT`ed for: a failover may give back the
//! clicks its replica had not received yet. A delete removes the count
//! after its script is confirmed (a key in another slot: not in the
//! script). A link with an expiry gives its count the same expiry
//! (`PEXPIREAT`, set by the click that creates the count), so an expired
//! link leaves no count behind; a confirmed update moves it to the new
//! expiry, or `PERSIST`s it when the update removes the expiry, so an
//! extended link keeps its count. (An update that revives a link after
//! its expiry finds its count gone and starts a new one; a core serving
//! a link from its cache while another node updates it may create the
//! count with the old expiry, within `--store-cache-ttl`.)
//!
//! **Order.** An update or delete is one Lua script on the key's slot
//! ([`UPDATE_SCRIPT`], [`DELETE_SCRIPT`]): it refuses a link that is gone,
//! and writes the version after the stored one. Two concurrent changes
//! from two nodes are thus executed one after the other by the key's
//! primary: both are acknowledged, the later one wins, and the versions
//! say which (the local store's rule, design §4). Each script is pipelined
//! with `WAIT` like a SHORTEN, and both replies are checked
//! ([`check_change`]).

use bytes::Bytes;
use redis::Value;
use shorty_service::link::LinkMeta;

/// First byte of a link with options.
pub const LINK_TAG: u8 = 1;
/// First byte of a deleted link.
pub const TOMBSTONE_TAG: u8 = 2;
/// Header: the tag and 16 hex digits of version.
const HEADER_LEN: usize = 17;

/// What a link's key holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// A link: plain (`meta` `None`, version 0) or with options.
    Link {
        /// The long URL.
        url: Bytes,
        /// Its options.
        meta: Option<LinkMeta>,
        /// Its version.
        version: u64,
    },
    /// Deleted (404), at this version.
    Deleted(u64),
}

/// The value of a link with options at `version`.
pub fn encode_link(version: u64, url: &[u8], options: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + 4 + url.len() + options.len());
    out.push(LINK_TAG);
    out.extend_from_slice(format!("{version:016x}").as_bytes());
    out.extend_from_slice(&body(url, options));
    out
}

/// A link with options without its header (what the update script gets:
/// it writes the header with the version it computes).
pub fn body(url: &[u8], options: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + url.len() + options.len());
    // URLs are bounded by --max-url-bytes, far below 4 GiB.
    out.extend_from_slice(&(url.len() as u32).to_le_bytes());
    out.extend_from_slice(url);
    out.extend_from_slice(options);
    out
}

fn version_of(value: &[u8]) -> Option<u64> {
    let hex = std::str::from_utf8(value.get(1..HEADER_LEN)?).ok()?;
    u64::from_str_radix(hex, 16).ok()
}

/// Reads a link's value.
///
/// # Errors
/// A damaged value (a short header, a URL past the end, malformed
/// options).
pub fn decode(value: Bytes) -> Result<Stored, &'static str> {
    match value.first() {
        Some(&TOMBSTONE_TAG) => version_of(&value)
            .map(Stored::Deleted)
            .ok_or("a damaged tombstone"),
        Some(&LINK_TAG) => {
            let version = version_of(&value).ok_or("a damaged link header")?;
            let rest = &value[HEADER_LEN..];
            let len = rest
                .get(..4)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_le_bytes)
                .ok_or("a damaged link header")? as usize;
            let url_end = HEADER_LEN + 4 + len;
            if value.len() < url_end {
                return Err("a link's URL past its end");
            }
            let mut meta = LinkMeta::decode(&value[url_end..]).map_err(|_| "malformed options")?;
            meta.version = version;
            Ok(Stored::Link {
                url: value.slice(HEADER_LEN + 4..url_end),
                meta: Some(meta),
                version,
            })
        }
        Some(_) => Ok(Stored::Link {
            url: value,
            meta: None,
            version: 0,
        }),
        None => Err("an empty value"),
    }
}

/// Common head of the scripts: `cur` is the live link's version, or the
/// script answers -1 (nothing there, or deleted).
const SCRIPT_HEAD: &str = r"
local v = redis.call('GET', KEYS[1])
if not v then return -1 end
local kind = string.byte(v, 1)
if kind == 2 then return -1 end
local cur = 0
if kind == 1 then cur = tonumber(string.sub(v, 2, 17), 16) end
local new = cur + 1
";

/// `KEYS[1]` the link, `ARGV[1]` its new [`body`], `ARGV[2]` the version
/// it was made from: the link at the next version; -1 if it is gone, -2
/// if it has changed since (another node's update went first: writing
/// would undo it). Answers the version written.
pub static UPDATE_SCRIPT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "{SCRIPT_HEAD}if cur ~= tonumber(ARGV[2]) then return -2 end
redis.call('SET', KEYS[1], '\\1' .. string.format('%016x', new) .. ARGV[1])
return new"
    )
});

/// `KEYS[1]` the link, `ARGV[1]` the quarantine in ms (empty: for ever;
/// `0`: none, the name is free at once): a tombstone at the next version,
/// or -1 if it is gone. Answers the version written.
pub static DELETE_SCRIPT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "{SCRIPT_HEAD}local t = '\\2' .. string.format('%016x', new)
if ARGV[1] == '' then redis.call('SET', KEYS[1], t)
elseif ARGV[1] == '0' then redis.call('DEL', KEYS[1])
else redis.call('SET', KEYS[1], t, 'PX', ARGV[1]) end
return new"
    )
});

/// Prefix of a limited link's click count: `shorty:n:<code or alias>:<created_at_ms>`
/// (one count per life of a link, so an alias re-created after its
/// quarantine starts at 0; an alias never holds `:`).
pub const COUNT_PREFIX: &str = "shorty:n:";

/// The name of the click count of `code`'s life created at
/// `created_at_ms` ([`COUNT_PREFIX`]). Removed with the link by a delete.
pub fn count_key(code: &str, created_at_ms: u64) -> String {
    format!("{COUNT_PREFIX}{code}:{created_at_ms}")
}

/// `KEYS[1]` a limited link's click count, `ARGV[1]` its limit, `ARGV[2]`
/// `1` to take a click (`0` only looks), `ARGV[3]` the link's expiry (Unix
/// ms, `0`: none): -1 if no click is left (none taken), else the count
/// after taking. One script, so the check and the increment are one step
/// on the key's primary: exact across nodes. The click that creates the
/// count gives it the link's expiry (`PEXPIREAT`); later clicks leave it
/// to updates (`Store::retime_count`), which know the newest.
pub const COUNT_SCRIPT: &str = r"
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n >= tonumber(ARGV[1]) then return -1 end
if ARGV[2] == '1' then
  n = redis.call('INCR', KEYS[1])
  if n == 1 and ARGV[3] ~= '0' then redis.call('PEXPIREAT', KEYS[1], ARGV[3]) end
end
return n
";

/// What the replies to a change's script + `WAIT` say.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    /// Written at this version and confirmed by enough replicas.
    Confirmed(u64),
    /// The link is gone (never was, or deleted): nothing written.
    Gone,
    /// The link changed since the change was made from it: nothing
    /// written (the client retries from the new version).
    Changed,
    /// The script failed (OOM, MISCONF, NOREPLICAS, READONLY...):
    /// nothing written.
    Refused(String),
    /// Written, but not confirmed by enough replicas.
    Unconfirmed(String),
}

/// Checks every reply of a change's pipeline. As for a SHORTEN, a `WAIT`
/// proves something only about a script that succeeded: an error reply to
/// the script is never acknowledged, whatever `WAIT` counted.
pub fn check_change(replies: &[Value], replicas: u32) -> Change {
    let version = match replies.first() {
        Some(Value::Int(-2)) => return Change::Changed,
        Some(Value::Int(n)) if *n < 0 => return Change::Gone,
        Some(Value::Int(n)) => *n as u64,
        Some(Value::ServerError(err)) => return Change::Refused(err.to_string()),
        other => return Change::Refused(format!("unexpected reply to the script: {other:?}")),
    };
    match replies.get(1) {
        Some(Value::Int(n)) if *n >= i64::from(replicas) => Change::Confirmed(version),
        Some(Value::Int(n)) => Change::Unconfirmed(format!("{n} confirmed")),
        Some(Value::ServerError(err)) => Change::Unconfirmed(format!("WAIT failed: {err}")),
        other => Change::Unconfirmed(format!("unexpected reply to WAIT: {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_plain_urls_stay_plain() {
        let meta = LinkMeta {
            expires_at_ms: Some(5),
            alias: Some("promo".into()),
            expired_url: Some("https://e.example/".into()),
            ..LinkMeta::default()
        };
        let mut options = Vec::new();
        meta.encode(&mut options);
        let value = encode_link(7, b"https://a.example/x", &options);
        match decode(Bytes::from(value)).unwrap() {
            Stored::Link {
                url,
                meta: Some(got),
                version,
            } => {
                assert_eq!(&url[..], b"https://a.example/x");
                assert_eq!(version, 7);
                assert_eq!(got, LinkMeta { version: 7, ..meta });
            }
            other => panic!("{other:?}"),
        }
        // Existing data: a bare URL is a plain link, version 0.
        assert_eq!(
            decode(Bytes::from_static(b"https://old.example/")).unwrap(),
            Stored::Link {
                url: Bytes::from_static(b"https://old.example/"),
                meta: None,
                version: 0
            }
        );
        let mut tomb = vec![TOMBSTONE_TAG];
        tomb.extend_from_slice(b"000000000000000a");
        assert_eq!(decode(Bytes::from(tomb)).unwrap(), Stored::Deleted(10));
        // Damage is an error, never a panic.
        for bad in [
            &b"\x01"[..],
            b"\x02zz",
            b"\x010000000000000001\x09\0\0\0ab",
            b"",
        ] {
            assert!(decode(Bytes::copy_from_slice(bad)).is_err(), "{bad:?}");
        }
    }

    fn server_error(text: &str) -> Value {
        let value = redis::parse_redis_value(format!("-{text}\r\n").as_bytes()).unwrap();
        assert!(matches!(value, Value::ServerError(_)), "{value:?}");
        value
    }

    #[test]
    fn a_refused_change_is_never_confirmed_by_the_wait_after_it() {
        for err in [
            "OOM command not allowed when used memory > 'maxmemory'.",
            "MISCONF Redis is configured to save RDB snapshots",
            "NOREPLICAS Not enough good replicas to write.",
            "READONLY You can't write against a read only replica.",
        ] {
            // WAIT counted a replica (it has the connection's earlier
            // writes), but the script failed.
            assert!(
                matches!(
                    check_change(&[server_error(err), Value::Int(1)], 1),
                    Change::Refused(_)
                ),
                "{err}"
            );
        }
        assert_eq!(
            check_change(&[Value::Int(3), Value::Int(1)], 1),
            Change::Confirmed(3)
        );
        assert_eq!(
            check_change(&[Value::Int(-1), Value::Int(1)], 1),
            Change::Gone
        );
        assert!(matches!(
            check_change(&[Value::Int(3), Value::Int(0)], 1),
            Change::Unconfirmed(_)
        ));
        assert!(matches!(check_change(&[], 0), Change::Refused(_)));
    }
}

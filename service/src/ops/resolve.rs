//! Resolve: a code's (or an alias's) URL, for a RESOLVE or a redirect,
//! judged against the link's options: expiry, click limit, disabled.

use std::io;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use shorty_protocol::ErrorCode;

use crate::clicks::LimitId;
use crate::keydir::{Ident, Location, Target};
use crate::link::{check_alias, Gone, LinkMeta};
use crate::log::record::{decode_record, Decoded, Record, ALIAS_KEY, RECORD_HEADER_LEN};
use crate::shard::{OpResult, RemoteRequest, Shard, UrlRead, URL_READ_LEN};
use crate::stats::ClickMeta;

use super::Step;

/// Looks `code` up for connection `conn` at `now`: from this core's cache
/// at once, else as an operation (a log read, joined by every other
/// request for the same key while it is in flight; or a remote GET).
///
/// `click` is `Some` for a GET redirect only (never a HEAD, a RESOLVE or
/// a preview): that request is a click, counted by the link's click limit
/// and the statistics at the one point its redirect is decided (see
/// `judge`); any other request only reads whether the limit is reached.
pub fn resolve(
    shard: &mut Shard,
    conn: u32,
    code: &[u8],
    now: Instant,
    click: Option<ClickMeta<'_>>,
) -> Step {
    shard.last_now = now;
    shard.sync_epoch();
    let click = click.filter(|c| !c.head);
    shard.expire_remote_cache(now);
    let Some(key) = shard.shared.codec.parse(code) else {
        return resolve_alias(shard, conn, code, click);
    };
    let cached = shard.cache.get(key);
    shard.metrics().cache(cached.is_some());
    if let Some(link) = cached {
        if let Some(meta) = link
            .meta
            .as_ref()
            .filter(|m| remote_limit(shard, m).is_some())
        {
            // A limited link of a remote store: its click is counted there.
            let op = shard.new_op(conn, key);
            park_click(shard, op, key, click);
            count_remotely(shard, op, Ident::Key(key), &link.url, meta);
            return Step::Pending(op);
        }
        return Step::Now(judge(
            shard,
            Ident::Key(key),
            key,
            link.url,
            link.meta.as_deref(),
            click.as_ref(),
        ));
    }
    let location = match &shard.local {
        None => None,
        Some(local) => match local.keydir.get(key) {
            Some(location) => Some(location),
            None => return Step::Now(OpResult::NotFound),
        },
    };
    let op = shard.new_op(conn, key);
    park_click(shard, op, key, click);
    match location {
        Some(location) => issue_read(shard, op, key, location),
        None => shard.remote.push_back(RemoteRequest::Get { op, key }),
    }
    Step::Pending(op)
}

/// An alias of the side map (not spelled like a code). Not cached: the
/// cache is keyed by code keys; the OS page cache serves its record.
fn resolve_alias(shard: &mut Shard, conn: u32, code: &[u8], click: Option<ClickMeta<'_>>) -> Step {
    let alias = std::str::from_utf8(code)
        .ok()
        .filter(|alias| check_alias(alias).is_ok());
    if shard.local.is_none() {
        // The remote store holds aliases under their own name.
        let Some(alias) = alias else {
            return Step::Now(OpResult::NotFound);
        };
        let op = shard.new_op(conn, ALIAS_KEY);
        park_click(shard, op, ALIAS_KEY, click);
        shard.remote.push_back(RemoteRequest::Read {
            op,
            code: alias.into(),
        });
        return Step::Pending(op);
    }
    let location = alias.and_then(|alias| {
        let keydir = &shard.local.as_ref()?.keydir;
        match keydir.lookup(Ident::Alias(alias))? {
            (Target::Live(loc), _) => Some(loc),
            (Target::Deleted { .. }, _) => None,
        }
    });
    let Some(location) = location else {
        return Step::Now(OpResult::NotFound);
    };
    let op = shard.new_op(conn, ALIAS_KEY);
    park_click(shard, op, ALIAS_KEY, click);
    issue_read(shard, op, ALIAS_KEY, location);
    Step::Pending(op)
}

/// Keeps a waiting GET's click with its operation, for when its URL comes:
/// whether the link has a limit is not known before its record is read.
fn park_click(shard: &mut Shard, op: u32, key: u64, click: Option<ClickMeta<'_>>) {
    if let (Some(click), Some(entry)) = (click, shard.ops.get_mut(op as usize)) {
        entry.click = Some(Box::new(click.to_owned_click(key)));
    }
}

/// Queues the read of the record at `location` for `op`. Reads of a code
/// key are single-flight; reads of side-map aliases (all [`ALIAS_KEY`])
/// are not joined.
pub(crate) fn issue_read(shard: &mut Shard, op: u32, key: u64, location: Location) {
    if key != ALIAS_KEY {
        match shard.reading.entry(key) {
            std::collections::hash_map::Entry::Occupied(mut waiting) => {
                return waiting.get_mut().push(op);
            }
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(Vec::new());
            }
        }
    }
    shard.reads.push_back(UrlRead {
        op,
        key,
        file: location.file,
        offset: u64::from(location.offset),
        len: URL_READ_LEN,
    });
}

/// What a request for a link gets, and the one place a click is counted.
///
/// A plain link redirects; a link with options is judged by the wall clock
/// (expiry), its disabled flag and its click limit. When the request is a
/// click (`click`: a GET redirect) and the outcome is a redirect, the
/// click is counted here, once, by both counters: the limit's exact count
/// (limited links only, through the
/// [`ClickLimiter`](crate::clicks::ClickLimiter) hook, which also decides
/// the outcome) and the statistics' ([`Shard::count_click`]). A 410, a
/// 404, a HEAD or a RESOLVE counts in neither.
pub(crate) fn judge(
    shard: &mut Shard,
    link: Ident<'_>,
    key: u64,
    url: Bytes,
    meta: Option<&LinkMeta>,
    click: Option<&ClickMeta<'_>>,
) -> OpResult {
    let result = outcome(shard, link, url, meta, click.is_some());
    if let (Some(click), OpResult::Url(_) | OpResult::Redirect { .. }) = (click, &result) {
        let now = shard.last_now;
        if let Some(key) = super::stats::stats_key(shard, key, meta) {
            shard.count_click(key, click, now);
        }
    }
    result
}

/// [`judge`]'s verdict; a click (`counts`) takes one of a limited link's
/// clicks, any other request only looks whether any are left.
fn outcome(
    shard: &Shard,
    link: Ident<'_>,
    url: Bytes,
    meta: Option<&LinkMeta>,
    counts: bool,
) -> OpResult {
    // A plain link (nearly all of them) is a redirect, no more to judge.
    let Some(meta) = meta else {
        return OpResult::Url(url);
    };
    let limiter = &shard.shared.clicks;
    // `gone` only sees the fixed conditions; the limit is checked (and a
    // click taken) atomically below.
    let reason = meta.gone(shard.now_ms(shard.last_now), 0).or_else(|| {
        let max = meta.max_clicks?;
        // Counted per life of the link: a re-created alias starts at 0.
        let link = LimitId {
            link,
            created_at_ms: meta.created_at_ms.unwrap_or(0),
        };
        let left = if counts {
            limiter.try_click(link, max)
        } else {
            limiter.clicks(link) < max
        };
        (!left).then_some(Gone::ClickLimit)
    });
    verdict(url, meta, reason)
}

/// A link with options that is not plain: its redirect, or why it is gone.
fn verdict(url: Bytes, meta: &LinkMeta, reason: Option<Gone>) -> OpResult {
    match reason {
        None => OpResult::Redirect {
            url,
            status: meta.redirect_status,
            forward_query: meta.forward_query,
        },
        Some(reason) => OpResult::Gone {
            reason,
            expired_url: match reason {
                Gone::Disabled => None,
                _ => meta.expired_url.clone(),
            },
        },
    }
}

/// With a remote store, the click limit of a link that is not gone for
/// another reason: its clicks are counted in the store, not on this node.
fn remote_limit(shard: &Shard, meta: &LinkMeta) -> Option<u64> {
    if shard.local.is_some() {
        return None;
    }
    let max = meta.max_clicks?;
    meta.gone(shard.now_ms(shard.last_now), 0)
        .is_none()
        .then_some(max)
}

/// With a remote store, a limited link's request (`op`, its click parked
/// in it, if a click) asks the store whether a click is left, and takes
/// it for a click: every node counts against one count (design §6), so
/// the link is answered with exactly `max_clicks` redirects whichever
/// nodes serve it. `false` (nothing asked) for a local store, an
/// unlimited link or one gone anyway.
pub(crate) fn count_remotely(
    shard: &mut Shard,
    op: u32,
    link: Ident<'_>,
    url: &Bytes,
    meta: &Arc<LinkMeta>,
) -> bool {
    let Some(max) = remote_limit(shard, meta) else {
        return false;
    };
    let Some(entry) = shard.ops.get_mut(op as usize) else {
        return false;
    };
    let take = entry.click.is_some();
    entry.then = Some(Box::new(crate::shard::Then::Count {
        url: url.clone(),
        meta: meta.clone(),
    }));
    let code: Box<str> = match link {
        Ident::Key(key) => {
            let mut buf = [0; crate::codes::MAX_CODE_LEN];
            crate::codes::format_code(key, &mut buf).into()
        }
        Ident::Alias(alias) => alias.into(),
    };
    shard.remote.push_back(RemoteRequest::Count {
        op,
        code,
        created_at_ms: meta.created_at_ms.unwrap_or(0),
        max,
        take,
        expires_at_ms: meta.expires_at_ms,
    });
    true
}

/// The store answered a [`count_remotely`]: a redirect (counted in the
/// statistics if it was a click) or 410.
pub(crate) fn remote_counted(shard: &mut Shard, op: u32, left: bool) {
    let Some(entry) = shard.ops.get_mut(op as usize) else {
        return;
    };
    let key = entry.key;
    let Some(crate::shard::Then::Count { url, meta }) = entry.then.take().map(|t| *t) else {
        return shard.complete(
            op,
            OpResult::Failed(ErrorCode::INTERNAL, "unexpected store answer".into()),
        );
    };
    let click = shard.take_click(op);
    let result = verdict(url, &meta, (!left).then_some(Gone::ClickLimit));
    if let (true, Some(click)) = (left, click) {
        let now = shard.last_now;
        // An alias's clicks are counted under its statistics key, not the
        // alias marker key its operation carries (review 9: a limited
        // alias on a remote store had no clicks in its statistics).
        if let Some(key) = super::stats::stats_key(shard, key, Some(&meta)) {
            shard.count_click(key, &click.meta(), now);
        }
    }
    shard.complete(op, result);
}

impl Shard {
    /// Reports a URL read: `bytes` from the record's offset (possibly fewer
    /// than asked, at the end of the file).
    pub fn read_done(&mut self, read: UrlRead, result: io::Result<Bytes>) {
        self.metrics().url_read();
        let waiting = |shard: &mut Self| {
            let mut ops = if read.key == ALIAS_KEY {
                Vec::new()
            } else {
                shard.reading.remove(&read.key).unwrap_or_default()
            };
            ops.push(read.op);
            ops
        };
        let fail = |shard: &mut Self, message: &'static str| {
            for op in waiting(shard) {
                super::lifecycle::abort(shard, op);
                shard.complete(op, OpResult::Failed(ErrorCode::INTERNAL, message.into()));
            }
        };
        let bytes = match result {
            Ok(bytes) => bytes,
            Err(err) => {
                if let Some(left_out) = self.read_failures.admit(self.last_now) {
                    let left_out = match left_out {
                        0 => String::new(),
                        n => format!(" ({n} more failed since the last such line: one a second)"),
                    };
                    tracing::error!(
                        file = read.file,
                        offset = read.offset,
                        "reading a URL failed: {err}{left_out}"
                    );
                }
                // Every request that joined this read fails with it, and
                // the key is no longer being read: the next RESOLVE tries
                // again.
                return fail(self, "the URL could not be read");
            }
        };
        let decoded = match decode_record(&bytes) {
            Decoded::Record(Record::Link(link), _) if link.key == read.key => {
                match LinkMeta::decode(link.options) {
                    Ok(meta) => Ok((link, meta)),
                    Err(_) => Err("its options are malformed"),
                }
            }
            Decoded::Incomplete if read.len == URL_READ_LEN && bytes.len() == URL_READ_LEN => {
                // A longer record: read it whole.
                let body = u32::from_le_bytes(bytes[..4].try_into().unwrap_or_default()) as usize;
                return self.reads.push_back(UrlRead {
                    len: RECORD_HEADER_LEN + body,
                    ..read
                });
            }
            Decoded::Record(..) => Err("it holds another key"),
            other => Err(other.reason()),
        };
        let (link, meta) = match decoded {
            Ok(found) => found,
            Err(reason) => {
                tracing::error!(
                    file = read.file,
                    offset = read.offset,
                    key = read.key,
                    "a stored link is damaged ({reason}); run `verify`",
                );
                return fail(self, "the stored URL is damaged");
            }
        };
        let url = bytes.slice_ref(link.url);
        let meta = (!meta.is_plain()).then(|| Arc::new(meta));
        let here = Location {
            file: read.file,
            offset: u32::try_from(read.offset).unwrap_or(u32::MAX),
        };
        // A read that raced an update or a delete of its code: requests
        // that joined it may have arrived after the change was
        // acknowledged, so none is answered (nor the cache filled) from the
        // old record. The code is read again where it lies now, or is gone.
        if read.key != ALIAS_KEY {
            let now_at = self.local.as_ref().map(|l| l.keydir.get(read.key));
            match now_at {
                Some(Some(at)) if at != here => {
                    return self.reads.push_back(UrlRead {
                        file: at.file,
                        offset: u64::from(at.offset),
                        len: URL_READ_LEN,
                        ..read
                    });
                }
                Some(None) => {
                    for op in waiting(self) {
                        super::lifecycle::abort(self, op);
                        self.complete(op, OpResult::NotFound);
                    }
                    return;
                }
                _ => self.cache.insert(read.key, link.url, meta.clone()),
            }
        }
        let alias = meta.as_ref().and_then(|m| m.alias.clone());
        let ident = match (&alias, read.key) {
            (Some(alias), ALIAS_KEY) => Ident::Alias(alias),
            _ => Ident::Key(read.key),
        };
        for op in waiting(self) {
            if super::lifecycle::after_read(self, op, &url, meta.as_deref()) {
                continue;
            }
            let click = self.take_click(op);
            let click = click.as_ref().map(|c| c.meta());
            let result = judge(
                self,
                ident,
                read.key,
                url.clone(),
                meta.as_deref(),
                click.as_ref(),
            );
            self.complete(op, result);
        }
    }
}

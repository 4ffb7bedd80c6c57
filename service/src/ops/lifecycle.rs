//! The lifecycle operations on the embedded log: create with options and
//! an alias, update, delete, info (issue 19).
//!
//! The entry points the fronts call (the JSON API, protocol v2's SHORTEN2,
//! UPDATE, DELETE, INFO) take a parsed request and a [`Principal`] and
//! return a [`Step`]; the outcome, once settled, is an [`OpResult`]:
//! `Link` (201/200), `Deleted` (204), or `Failed` with the status (403,
//! 404, 409, 422, 503…). Scope and owner checks happen here, once.
//!
//! **Order** (docs/round3-design.md §4). A mutation takes its version
//! under the key directory's lock ([`KeyDir::begin_mutation`],
//! [`KeyDir::claim`]), reads the current record (an update is a whole new
//! record, so it needs the old URL and options; a delete needs the owner
//! and the alias), writes its record with that version, and on durability
//! the log hand-off installs it unless a newer version already is. A
//! failed read or write releases the reservation.
//!
//! [`KeyDir::begin_mutation`]: crate::keydir::KeyDir::begin_mutation
//! [`KeyDir::claim`]: crate::keydir::KeyDir::claim

use std::borrow::Cow;
use std::time::Instant;

use bytes::Bytes;
use shorty_protocol::ErrorCode;

use crate::codes::MAX_CODE_LEN;
use crate::keydir::{Claim, Mutation, OwnedIdent};
use crate::link::{
    alias_home, check_alias, AliasHome, Field, LinkMeta, LinkPatch, Principal, CONFLICT,
};
use crate::log::record::{Link as LinkRecord, Tombstone, ALIAS_KEY, NO_ID};
use crate::output::OpId;
use crate::shard::{LinkView, OpEntry, OpResult, OpState, RemoteRequest, Shard, Then};

use super::resolve::issue_read;
use super::{log_failure_code, Step};

/// A create request, parsed by a front.
#[derive(Debug, Clone, Default)]
pub struct CreateRequest<'a> {
    /// The long URL.
    pub url: &'a [u8],
    /// A custom alias instead of a generated code.
    pub alias: Option<&'a str>,
    /// The options (`version`, `created_at_ms`, `owner_key_id` and `alias`
    /// are set by the operation, whatever the request says).
    pub options: LinkMeta,
}

fn refused(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Step {
    Step::refused(code, message)
}

/// Which key `code` names: a code's, else an alias of the side map.
fn ident_of(code: &[u8]) -> Option<OwnedIdent> {
    if let Some(key) = crate::codes::parse_code(code) {
        return Some(OwnedIdent::Key(key));
    }
    let alias = std::str::from_utf8(code).ok()?;
    check_alias(alias).ok()?;
    Some(OwnedIdent::Alias(alias.into()))
}

/// Whether `code` (a path under this server's public URL) names a link
/// of this server: a code or an alias, live, deleted or being created
/// (the first item of a bulk request, or another core's create in flight).
/// A URL that does is refused as a destination, since a link to a link of
/// ours could close a redirect loop (`a` → `/b`, then `b` → `/a`). The
/// remote store is not asked synchronously: there the core's URL cache is
/// the cheap evidence (ARCHITECTURE.md says what that leaves open).
pub(crate) fn names_a_link(shard: &Shard, code: &str) -> bool {
    match &shard.local {
        Some(local) => {
            ident_of(code.as_bytes()).is_some_and(|ident| local.keydir.names(ident.as_ident()))
        }
        None => {
            crate::codes::parse_code(code.as_bytes()).is_some_and(|key| shard.cache.contains(key))
        }
    }
}

fn record_key(ident: &OwnedIdent) -> u64 {
    match ident {
        OwnedIdent::Key(key) => *key,
        OwnedIdent::Alias(_) => ALIAS_KEY,
    }
}

/// The code a link is reached by.
fn code_text(ident: &OwnedIdent, meta: &LinkMeta) -> Box<str> {
    meta.alias.clone().unwrap_or_else(|| name_of(ident))
}

/// Appends `record` for `op`, registering what follows its durability.
/// On refusal the reservation is released and the op removed.
fn write(
    shard: &mut Shard,
    op: OpId,
    record: Record<'_>,
    ident: OwnedIdent,
    version: u64,
    outcome: OpResult,
) -> Result<(), Step> {
    write_counted(shard, op, record, ident, version, outcome, None)
}

/// [`write`]; `count`: the deleted link's click limit count to remove
/// with it from a remote store (its `created_at_ms`: one count per life).
fn write_counted(
    shard: &mut Shard,
    op: OpId,
    record: Record<'_>,
    ident: OwnedIdent,
    version: u64,
    outcome: OpResult,
    count: Option<u64>,
) -> Result<(), Step> {
    let Some(local) = shard.local.as_mut() else {
        return write_remote(shard, op, record, ident, version, outcome, count);
    };
    let appended = match record {
        Record::Link(link) => local.log.append(&link, u64::from(op)),
        Record::Tombstone(t) => local.log.append_tombstone(&t, u64::from(op)),
    };
    match appended {
        Ok(()) => {
            if let Some(entry) = shard.ops.get_mut(op as usize) {
                entry.then = Some(Box::new(Then::Written {
                    ident,
                    version,
                    outcome,
                }));
            }
            Ok(())
        }
        Err(failure) => {
            local.keydir.release(ident.as_ident(), version);
            Err(refused(log_failure_code(failure), failure.message()))
        }
    }
}

/// The remote store's half of [`write`]: the store's script checks the
/// link is live and writes the next version atomically (`WAIT`ed like a
/// SHORTEN); nothing is reserved here.
fn write_remote(
    shard: &mut Shard,
    op: OpId,
    record: Record<'_>,
    ident: OwnedIdent,
    version: u64,
    outcome: OpResult,
    count: Option<u64>,
) -> Result<(), Step> {
    let code = name_of(&ident);
    let request = match record {
        Record::Link(link) => {
            // The store keeps the version beside the options (its script
            // stamps it): the list goes without it.
            let mut meta = LinkMeta::decode(link.options)
                .map_err(|_| refused(ErrorCode::INTERNAL, "malformed options"))?;
            meta.version = 0;
            let mut options = Vec::with_capacity(meta.encoded_len());
            meta.encode(&mut options);
            RemoteRequest::Update {
                op,
                code,
                url: Bytes::copy_from_slice(link.url),
                options: options.into(),
                expected: version.saturating_sub(1),
            }
        }
        Record::Tombstone(_) => RemoteRequest::Delete {
            op,
            code,
            // A side-map alias comes back after its quarantine; a code
            // (generated, or an alias spelled like one) never does.
            quarantine_ms: match ident {
                OwnedIdent::Alias(_) => Some(
                    u64::try_from(shard.shared.settings.alias_quarantine.as_millis())
                        .unwrap_or(u64::MAX),
                ),
                OwnedIdent::Key(_) => None,
            },
            count,
        },
    };
    shard.remote.push_back(request);
    if let Some(entry) = shard.ops.get_mut(op as usize) {
        entry.then = Some(Box::new(Then::Written {
            ident,
            version,
            outcome,
        }));
    }
    Ok(())
}

/// The name a link has in a remote store: its code or alias.
fn name_of(ident: &OwnedIdent) -> Box<str> {
    match ident {
        OwnedIdent::Key(key) => {
            let mut buf = [0; MAX_CODE_LEN];
            crate::codes::format_code(*key, &mut buf).into()
        }
        OwnedIdent::Alias(alias) => alias.clone(),
    }
}

/// [`create`] with a remote store: `SET NX` of the alias's name (taken,
/// or deleted less than `--alias-quarantine` ago → 409, said by the
/// store), or a generated code the store picks as for a SHORTEN.
fn create_remote(
    shard: &mut Shard,
    conn: u32,
    alias: Option<&str>,
    url: &[u8],
    mut meta: LinkMeta,
) -> Step {
    let key = match alias {
        Some(alias) => {
            if let Err(err) = check_alias(alias) {
                return refused(err.error_code(), err.to_string());
            }
            meta.alias = Some(alias.into());
            match alias_home(alias) {
                AliasHome::Key(key) => key,
                AliasHome::Side => ALIAS_KEY,
            }
        }
        None => 0,
    };
    meta.version = 0;
    let mut options = Vec::with_capacity(meta.encoded_len());
    meta.encode(&mut options);
    let op = shard.new_op(conn, key);
    let view = OpResult::Link(Box::new(LinkView {
        code: alias.unwrap_or_default().into(),
        url: Bytes::copy_from_slice(url),
        meta,
        // A new link has no clicks (a generated code is never handed out
        // again, and an alias's statistics are named by its creation
        // time): nothing to ask the store.
        clicks: Some(Ok(crate::stats::StoredStats::default())),
    }));
    if let Some(entry) = shard.ops.get_mut(op as usize) {
        entry.then = Some(Box::new(Then::Written {
            ident: OwnedIdent::Key(key),
            version: 0,
            outcome: view,
        }));
    }
    shard.remote.push_back(RemoteRequest::Create {
        op,
        alias: alias.map(Into::into),
        url: Bytes::copy_from_slice(url),
        options: options.into(),
    });
    Step::Pending(op)
}

/// A remote store read a link for `op` (`meta` carries `version`): a
/// lifecycle operation carries on (its write takes the next version); a
/// redirect of an alias is judged.
pub(crate) fn remote_read(
    shard: &mut Shard,
    op: OpId,
    url: Bytes,
    meta: Option<LinkMeta>,
    version: u64,
) {
    let Some(entry) = shard.ops.get_mut(op as usize) else {
        return;
    };
    let key = entry.key;
    if let Some(Then::Update { version: v, .. } | Then::Delete { version: v, .. }) =
        entry.then.as_deref_mut()
    {
        *v = version + 1;
    }
    if after_read(shard, op, &url, meta.as_ref()) {
        return;
    }
    let meta = meta.filter(|m| !m.is_plain()).map(std::sync::Arc::new);
    if key != ALIAS_KEY {
        shard.cache.insert(key, &url, meta.clone());
    }
    let ident = match (&meta, key) {
        (Some(m), ALIAS_KEY) => match &m.alias {
            Some(alias) => crate::keydir::Ident::Alias(alias),
            None => crate::keydir::Ident::Key(key),
        },
        _ => crate::keydir::Ident::Key(key),
    };
    if let Some(meta) = &meta {
        if super::resolve::count_remotely(shard, op, ident, &url, meta) {
            return;
        }
    }
    let click = shard.take_click(op);
    let click = click.as_ref().map(|c| c.meta());
    let result = super::resolve::judge(shard, ident, key, url, meta.as_deref(), click.as_ref());
    shard.complete(op, result);
}

/// A remote store confirmed `op`'s write at `version` (under the
/// generated code `key`, for a create without alias): the operation is
/// answered, and this core's cache forgets the old link at once (other
/// nodes' within `--store-cache-ttl`).
pub(crate) fn remote_written(shard: &mut Shard, op: OpId, key: Option<u64>, version: u64) {
    let Some(entry) = shard.ops.get_mut(op as usize) else {
        return;
    };
    let old_key = entry.key;
    let then = entry.then.take().map(|t| *t);
    if old_key != ALIAS_KEY {
        shard.cache.remove(old_key);
    }
    let result = match then {
        Some(Then::Written { mut outcome, .. }) => {
            if let OpResult::Link(view) = &mut outcome {
                view.meta.version = version;
                if let (Some(key), None) = (key, &view.meta.alias) {
                    let mut buf = [0; MAX_CODE_LEN];
                    view.code = crate::codes::format_code(key, &mut buf).into();
                }
            }
            outcome
        }
        _ => match key {
            Some(key) => OpResult::Stored(key),
            None => OpResult::Failed(ErrorCode::INTERNAL, "unexpected store answer".into()),
        },
    };
    // An updated link's view carries its click totals.
    super::stats::complete_views(shard, op, result);
}

enum Record<'a> {
    Link(LinkRecord<'a>),
    Tombstone(Tombstone<'a>),
}

/// Creates a link with options, under a generated code or `request.alias`.
/// An alias taken (or being created) → 409; deleted less than
/// `--alias-quarantine` ago → 409; an alias spelled like a code lives in
/// the main key directory and the generator skips it.
pub fn create(
    shard: &mut Shard,
    conn: u32,
    request: CreateRequest<'_>,
    principal: Principal,
    now: Instant,
) -> Step {
    if !principal.may_create() {
        return refused(principal.refusal(), "this key may not create links");
    }
    let now_ms = shard.now_ms(now);
    let shared = shard.shared.clone();
    // The alias being claimed counts too: a link to itself is the
    // shortest loop.
    let url = match shared.policy.check(request.url, |code| {
        request.alias == Some(code) || names_a_link(shard, code)
    }) {
        Ok(url) => url,
        Err(err) => return refused(err.error_code(), err.to_string()),
    };
    if let Some(refusal) = super::create::blocked(&shared, url) {
        return refusal;
    }
    if let Err(err) = request.options.check(now_ms, &shared.policy) {
        return refused(err.error_code(), err.to_string());
    }
    // Visitors are sent to the expired-URL too: the blocklist judges it
    // as it judges the URL.
    if let Some(refusal) = request
        .options
        .expired_url
        .as_deref()
        .and_then(|expired| super::create::blocked(&shared, expired))
    {
        return refusal;
    }
    let mut meta = LinkMeta {
        created_at_ms: Some(now_ms),
        owner_key_id: principal.key_id,
        ..request.options
    };
    if shard.local.is_none() {
        return create_remote(shard, conn, request.alias, url.as_bytes(), meta);
    }
    let quarantine =
        u64::try_from(shared.settings.alias_quarantine.as_millis()).unwrap_or(u64::MAX);
    let (ident, id, version) = match request.alias {
        Some(alias) => {
            if let Err(err) = check_alias(alias) {
                return refused(err.error_code(), err.to_string());
            }
            let ident = match alias_home(alias) {
                AliasHome::Key(key) => OwnedIdent::Key(key),
                AliasHome::Side => OwnedIdent::Alias(alias.into()),
            };
            let Some(local) = shard.local.as_ref() else {
                return refused(ErrorCode::INTERNAL, "no local store");
            };
            let keydir = &local.keydir;
            // A code-spelled alias below the id floor names a code that
            // was handed out (or skipped because it was taken): if the
            // key directory has no trace of it, a merge forgot its
            // tombstone (`log::merge`), and it stays deleted for good.
            if let OwnedIdent::Key(key) = ident {
                let floor = local.ids.floor();
                if crate::log::merge::is_forgotten_code(&shared.codec, floor, keydir, key) {
                    // Deleted, or its id was spent on a SHORTEN that never
                    // became durable: nothing tells the two apart, and
                    // either way the code is never used again.
                    return refused(
                        CONFLICT,
                        "this code was already handed out by the generator (it may have been \
                         deleted since) and is never used again",
                    );
                }
            }
            // A code-spelled key that is deleted may have been a generated
            // code, which is never handed out again: only side-map aliases
            // come back after their quarantine.
            let quarantine = match ident {
                OwnedIdent::Key(_) => u64::MAX,
                OwnedIdent::Alias(_) => quarantine,
            };
            match keydir.claim(ident.as_ident(), now_ms, quarantine) {
                Ok(version) => {
                    meta.alias = Some(alias.into());
                    (ident, NO_ID, version)
                }
                Err(Claim::Taken) => return refused(CONFLICT, "this alias is taken"),
                // A code-spelled key's quarantine never ends (u64::MAX is
                // no time to print).
                Err(Claim::Quarantined { .. }) if matches!(ident, OwnedIdent::Key(_)) => {
                    return refused(
                        CONFLICT,
                        "this code was deleted and is never handed out again",
                    )
                }
                Err(Claim::Quarantined { until_ms }) => {
                    return refused(
                        CONFLICT,
                        format!(
                            "this alias was deleted and cannot be claimed again before \
                             {until_ms} (Unix ms)"
                        ),
                    )
                }
            }
        }
        None => {
            let Some(local) = shard.local.as_mut() else {
                return refused(ErrorCode::INTERNAL, "no local store");
            };
            let (id, key) = super::create::new_code(local, &shared.codec);
            (OwnedIdent::Key(key), id, 0)
        }
    };
    meta.version = version;
    let mut options = Vec::with_capacity(meta.encoded_len());
    meta.encode(&mut options);
    let key = record_key(&ident);
    let op = shard.ops.insert(OpEntry {
        conn,
        key,
        state: OpState::Waiting,
        then: None,
        click: None,
    }) as OpId;
    let view = OpResult::Link(Box::new(LinkView {
        code: code_text(&ident, &meta),
        url: Bytes::copy_from_slice(url.as_bytes()),
        meta,
        clicks: None,
    }));
    let record = Record::Link(LinkRecord {
        key,
        id,
        url: url.as_bytes(),
        options: &options,
    });
    match write(shard, op, record, ident, version, view) {
        Ok(()) => Step::Pending(op),
        Err(step) => {
            shard.ops.remove(op as usize);
            step
        }
    }
}

/// Starts a mutation of the link `code`: reserves its version and reads
/// its record; `then` runs once it is read.
pub(crate) fn begin(
    shard: &mut Shard,
    conn: u32,
    code: &[u8],
    then: impl FnOnce(OwnedIdent, u64) -> Then,
    mutation: bool,
) -> Step {
    let Some(ident) = ident_of(code) else {
        return Step::Now(OpResult::NotFound);
    };
    let Some(keydir) = shard.local.as_ref().map(|l| l.keydir.clone()) else {
        // The remote store: read the link; its version comes with it, and
        // the store's script orders the write (`remote_read`).
        let key = record_key(&ident);
        let code = name_of(&ident);
        let op = shard.new_op(conn, key);
        if let Some(entry) = shard.ops.get_mut(op as usize) {
            entry.then = Some(Box::new(then(ident, 0)));
        }
        shard.remote.push_back(RemoteRequest::Read { op, code });
        return Step::Pending(op);
    };
    let (location, version) = if mutation {
        match keydir.begin_mutation(ident.as_ident()) {
            Ok(found) => found,
            Err(Mutation::NotLive) => return Step::Now(OpResult::NotFound),
            Err(Mutation::Busy) => {
                return Step::refused(
                    CONFLICT,
                    "another change of this link is in flight: retry once it is answered",
                )
            }
        }
    } else {
        match keydir.lookup(ident.as_ident()) {
            Some((crate::keydir::Target::Live(loc), state)) => (loc, state.installed),
            _ => return Step::Now(OpResult::NotFound),
        }
    };
    let key = record_key(&ident);
    let op = shard.new_op(conn, key);
    if let Some(entry) = shard.ops.get_mut(op as usize) {
        entry.then = Some(Box::new(then(ident, version)));
    }
    issue_read(shard, op, key, location);
    Step::Pending(op)
}

/// Changes the link `code`: a new record with the patched URL and options
/// and the next version. 404 if it does not exist (or is deleted), 403 if
/// `principal` may not change it, 422 for a refused value.
pub fn update(
    shard: &mut Shard,
    conn: u32,
    code: &[u8],
    patch: LinkPatch,
    principal: Principal,
    now: Instant,
) -> Step {
    let now_ms = shard.now_ms(now);
    begin(
        shard,
        conn,
        code,
        |ident, version| Then::Update {
            ident,
            version,
            patch: Box::new(patch),
            principal,
            now_ms,
        },
        true,
    )
}

/// Deletes the link `code`: a tombstone; 404 everywhere afterwards, every
/// core and after a restart. A deleted generated code is never handed out
/// again; a deleted alias is quarantined.
pub fn delete(
    shard: &mut Shard,
    conn: u32,
    code: &[u8],
    principal: Principal,
    now: Instant,
) -> Step {
    let now_ms = shard.now_ms(now);
    begin(
        shard,
        conn,
        code,
        |ident, version| Then::Delete {
            ident,
            version,
            principal,
            now_ms,
        },
        true,
    )
}

/// The link `code`: URL and options.
pub fn info(shard: &mut Shard, conn: u32, code: &[u8], principal: Principal) -> Step {
    begin(shard, conn, code, |_, _| Then::Info { principal }, false)
}

/// A read for `op` failed: a mutation waiting for it gives its version
/// back.
pub(crate) fn abort(shard: &mut Shard, op: OpId) {
    let then = shard
        .ops
        .get_mut(op as usize)
        .and_then(|entry| entry.then.take());
    let (ident, version) = match then.map(|t| *t) {
        Some(Then::Update { ident, version, .. } | Then::Delete { ident, version, .. }) => {
            (ident, version)
        }
        _ => return,
    };
    if let Some(local) = &shard.local {
        local.keydir.release(ident.as_ident(), version);
    }
}

/// The current record of a lifecycle operation's link was read (`url`,
/// `meta`): carries the operation on. `false` if `op` is a plain
/// RESOLVE.
pub(crate) fn after_read(
    shard: &mut Shard,
    op: OpId,
    url: &Bytes,
    meta: Option<&LinkMeta>,
) -> bool {
    let Some(then) = shard
        .ops
        .get_mut(op as usize)
        .and_then(|entry| entry.then.take())
    else {
        return false;
    };
    let plain = LinkMeta::default();
    let meta = meta.unwrap_or(&plain);
    let result = match *then {
        Then::Info { principal } => {
            if principal.may_read(meta.owner_key_id) {
                let key = shard.ops.get(op as usize).map_or(0, |e| e.key);
                let ident = match &meta.alias {
                    Some(alias) if key == ALIAS_KEY => OwnedIdent::Alias(alias.clone()),
                    _ => OwnedIdent::Key(key),
                };
                OpResult::Link(Box::new(LinkView {
                    code: code_text(&ident, meta),
                    url: url.clone(),
                    meta: meta.clone(),
                    clicks: None,
                }))
            } else {
                OpResult::Failed(
                    principal.refusal(),
                    "this key may not read this link".into(),
                )
            }
        }
        Then::Stats { principal, query } => {
            let key = shard.ops.get(op as usize).map_or(0, |e| e.key);
            if shard.reads_stats_remotely() {
                // The store is asked; the core does not wait for it.
                match super::stats::ask_remote(shard, op, key, meta, principal, query) {
                    Some(refused) => refused,
                    None => return true,
                }
            } else {
                super::stats::answer(shard, key, meta, principal, query, None)
            }
        }
        Then::Update {
            ident,
            version,
            patch,
            principal,
            now_ms,
        } => match update_record(
            shard, op, ident, version, *patch, principal, now_ms, url, meta,
        ) {
            Ok(()) => return true,
            Err(result) => result,
        },
        Then::Delete {
            ident,
            version,
            principal,
            now_ms,
        } => {
            if !principal.may_change(meta.owner_key_id) {
                release(shard, &ident, version);
                OpResult::Failed(
                    principal.refusal(),
                    "this key may not delete this link".into(),
                )
            } else {
                let alias = meta.alias.as_deref().map(str::as_bytes);
                let record = Record::Tombstone(Tombstone {
                    key: record_key(&ident),
                    version,
                    deleted_at_ms: now_ms,
                    alias,
                });
                // Its click count goes with it (a remote store keeps it
                // beside the link, under its own name). Asked whether or
                // not the link is limited now: a limit an update removed
                // leaves its count behind (review 8: it stayed forever).
                let count = Some(meta.created_at_ms.unwrap_or(0));
                match write_counted(shard, op, record, ident, version, OpResult::Deleted, count) {
                    Ok(()) => return true,
                    Err(Step::Now(result)) => result,
                    Err(Step::Pending(_)) => return true,
                }
            }
        }
        Then::Written { .. }
        | Then::Count { .. }
        | Then::StatsRead { .. }
        | Then::Totals { .. } => return false,
    };
    // INFO's link carries its click totals (read first with a remote
    // store).
    super::stats::complete_views(shard, op, result);
    true
}

fn release(shard: &Shard, ident: &OwnedIdent, version: u64) {
    if let Some(local) = &shard.local {
        local.keydir.release(ident.as_ident(), version);
    }
}

#[allow(clippy::too_many_arguments)] // one operation's whole context
fn update_record(
    shard: &mut Shard,
    op: OpId,
    ident: OwnedIdent,
    version: u64,
    patch: LinkPatch,
    principal: Principal,
    now_ms: u64,
    url: &Bytes,
    meta: &LinkMeta,
) -> Result<(), OpResult> {
    let fail = |shard: &Shard, ident: &OwnedIdent, code: ErrorCode, message: String| {
        release(shard, ident, version);
        Err(OpResult::Failed(code, message.into()))
    };
    if !principal.may_change(meta.owner_key_id) {
        return fail(
            shard,
            &ident,
            principal.refusal(),
            "this key may not change this link".into(),
        );
    }
    let shared = shard.shared.clone();
    let new_url = match &patch.url {
        None => url.clone(),
        Some(new) => match shared
            .policy
            .check(new.as_bytes(), |code| names_a_link(shard, code))
        {
            Ok(new) => match super::create::blocked(&shared, new) {
                Some(Step::Now(OpResult::Failed(code, message))) => {
                    return fail(shard, &ident, code, message.into_owned())
                }
                _ => Bytes::copy_from_slice(new.as_bytes()),
            },
            Err(err) => return fail(shard, &ident, err.error_code(), err.to_string()),
        },
    };
    // Visitors are sent to the expired-URL too: the blocklist judges it.
    if let Field::Set(expired) = &patch.expired_url {
        if let Some(Step::Now(OpResult::Failed(code, message))) =
            super::create::blocked(&shared, expired)
        {
            return fail(shard, &ident, code, message.into_owned());
        }
    }
    let new_meta = match patch.apply(meta, version, now_ms, &shared.policy) {
        Ok(m) => m,
        Err(err) => return fail(shard, &ident, err.error_code(), err.to_string()),
    };
    let mut options = Vec::with_capacity(new_meta.encoded_len());
    new_meta.encode(&mut options);
    let view = OpResult::Link(Box::new(LinkView {
        code: code_text(&ident, &new_meta),
        url: new_url.clone(),
        meta: new_meta,
        clicks: None,
    }));
    let record = Record::Link(LinkRecord {
        key: record_key(&ident),
        id: NO_ID,
        url: &new_url,
        options: &options,
    });
    match write(shard, op, record, ident, version, view) {
        Ok(()) => Ok(()),
        Err(Step::Now(result)) => Err(result),
        Err(Step::Pending(_)) => Ok(()),
    }
}

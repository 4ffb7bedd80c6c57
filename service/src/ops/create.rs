//! Create: a new link for a URL under a generated code.

use bytes::Bytes;

use crate::codes::{Codec, KEYS_AHEAD};
use crate::log::record::Link as LinkRecord;
use crate::shard::{LocalShard, OpEntry, OpState, RemoteRequest, Shard};

use super::{log_failure_code, Step};

/// Shortens `url` for connection `conn`: checks it against the URL policy,
/// takes a free code and appends its record (or hands it to the remote
/// store). [`Step::Pending`] until the record is durable.
pub fn shorten(shard: &mut Shard, conn: u32, url: &[u8]) -> Step {
    let shared = shard.shared.clone();
    let checked = shared
        .policy
        .check(url, |code| super::lifecycle::names_a_link(shard, code));
    let url = match checked {
        Ok(url) => url,
        Err(err) => return Step::refused(err.error_code(), err.to_string()),
    };
    if let Some(refusal) = blocked(&shared, url) {
        return refusal;
    }
    let Some(local) = shard.local.as_mut() else {
        let op = shard.new_op(conn, 0);
        shard.remote.push_back(RemoteRequest::Put {
            op,
            url: Bytes::copy_from_slice(url.as_bytes()),
        });
        return Step::Pending(op);
    };
    let (id, key) = new_code(local, &shared.codec);
    let op = shard.ops.insert(OpEntry {
        conn,
        key,
        state: OpState::Waiting,
        then: None,
        click: None,
    }) as crate::output::OpId;
    let link = LinkRecord {
        key,
        id,
        url: url.as_bytes(),
        options: &[],
    };
    match local.log.append(&link, u64::from(op)) {
        Ok(()) => Step::Pending(op),
        Err(failure) => {
            // Disk full, busy or broken: refused now, in its place.
            shard.ops.remove(op as usize);
            Step::refused(log_failure_code(failure), failure.message())
        }
    }
}

/// A refusal (403 naming the rule) when `--blocklist` blocks `url`'s
/// destination; every creation path asks it.
pub(crate) fn blocked(shared: &crate::shard::Shared, url: &str) -> Option<Step> {
    let list = shared.blocklist.current();
    let rule = list.blocks(url)?;
    Some(Step::refused(
        shorty_protocol::ErrorCode::FORBIDDEN,
        format!(
            "destination blocked by rule `{}` (line {} of --blocklist)",
            rule.text, rule.line
        ),
    ))
}

/// The next free generated code of this core: `(id, key)`. An imported
/// link or an alias may already hold the code an id maps to, a deleted
/// link's tombstone keeps its code forever, and a few codes are reserved
/// words: such ids are skipped. The key directory is asked for every new
/// id, whatever the data directory's files say: a lookup costs far less
/// than the record's write, and a code's owner must never depend on a
/// marker file an operator can lose (issue 18, defect 12).
///
/// Each call also prefetches the slot of the id [`KEYS_AHEAD`] calls
/// later, so that id's lookup finds its slot in the cache (issue 23).
pub(crate) fn new_code(local: &mut LocalShard, codec: &Codec) -> (u64, u64) {
    loop {
        let id = local.ids.next_id();
        // Read before `compute` below reuses its place in the ring.
        let key = local.ahead.key(codec, id);
        if let Some(later) = local.ids.peek(KEYS_AHEAD as u64 - 1) {
            if let Some(later) = local.ahead.compute(codec, later) {
                local.keydir.prefetch(later);
            }
        }
        let Some(key) = key else {
            continue;
        };
        if !local.keydir.contains(key) {
            return (id, key);
        }
    }
}

//! Resolve: a code's URL, for a RESOLVE or a redirect.

use crate::keydir::Location;
use crate::shard::{OpResult, RemoteRequest, Shard, UrlRead, URL_READ_LEN};

use super::Step;

/// Looks `code` up for connection `conn`: from this core's cache at once,
/// else as an operation (a log read, joined by every other request for the
/// same key while it is in flight; or a remote GET).
pub fn resolve(shard: &mut Shard, conn: u32, code: &[u8]) -> Step {
    let Some(key) = shard.shared.codec.parse(code) else {
        return Step::Now(OpResult::NotFound);
    };
    let cached = shard.cache.get(key);
    shard.metrics().cache(cached.is_some());
    if let Some(url) = cached {
        return Step::Now(OpResult::Url(url));
    }
    let location = match &shard.local {
        None => None,
        Some(local) => match local.keydir.get(key) {
            Some(location) => Some(location),
            None => return Step::Now(OpResult::NotFound),
        },
    };
    let op = shard.new_op(conn, key);
    match location {
        Some(Location { file, offset }) => {
            // Single flight: a read of this key already in flight answers
            // this request too.
            match shard.reading.entry(key) {
                std::collections::hash_map::Entry::Occupied(mut waiting) => {
                    waiting.get_mut().push(op)
                }
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert(Vec::new());
                    shard.reads.push_back(UrlRead {
                        op,
                        key,
                        file,
                        offset: u64::from(offset),
                        len: URL_READ_LEN,
                    });
                }
            }
        }
        None => shard.remote.push_back(RemoteRequest::Get { op, key }),
    }
    Step::Pending(op)
}

//! The durable log: Bitcask-style append-only segments with hint files.
//!
//! - [`record`]: the on-disk format (preamble, links, commit markers,
//!   seals) and its one decoder.
//! - [`writer`]: one core's group commit, rolls, seals and disk-full
//!   repair, sans-IO.
//! - [`scan`]: reading a segment back and the recovery rule (what is cut,
//!   what is refused).
//! - [`hint`]: the per-segment hint files that make restarts fast.
//! - [`recovery`]: recovering one segment at start (hint or scan, cut,
//!   seal), over an abstract file interface.
//! - [`segments`]: the table of segment files and their names.
//! - [`merge`]: Bitcask's merge: which sealed segments to rewrite, the
//!   rewrite, and settling a merge a crash interrupted.
//! - [`direct`]: the block writes of an O_DIRECT append (glommio's).
//!
//! Each core writes its own segments, so no two threads ever write the same
//! file; a run never appends to a segment of an earlier run.

pub mod direct;
pub mod hint;
pub mod merge;
pub mod record;
pub mod recovery;
pub mod scan;
pub mod segments;
pub mod tlv;
pub mod writer;

/// The file system is out of space or quota (ENOSPC, EDQUOT): the one
/// failure the log rides out (new links refused, the rest served) rather
/// than stopping for.
pub fn is_disk_full(err: &std::io::Error) -> bool {
    matches!(
        err.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}

pub use writer::{
    IoResult, LogConfig, LogFailure, LogIo, LogState, LogWriter, Repair, Settled, SyncPolicy,
    Token, WriteBatch, VOUCH_DELAY,
};

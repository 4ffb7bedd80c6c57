//! Merge (Bitcask's compaction): rewrite sealed segments that hold mostly
//! dead records into new segments holding only the live ones, then retire
//! the old files. Sans-IO: the file operations go through [`MergeFiles`],
//! implemented by the runtime with `std::fs` (paced, off the serving
//! cores) and by the tests with a model that crashes at any step.
//!
//! **Dead and live.** A record is *live* when the key directory maps its
//! key to exactly this record's place (segment index, offset); every other
//! byte of a sealed segment is *dead*: link records whose key has moved on
//! (a later record of the key, written by an update) or is gone (a
//! delete), commit markers, the seal. [`Liveness`] is the one question the
//! merge asks; [`KeyDir`] answers it for what exists today.
//!
//! **Tombstones and expiry** ([`Liveness`] for [`KeyDir`]):
//! - A *tombstone* (kind 4: key, version, deleted-at) is live while the key
//!   directory holds it: `Deleted` in its segment, at its version. One
//!   whose key moved on (an alias claimed again after its quarantine: a
//!   higher version) is dead like a superseded link. One in force is
//!   carried forward (copied verbatim, 34 bytes plus the alias) unless it
//!   can be *forgotten* (below).
//! - **Forgetting a tombstone** ([`run_merge_forgetting`]). Two questions,
//!   both must say yes:
//!   1. *Does the lifecycle still need it?* ([`Forgetting`],
//!      [`LifecycleForgetting`]) A side-map alias's tombstone holds its
//!      quarantine: needed until `deleted_at + --alias-quarantine`. A
//!      code's tombstone keeps the code from being handed out again:
//!      needed while an allocator may still reach its id
//!      ([`IdSpace::floor`](crate::codes::IdSpace::floor), the lowest id
//!      any core has still to count through). Below the floor the
//!      generator never produces it again (and `STATE`'s high-water mark
//!      keeps it so after a restart), and a create of a code-spelled alias
//!      below the floor that the key directory does not know is refused as
//!      a deleted code (`ops::lifecycle`).
//!   2. *Can an older record of its key survive outside this merge's
//!      output?* If one could, a restart would load it with no tombstone
//!      above it: the link would come back. The merge proves "no" itself
//!      (`older_records`): every candidate tombstone was seen in force, so
//!      installed, before the merge reads `barrier`, the segment table's
//!      next number. A mutation begins only once the previous one of its
//!      key is settled, so every older record of the key was durable
//!      before the tombstone was even written: in a segment numbered below
//!      the barrier (any core's, sealed or still being written: segment
//!      numbers say nothing about age across cores), or in this merge's
//!      own output (a link copied while in force, deleted before the merge
//!      reached the tombstone). Segments from the barrier on hold only
//!      newer records (the cores write new versions; a merge copies only
//!      records in force). So the merge reads the hint (or, unsealed, the
//!      records written so far) of every other segment below the barrier
//!      and its own copies; a tombstone whose key appears in none is left
//!      out, any other is carried forward. An unreadable segment keeps
//!      them all.
//!
//!   Crash and recovery: the output without the tombstone replaces the
//!   inputs only at the commit point, atomically for recovery
//!   ([`finish_interrupted`] rolls forward or back before any segment is
//!   loaded), and the inputs hold the only older records, so no restart
//!   ever sees an older record without its tombstone. The key directory
//!   forgets the key after the commit ([`Liveness::forget`]), only if it
//!   still holds that tombstone with no mutation in flight; a claim after
//!   that starts at version 1, and nothing of an older version is left.
//!   A segment moved aside may be moved back: while a hint, or the
//!   `.damaged` marker a refused start leaves beside a segment that has
//!   none ([`damaged_file_name`](crate::log::segments::damaged_file_name)),
//!   has no segment, nothing is forgotten. Before its commit point the
//!   merge records the tombstones it drops ([`forgotten_file_name`]): the
//!   only trace left that those links were deleted, which an import asks.
//!   **Restoring files from a backup** can: an input segment copied
//!   before the merge and put back after it brings back the links its
//!   forgotten tombstones deleted. Restore a whole directory of one point
//!   in time, as the README says, never merged-away segments into a newer
//!   one.
//! - An *expired* link (or one past its click limit, or disabled) is kept
//!   live, not reclaimed: it must keep answering 410 (or redirect to its
//!   expired-URL) and its code must never be reused, so dropping it would
//!   need a record in its place that says "gone", which is what it already
//!   is, for a saving of its URL's bytes only; an update may also extend
//!   it. Its superseded versions are dead and reclaimed like any other.
//! - Recovery applies "the highest version of a key wins", so a merged
//!   copy that lost a race (the key was updated after the merge read it:
//!   [`Liveness::moved`] refused the move) is simply an older version; the
//!   same version with the same bytes in two segments (a merge's copy
//!   beside its source) is loaded once, from the later segment
//!   (`runtime::datadir`).
//!
//! **Crash safety.** One merge at a time, in this order:
//! 1. each output is written whole (records copied verbatim, seal) under a
//!    temporary name, `<segment>.merging`, and synced, as soon as it is
//!    full (the merge holds one input and one output in memory): a crash
//!    leaves files recovery deletes ([`finish_interrupted`]), a failure
//!    removes them at once;
//! 2. the manifest [`MANIFEST_FILE`] naming the inputs and the outputs is
//!    written atomically (the commit point);
//! 3. the outputs are renamed to their segment names (the directory synced),
//!    their hints written;
//! 4. each moved key's place in the key directory is swapped (only if it
//!    still points at the old record);
//! 5. the caller waits until no read can still hold an input's
//!    [`FileIdx`] (a read looked the key up before the swap);
//! 6. the inputs are emptied (a core's cached descriptor would otherwise
//!    hold their blocks) and removed with their hints, then the manifest.
//!
//! At start, before any segment is loaded, [`finish_interrupted`] rolls a
//! committed merge forward (renames what is left, removes the inputs) and
//! discards an uncommitted one, so recovery never sees one link in two
//! places. New segments are numbered by the segment table, past the
//! high-water mark: a number is never reused.

use std::collections::HashSet;
use std::io;

use crate::keydir::{Ident, KeyDir, OwnedIdent, Target, TOMBSTONE};
use crate::log::hint::{decode_hint, encode_hint, hint_file_name, HintEntry};
use crate::log::record::{
    decode_record, encode_preamble, encode_seal, Decoded, Seal, NO_ID, PREAMBLE_LEN, SEAL_LEN,
    TOMBSTONE_LEN,
};
use crate::log::recovery::{seal_at_end, RecoveryFiles};
use crate::log::scan::{scan_segment, ScanError, SegmentEnd};
use crate::log::segments::{
    parse_damaged_file_name, parse_hint_file_name, parse_segment_file_name, segment_file_name,
    FileIdx, SegmentRef, SegmentTable,
};

/// The manifest of a merge in progress: present from its commit point to
/// its end.
pub const MANIFEST_FILE: &str = "MERGE";

/// The suffix of a merge output not yet committed.
pub const MERGING_SUFFIX: &str = ".merging";

/// The default `--merge-threshold`: merge a segment once half its bytes
/// are dead.
pub const DEFAULT_THRESHOLD: f64 = 0.5;

const MANIFEST_MAGIC: [u8; 8] = *b"SHORTYMG";

/// The temporary name of merge output `number`.
pub fn merging_file_name(number: u64) -> String {
    format!("{}{MERGING_SUFFIX}", segment_file_name(number))
}

/// What the merge asks about each keyed record (a link's or a
/// tombstone's, named by its hint entry). See the module doc for the rule.
pub trait Liveness {
    /// `true` when `entry`, lying in segment `file`, is the record in force
    /// for its key: it is carried forward.
    fn is_live(&self, entry: &HintEntry, file: FileIdx) -> bool;
    /// Points `entry`'s key at its copy (`to`, in segment `to_file`) if it
    /// still holds `entry` in `from_file`; `false` (the copy is then dead)
    /// when a concurrent mutation won.
    fn moved(
        &self,
        entry: &HintEntry,
        from_file: FileIdx,
        to: &HintEntry,
        to_file: FileIdx,
    ) -> bool;
    /// The merge left tombstone `entry` (in force in segment `file`) out
    /// of its output and committed: forgets its key if it still holds that
    /// tombstone. Called only by [`run_merge_forgetting`].
    fn forget(&self, entry: &HintEntry, file: FileIdx) -> bool {
        let _ = (entry, file);
        false
    }
}

/// Which tombstones in force the lifecycle no longer needs (see the
/// module doc, "Forgetting a tombstone"): the merge leaves such a one out
/// only once it has proved that no older record of its key survives
/// outside its output.
pub trait Forgetting {
    /// `true` when tombstone `entry` need not be kept: its alias's
    /// quarantine is over, or its code can never be handed out again.
    fn may_forget(&self, entry: &HintEntry) -> bool;
}

/// Whether generated-code space `key` names a code this directory handed
/// out (or skipped) that the key directory has no trace of: its id is
/// below `id_floor` ([`IdSpace::floor`](crate::codes::IdSpace::floor)).
/// A merge may have forgotten it, so a create of it (a code-spelled alias)
/// is refused. Import asks the merges' own record instead
/// ([`forgotten_file_name`]): the same test also holds for a code lost
/// with a segment moved aside, which an import must bring back.
pub fn is_forgotten_code(
    codec: &crate::codes::Codec,
    id_floor: u64,
    keydir: &KeyDir,
    key: u64,
) -> bool {
    codec.id_of(key) < id_floor && !keydir.names(Ident::Key(key))
}

/// The file in which the merge whose first input was segment `number`
/// names the tombstones it forgot (their hint entries: key or alias,
/// version, deleted-at), written and synced before its commit point.
///
/// Why a file: once a tombstone is forgotten, nothing in the key directory
/// or the segments says the link was deleted, and "its id is below the
/// floor and the key directory does not know it" ([`is_forgotten_code`])
/// is also what a code lost with a damaged segment, or made after the
/// backup a directory was restored from, looks like. An import must bring
/// those back (the README's remedies) and never a deleted one (review 6),
/// so it asks these files. They cost 12 bytes (plus the alias) per
/// forgotten tombstone on disk and nothing in memory; a backup copies them
/// with the hints.
pub fn forgotten_file_name(number: u64) -> String {
    format!("{number:020}{FORGOTTEN_SUFFIX}")
}

/// The suffix of [`forgotten_file_name`].
pub const FORGOTTEN_SUFFIX: &str = ".forgotten";

/// The number in a [`forgotten_file_name`], if `name` is one.
pub fn parse_forgotten_file_name(name: &str) -> Option<u64> {
    crate::log::segments::parse_numbered(name, FORGOTTEN_SUFFIX)
}

/// Encodes [`forgotten_file_name`]`(number)`: the hint format (magic,
/// version, checksum), its seal empty but for the count of entries.
pub fn encode_forgotten<'e>(
    number: u64,
    entries: impl IntoIterator<Item = &'e HintEntry>,
) -> Vec<u8> {
    let entries: Vec<&HintEntry> = entries.into_iter().collect();
    let seal = Seal {
        data_len: 0,
        crc: 0,
        links: entries.len() as u64,
        max_id: 0,
    };
    let mut bytes = Vec::new();
    encode_hint(number, &seal, entries, &mut bytes);
    bytes
}

/// The tombstones a [`forgotten_file_name`]`(number)` file names.
///
/// # Errors
/// The file is damaged or is not that file.
pub fn decode_forgotten(
    bytes: &[u8],
    number: u64,
) -> Result<impl Iterator<Item = HintEntry> + '_, crate::log::hint::HintError> {
    let seal = crate::log::hint::hint_seal(bytes, number)
        .filter(|seal| seal.data_len == 0)
        .ok_or(crate::log::hint::HintError::BadHeader)?;
    decode_hint(bytes, number, &seal)
}

/// Keeps every tombstone in force ([`run_merge`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct KeepTombstones;

impl Forgetting for KeepTombstones {
    fn may_forget(&self, _: &HintEntry) -> bool {
        false
    }
}

/// The lifecycle's rule for [`Forgetting`] (module doc): a side-map
/// alias's tombstone once its quarantine is over; a code's once no
/// allocator can hand its id out again (below [`IdSpace::floor`]: a
/// create of a code-spelled alias is refused there too, so the code is
/// never taken again).
///
/// [`IdSpace::floor`]: crate::codes::IdSpace::floor
#[derive(Debug, Clone)]
pub struct LifecycleForgetting {
    /// Turns a code's key back into its id.
    pub codec: crate::codes::Codec,
    /// [`IdSpace::floor`](crate::codes::IdSpace::floor) when the merge
    /// began (it only rises).
    pub id_floor: u64,
    /// The time now (Unix ms).
    pub now_ms: u64,
    /// `--alias-quarantine` in ms.
    pub quarantine_ms: u64,
}

impl Forgetting for LifecycleForgetting {
    fn may_forget(&self, entry: &HintEntry) -> bool {
        match entry.ident() {
            Ident::Alias(_) => {
                self.now_ms >= entry.deleted_at_ms.saturating_add(self.quarantine_ms)
            }
            Ident::Key(key) => self.codec.id_of(key) < self.id_floor,
        }
    }
}

impl Liveness for KeyDir {
    fn is_live(&self, entry: &HintEntry, file: FileIdx) -> bool {
        self.lookup(entry.ident())
            .is_some_and(|(target, state)| match target {
                // A link's place names one record.
                Target::Live(_) => target == entry.target(file),
                // A tombstone's names its segment only: the version tells
                // two deletes of one alias in one segment apart.
                Target::Deleted { .. } => {
                    target == entry.target(file) && state.installed == entry.version
                }
            })
    }

    fn moved(
        &self,
        entry: &HintEntry,
        from_file: FileIdx,
        to: &HintEntry,
        to_file: FileIdx,
    ) -> bool {
        self.replace(entry.ident(), entry.target(from_file), to.target(to_file))
    }

    fn forget(&self, entry: &HintEntry, file: FileIdx) -> bool {
        KeyDir::forget(self, entry.ident(), entry.target(file), entry.version)
    }
}

/// How much of a sealed segment is live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// The segment.
    pub number: u64,
    /// Its index in the segment table.
    pub idx: FileIdx,
    /// The file's length.
    pub bytes: u64,
    /// Bytes of live records.
    pub live: u64,
}

impl Usage {
    /// Bytes a merge would give back: all but the live records and the
    /// preamble and seal every segment has.
    pub fn dead(&self) -> u64 {
        self.bytes
            .saturating_sub(self.live)
            .saturating_sub((PREAMBLE_LEN + SEAL_LEN) as u64)
    }

    /// Dead bytes over the file's length.
    pub fn dead_ratio(&self) -> f64 {
        if self.bytes == 0 {
            0.0
        } else {
            self.dead() as f64 / self.bytes as f64
        }
    }
}

/// Bytes of the records a merge would copy if all were live (links, and
/// tombstones once they exist) in a whole segment's `bytes`; `None` when
/// it is not a sealed segment `number`. Computed once per sealed segment
/// (it never changes): what tells the commit markers' bytes apart.
pub fn record_bytes(bytes: &[u8], number: u64) -> Option<u64> {
    let mut total = 0u64;
    let scan = scan_segment(bytes, number, |_, offset| {
        if let Some(Decoded::Record(_, len)) = bytes.get(offset as usize..).map(decode_record) {
            total += len as u64;
        }
    })
    .ok()?;
    matches!(scan.end, SegmentEnd::Sealed { .. }).then_some(total)
}

/// The usage of sealed segment `number` (at `idx`, `bytes` long, sealed
/// with `seal`, holding `record_bytes` of records: [`record_bytes`]) from
/// its hint's entries (key, offset) in offset order. Only the hint is read
/// (12 bytes a link), so a record's size is taken as the distance to the
/// next entry, less its share of the commit markers between batches: exact
/// when every record or none is live, and for a merged segment (it has no
/// markers).
pub fn usage_from_hint(
    number: u64,
    idx: FileIdx,
    bytes: u64,
    seal: &Seal,
    record_bytes: u64,
    entries: impl IntoIterator<Item = HintEntry>,
    live: &impl Liveness,
) -> Usage {
    usage_forgetting(
        number,
        idx,
        bytes,
        seal,
        record_bytes,
        entries,
        live,
        &KeepTombstones,
    )
}

/// As [`usage_from_hint`], a tombstone in force that `forgetting` would
/// let go counted as dead (a merge drops it if nothing older of its key
/// is left elsewhere, else carries it forward once more).
#[allow(clippy::too_many_arguments)]
pub fn usage_forgetting(
    number: u64,
    idx: FileIdx,
    bytes: u64,
    seal: &Seal,
    record_bytes: u64,
    entries: impl IntoIterator<Item = HintEntry>,
    live: &impl Liveness,
    forgetting: &impl Forgetting,
) -> Usage {
    let mut spans = 0u64;
    // Tombstones have no offset in a hint: they lie inside the span of the
    // link entry before them, so that span is counted without their bytes
    // and each live one adds its own (exact: its length is known).
    let mut tombstones = 0u64;
    let mut prev: Option<(HintEntry, u64)> = None;
    let mut count = |prev: Option<(HintEntry, u64)>, end: u64| {
        if let Some((entry, inner)) = prev {
            if live.is_live(&entry, idx) {
                spans += end.saturating_sub(u64::from(entry.offset) + inner);
            }
        }
    };
    for entry in entries {
        if entry.is_tombstone() {
            let len = (TOMBSTONE_LEN + entry.alias.as_deref().map_or(0, str::len)) as u64;
            if live.is_live(&entry, idx) && !forgetting.may_forget(&entry) {
                tombstones += len;
            }
            if let Some((_, inner)) = &mut prev {
                *inner += len;
            }
            continue;
        }
        count(prev.take(), u64::from(entry.offset));
        prev = Some((entry, 0));
    }
    count(prev, seal.data_len);
    // The spans from the first record to the seal hold every record and
    // every marker after the first batch.
    let all_spans = seal.data_len.saturating_sub(PREAMBLE_LEN as u64).max(1);
    let live = u128::from(spans) * u128::from(record_bytes.min(all_spans)) / u128::from(all_spans);
    Usage {
        number,
        idx,
        bytes,
        live: live as u64 + tombstones,
    }
}

/// The segments worth merging: those whose dead share is above
/// `threshold` (0.0 to 1.0), most dead bytes first, up to `max_bytes` of
/// input (at least one).
pub fn plan(usages: &[Usage], threshold: f64, max_bytes: u64) -> Vec<Usage> {
    let mut picked: Vec<Usage> = usages
        .iter()
        .filter(|u| u.dead() > 0 && u.dead_ratio() > threshold)
        .copied()
        .collect();
    picked.sort_by_key(|u| std::cmp::Reverse(u.dead()));
    let mut total = 0u64;
    picked
        .into_iter()
        .take_while(|u| {
            let first = total == 0;
            total = total.saturating_add(u.bytes);
            first || total <= max_bytes
        })
        .collect()
}

/// The manifest: which segments a committed merge replaces with which.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Manifest {
    /// The segments merged (removed at the end).
    pub inputs: Vec<u64>,
    /// The segments written (renamed into place).
    pub outputs: Vec<u64>,
}

impl Manifest {
    /// Its bytes: magic, format `u16` (= 1), 6 zero bytes, input count
    /// `u32`, output count `u32`, the numbers `u64`, CRC32C.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(28 + 8 * (self.inputs.len() + self.outputs.len()));
        out.extend_from_slice(&MANIFEST_MAGIC);
        out.extend_from_slice(&1u16.to_le_bytes());
        out.extend_from_slice(&[0; 6]);
        out.extend_from_slice(&(self.inputs.len() as u32).to_le_bytes());
        out.extend_from_slice(&(self.outputs.len() as u32).to_le_bytes());
        for n in self.inputs.iter().chain(&self.outputs) {
            out.extend_from_slice(&n.to_le_bytes());
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Reads a manifest; `None` unless it is whole and intact.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let (body, crc) = bytes.split_at_checked(bytes.len().checked_sub(4)?)?;
        if body.len() < 24
            || body[..8] != MANIFEST_MAGIC
            || body[8..10] != [1, 0]
            || crc32c::crc32c(body).to_le_bytes() != crc
        {
            return None;
        }
        let u32_at =
            |at: usize| u32::from_le_bytes(body[at..at + 4].try_into().unwrap_or_default());
        let (ins, outs) = (u32_at(16) as usize, u32_at(20) as usize);
        let numbers = &body[24..];
        if numbers.len() != ins.checked_add(outs)?.checked_mul(8)? {
            return None;
        }
        let mut all = numbers
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()));
        Some(Self {
            inputs: all.by_ref().take(ins).collect(),
            outputs: all.collect(),
        })
    }
}

/// The file operations a merge needs besides recovery's. Every change must
/// be durable when the call returns.
pub trait MergeFiles: RecoveryFiles {
    /// Creates `name` holding `bytes` and syncs it (its directory entry is
    /// made durable by the next directory sync).
    fn create_synced(&mut self, name: &str, bytes: &[u8]) -> io::Result<()>;
    /// Renames `from` to `to`, replacing nothing, and syncs the directory.
    fn rename(&mut self, from: &str, to: &str) -> io::Result<()>;
    /// The names of the directory's files.
    fn list(&mut self) -> io::Result<Vec<String>>;

    /// Keeps readers of the directory's segments outside the server (an
    /// export) from starting while a merge retires its inputs; `false` when
    /// one is reading: the inputs are then removed without being emptied
    /// first. Held until [`let_readers_in`](Self::let_readers_in).
    fn shut_out_readers(&mut self) -> bool {
        true
    }

    /// Ends [`shut_out_readers`](Self::shut_out_readers).
    fn let_readers_in(&mut self) {}

    /// `name`, a retired input about to be removed without being emptied
    /// (a reader was in), is to be emptied once no reader is: the cores'
    /// cached descriptors would otherwise keep its blocks until a restart
    /// (review 8). Called before the removal.
    fn empty_later(&mut self, _name: &str) {}
}

/// Why a merge stopped. The inputs are untouched unless the manifest was
/// written; either way [`finish_interrupted`] at the next start (or the
/// next merge) settles it.
#[derive(Debug)]
#[non_exhaustive]
pub enum MergeError {
    /// A file operation failed.
    Io {
        /// The file.
        name: String,
        /// The failure.
        source: io::Error,
    },
    /// An input is not a whole sealed segment (only sealed segments are
    /// merged; a damaged one is left for `verify` and the operator).
    NotSealed {
        /// The file.
        name: String,
        /// What was found, when the scan refused it.
        error: Option<ScanError>,
    },
    /// The segment table is full.
    TableFull,
}

impl std::fmt::Display for MergeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MergeError::Io { name, source } => write!(f, "{name}: {source}"),
            MergeError::NotSealed { name, error: None } => {
                write!(f, "{name}: not a whole sealed segment")
            }
            MergeError::NotSealed {
                name,
                error: Some(e),
            } => write!(f, "{name}: {e}"),
            MergeError::TableFull => f.write_str("the segment table is full"),
        }
    }
}

impl std::error::Error for MergeError {}

fn io_err(name: &str) -> impl FnOnce(io::Error) -> MergeError {
    let name = name.to_owned();
    move |source| MergeError::Io { name, source }
}

/// What a merge did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MergeReport {
    /// Segments merged and removed.
    pub inputs: Vec<u64>,
    /// Segments written.
    pub outputs: Vec<u64>,
    /// Per output (in [`outputs`](Self::outputs)' order), the bytes of its
    /// records ([`record_bytes`] of it, known without reading it back: a
    /// merged segment is its preamble, its records and its seal).
    pub output_records: Vec<u64>,
    /// Bytes of the inputs.
    pub bytes_before: u64,
    /// Bytes of the outputs.
    pub bytes_after: u64,
    /// Records copied and moved in the key directory.
    pub moved: u64,
    /// Records copied whose key changed meanwhile (the copy is dead).
    pub lost_races: u64,
    /// Bytes read and written, for the I/O rate.
    pub io_bytes: u64,
    /// Tombstones left out and their keys forgotten.
    pub forgotten: u64,
    /// Tombstones that could have been forgotten but were carried forward:
    /// an older record of their key may survive outside the merge.
    pub tombstones_kept: u64,
    /// Their bytes: still dead by the next check's count (a usage counts a
    /// tombstone the rule may forget as dead).
    pub tombstones_kept_bytes: u64,
}

impl MergeReport {
    /// Bytes the merge gave back.
    pub fn reclaimed(&self) -> u64 {
        self.bytes_before.saturating_sub(self.bytes_after)
    }
}

/// One output segment being filled.
struct Output {
    segment: SegmentRef,
    bytes: Vec<u8>,
    /// Every record copied: its entry where it was, and its new offset
    /// ([`TOMBSTONE`] for a tombstone, as hints name them).
    moves: Vec<(HintEntry, FileIdx, u32)>,
    links: u64,
    max_id: Option<u64>,
}

impl Output {
    fn new(segment: SegmentRef) -> Self {
        let mut bytes = Vec::new();
        encode_preamble(segment.number, &mut bytes);
        Self {
            segment,
            bytes,
            moves: Vec::new(),
            links: 0,
            max_id: None,
        }
    }

    /// Seals it: the bytes and the hint.
    fn seal(mut self) -> (Self, Seal, Vec<u8>) {
        let seal = Seal {
            data_len: self.bytes.len() as u64,
            crc: crc32c::crc32c(&self.bytes),
            links: self.links,
            max_id: self.max_id.unwrap_or(0),
        };
        encode_seal(&seal, &mut self.bytes);
        let mut hint = Vec::new();
        let entries: Vec<HintEntry> = self.moves.iter().map(moved_entry).collect();
        encode_hint(self.segment.number, &seal, &entries, &mut hint);
        (self, seal, hint)
    }
}

/// A copied record's entry in its output.
fn moved_entry((entry, _, offset): &(HintEntry, FileIdx, u32)) -> HintEntry {
    HintEntry {
        offset: *offset,
        ..entry.clone()
    }
}

/// An output written under its temporary name: what the later steps need.
struct Written {
    segment: SegmentRef,
    moves: Vec<(HintEntry, FileIdx, u32)>,
    hint: Vec<u8>,
    /// [`MergeReport::output_records`].
    records: u64,
}

/// Seals `out` and writes it as `<segment>.merging`, synced (step 1).
fn write_output(
    files: &mut impl MergeFiles,
    out: Output,
    done: &mut Vec<Written>,
    report: &mut MergeReport,
) -> Result<(), MergeError> {
    let (out, seal, hint) = out.seal();
    let name = merging_file_name(out.segment.number);
    // Listed first, so a failed write's partial file is removed too.
    done.push(Written {
        segment: out.segment,
        moves: out.moves,
        hint,
        records: seal.data_len - PREAMBLE_LEN as u64,
    });
    files
        .create_synced(&name, &out.bytes)
        .map_err(io_err(&name))?;
    report.bytes_after += out.bytes.len() as u64;
    report.io_bytes += out.bytes.len() as u64;
    Ok(())
}

/// Where the outputs being written stand (step 1).
struct Outputs<'a, F> {
    files: &'a mut F,
    table: &'a SegmentTable,
    segment_bytes: u64,
    current: Option<Output>,
    done: Vec<Written>,
}

impl<F: MergeFiles> Outputs<'_, F> {
    /// Copies one record in force, verbatim (the record API's framing, not
    /// its fields: whatever a record holds survives the merge unchanged).
    fn copy(
        &mut self,
        entry: HintEntry,
        file: FileIdx,
        raw: &[u8],
        id: u64,
        report: &mut MergeReport,
    ) -> Result<(), MergeError> {
        let len = raw.len();
        let full = self.current.as_ref().is_some_and(|o| {
            o.links > 0 && (o.bytes.len() + len + SEAL_LEN) as u64 > self.segment_bytes
        });
        if full {
            if let Some(out) = self.current.take() {
                write_output(self.files, out, &mut self.done, report)?;
            }
        }
        let out = match &mut self.current {
            Some(out) => out,
            None => self.current.insert(Output::new(
                self.table.create().ok_or(MergeError::TableFull)?,
            )),
        };
        // Offsets fit: segments are bounded far below 4 GiB.
        let at = if entry.is_tombstone() {
            TOMBSTONE
        } else {
            out.bytes.len() as u32
        };
        out.moves.push((entry, file, at));
        out.bytes.extend_from_slice(raw);
        out.links += 1;
        if id != NO_ID {
            out.max_id = Some(out.max_id.map_or(id, |m| m.max(id)));
        }
        Ok(())
    }

    fn finish(mut self, report: &mut MergeReport) -> (Vec<Written>, Result<(), MergeError>) {
        let result = match self.current.take() {
            Some(out) => write_output(self.files, out, &mut self.done, report),
            None => Ok(()),
        };
        (self.done, result)
    }
}

/// A tombstone in force that may be forgotten: where it was, its bytes.
type Candidate = (HintEntry, FileIdx, Vec<u8>);

fn owned(entry: &HintEntry) -> OwnedIdent {
    match entry.ident() {
        Ident::Key(key) => OwnedIdent::Key(key),
        Ident::Alias(alias) => OwnedIdent::Alias(alias.into()),
    }
}

/// The keys of `candidates` that may have a record outside the merge's
/// output once its inputs are gone: `None` when that cannot be told (a
/// segment unreadable), so every candidate is kept.
///
/// Why this is enough (the module doc has the whole argument): each
/// candidate was seen in force, i.e. installed, before `barrier` (the
/// segment table's next number) was read. A mutation begins only when the
/// previous one of its key is settled, so every older record of the key
/// was durable before the tombstone was written, in a segment numbered
/// below the barrier, or copied by this merge (its outputs' moves). Later
/// segments cannot hold one: the cores write only newer versions, and a
/// merge copies only records in force.
fn older_records<F: MergeFiles>(
    outputs: &mut Outputs<'_, F>,
    inputs: &[SegmentRef],
    candidates: &[Candidate],
    barrier: u64,
) -> Option<HashSet<OwnedIdent>> {
    let wanted: HashSet<OwnedIdent> = candidates.iter().map(|(e, _, _)| owned(e)).collect();
    let mut found = HashSet::new();
    let mut see = |entry: &HintEntry| {
        // Any record of the key, older or (a claim after the
        // quarantine) newer: keeping the tombstone then is only caution.
        let ident = owned(entry);
        if wanted.contains(&ident) {
            found.insert(ident);
        }
    };
    // This merge's own copies (a record copied before its delete won).
    for moved in outputs
        .done
        .iter()
        .flat_map(|w| &w.moves)
        .chain(outputs.current.iter().flat_map(|o| &o.moves))
    {
        see(&moved.0);
    }
    // Every other segment below the barrier, sealed or still written
    // (uncommitted outputs are named `.merging`: not segments).
    let files = &mut *outputs.files;
    let names = files.list().ok()?;
    // A hint whose segment is missing is a segment moved aside (the
    // README's remedy for a damaged one) that may be moved back: its
    // records would then be older records outside this merge, so while one
    // is there nothing is forgotten (review 5: a deleted link came back
    // when its segment was moved back after a merge).
    let segments: HashSet<u64> = names
        .iter()
        .filter_map(|n| parse_segment_file_name(n))
        .collect();
    // The same for a segment a refused start marked damaged (it usually
    // has no hint: the segment a crash damages is the one being written).
    let orphaned = names
        .iter()
        .filter_map(|n| parse_hint_file_name(n).or_else(|| parse_damaged_file_name(n)))
        .any(|number| !segments.contains(&number));
    if orphaned {
        return None;
    }
    for number in names.iter().filter_map(|n| parse_segment_file_name(n)) {
        if number >= barrier || inputs.iter().any(|i| i.number == number) {
            continue;
        }
        if !keys_in(files, number, &mut see)? {
            return None;
        }
    }
    Some(found)
}

/// Calls `see` with an entry of every keyed record of segment `number`:
/// from its hint when it is sealed and hinted, else from a scan of what it
/// holds so far (a core's segment being written: every durable record is
/// in that prefix). `Some(false)`: it cannot be read whole; `Some(true)`
/// also when it is gone (removed: nothing of it comes back).
fn keys_in(
    files: &mut impl MergeFiles,
    number: u64,
    see: &mut impl FnMut(&HintEntry),
) -> Option<bool> {
    let name = segment_file_name(number);
    let (len, tail) = match files.read_tail(&name, SEAL_LEN) {
        Ok(found) => found,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Some(true),
        Err(_) => return Some(false),
    };
    if let Some(seal) = seal_at_end(len, &tail) {
        if let Ok(Some(hint)) = files.read_if_exists(&hint_file_name(number)) {
            if let Ok(entries) = decode_hint(&hint, number, &seal) {
                entries.for_each(|e| see(&e));
                return Some(true);
            }
        }
    }
    let bytes = match files.read(&name) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Some(true),
        Err(_) => return Some(false),
    };
    let scan = scan_segment(&bytes, number, |record, offset| {
        see(&HintEntry::of(&record, offset));
    });
    Some(scan.is_ok())
}

/// Reads the inputs and writes their live records into outputs (step 1);
/// returns the tombstones left out.
fn write_outputs<F: MergeFiles>(
    outputs: &mut Outputs<'_, F>,
    live: &impl Liveness,
    forgetting: &impl Forgetting,
    inputs: &[SegmentRef],
    report: &mut MergeReport,
) -> Result<Vec<(HintEntry, FileIdx)>, MergeError> {
    let mut candidates: Vec<Candidate> = Vec::new();
    for input in inputs {
        let name = segment_file_name(input.number);
        let bytes = outputs.files.read(&name).map_err(io_err(&name))?;
        report.bytes_before += bytes.len() as u64;
        report.io_bytes += bytes.len() as u64;
        let mut offsets = Vec::new();
        let scan = scan_segment(&bytes, input.number, |record, offset| {
            let id = record.link().map_or(NO_ID, |link| link.id);
            offsets.push((HintEntry::of(&record, offset), id, offset));
        })
        .map_err(|error| MergeError::NotSealed {
            name: name.clone(),
            error: Some(error),
        })?;
        if !matches!(scan.end, SegmentEnd::Sealed { trailing: 0, .. }) {
            return Err(MergeError::NotSealed { name, error: None });
        }
        for (entry, id, offset) in offsets {
            if !live.is_live(&entry, input.idx) {
                continue;
            }
            let Decoded::Record(_, len) = decode_record(&bytes[offset as usize..]) else {
                return Err(MergeError::NotSealed { name, error: None });
            };
            let raw = &bytes[offset as usize..offset as usize + len];
            if entry.is_tombstone() && forgetting.may_forget(&entry) {
                // Decided once every input is read: a link copied later
                // in this merge may be an older record of its key.
                candidates.push((entry, input.idx, raw.to_vec()));
                continue;
            }
            outputs.copy(entry, input.idx, raw, id, report)?;
        }
    }
    let mut forgotten = Vec::new();
    if !candidates.is_empty() {
        // Read after every candidate was seen in force (`older_records`).
        let barrier = outputs.table.next_number();
        let older = older_records(outputs, inputs, &candidates, barrier);
        for (entry, file, raw) in candidates {
            if older.as_ref().is_some_and(|o| !o.contains(&owned(&entry))) {
                forgotten.push((entry, file));
            } else {
                report.tombstones_kept += 1;
                report.tombstones_kept_bytes += raw.len() as u64;
                outputs.copy(entry, file, &raw, NO_ID, report)?;
            }
        }
    }
    Ok(forgotten)
}

/// Merges `inputs` (sealed segments of `table`) into new segments of at
/// most `segment_bytes` each, as the module doc orders it, carrying every
/// tombstone in force forward. `retire` is called after the key directory
/// swap and must return only once no read can still hold an input's
/// [`FileIdx`].
///
/// # Errors
/// [`MergeError`]; what is on disk stays consistent (see
/// [`finish_interrupted`]).
pub fn run_merge(
    files: &mut impl MergeFiles,
    table: &SegmentTable,
    live: &impl Liveness,
    inputs: &[SegmentRef],
    segment_bytes: u64,
    retire: impl FnOnce(),
) -> Result<MergeReport, MergeError> {
    run_merge_forgetting(
        files,
        table,
        live,
        &KeepTombstones,
        inputs,
        segment_bytes,
        retire,
    )
}

/// As [`run_merge`], leaving out the tombstones `forgetting` lets go when
/// no older record of their key can survive outside the output (module
/// doc, "Forgetting a tombstone"); their keys are forgotten by the key
/// directory after the commit point.
///
/// # Errors
/// As [`run_merge`].
pub fn run_merge_forgetting(
    files: &mut impl MergeFiles,
    table: &SegmentTable,
    live: &impl Liveness,
    forgetting: &impl Forgetting,
    inputs: &[SegmentRef],
    segment_bytes: u64,
    retire: impl FnOnce(),
) -> Result<MergeReport, MergeError> {
    let mut report = MergeReport::default();
    // Each output is written (step 1) as soon as it is full, so the merge
    // holds one input and one output in memory, plus 12 bytes a moved key.
    let mut outputs = Outputs {
        files: &mut *files,
        table,
        segment_bytes,
        current: None,
        done: Vec::new(),
    };
    let written = write_outputs(&mut outputs, live, forgetting, inputs, &mut report);
    let (done, last) = outputs.finish(&mut report);
    let forgotten = match written.and_then(|f| last.map(|()| f)) {
        Ok(forgotten) => forgotten,
        Err(err) => {
            // Nothing is committed: give the space back now (a full disk
            // is the likely cause), not at the next start.
            for out in &done {
                let _ = files.remove(&merging_file_name(out.segment.number));
            }
            return Err(err);
        }
    };
    // Before the commit point: once it is passed, these tombstones are
    // gone, and this file is the only trace that their links were deleted
    // (see `forgotten_file_name`). A merge that does not commit leaves a
    // file naming tombstones still in force: true, and harmless.
    if let Some(first) = inputs.first().filter(|_| !forgotten.is_empty()) {
        let name = forgotten_file_name(first.number);
        let bytes = encode_forgotten(first.number, forgotten.iter().map(|(e, _)| e));
        if let Err(err) = files.write_atomic(&name, &bytes) {
            for out in &done {
                let _ = files.remove(&merging_file_name(out.segment.number));
            }
            return Err(io_err(&name)(err));
        }
    }
    // 2. The commit point.
    let manifest = Manifest {
        inputs: inputs.iter().map(|s| s.number).collect(),
        outputs: done.iter().map(|o| o.segment.number).collect(),
    };
    files
        .write_atomic(MANIFEST_FILE, &manifest.encode())
        .map_err(io_err(MANIFEST_FILE))?;
    // 3. Into place, with hints.
    for out in &done {
        let n = out.segment.number;
        files
            .rename(&merging_file_name(n), &segment_file_name(n))
            .map_err(io_err(&segment_file_name(n)))?;
        // A hint that cannot be written costs a scan at the next start.
        let _ = files.write_atomic(&hint_file_name(n), &out.hint);
    }
    // 4. The key directory follows.
    for out in &done {
        for moved in &out.moves {
            let to = moved_entry(moved);
            if live.moved(&moved.0, moved.1, &to, out.segment.idx) {
                report.moved += 1;
            } else {
                report.lost_races += 1;
            }
        }
    }
    // Committed: a restart no longer finds these tombstones, so neither
    // does the key directory (unless the key moved on meanwhile).
    for (entry, file) in &forgotten {
        if live.forget(entry, *file) {
            report.forgotten += 1;
        }
    }
    // 5. No reader holds an input any more.
    retire();
    // 6. The inputs go, then the manifest, with readers kept out (an
    // export holding an input open would read an emptied one as nothing,
    // its outputs being left out while the manifest names them; review 7).
    let empty = files.shut_out_readers();
    let removed = inputs
        .iter()
        .try_for_each(|input| remove_segment(files, input.number, empty))
        .and_then(|()| files.remove(MANIFEST_FILE).map_err(io_err(MANIFEST_FILE)));
    files.let_readers_in();
    removed?;
    report.inputs = manifest.inputs;
    report.outputs = manifest.outputs;
    report.output_records = done.iter().map(|o| o.records).collect();
    Ok(report)
}

fn remove_segment(files: &mut impl MergeFiles, number: u64, empty: bool) -> Result<(), MergeError> {
    let name = segment_file_name(number);
    // Emptied first: a core may still hold the file open in its handle
    // cache, and an unlinked file's blocks come back only when its last
    // descriptor closes; an emptied one's at once. No core's read needs it
    // now; a reader outside the server (an export) may (`empty` false):
    // then it is emptied once that reader is gone (`empty_later`).
    if empty {
        match files.truncate_and_append(&name, 0, &[]) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => return Err(io_err(&name)(err)),
            _ => {}
        }
    } else {
        files.empty_later(&name);
    }
    files.remove(&name).map_err(io_err(&name))?;
    let hint = hint_file_name(number);
    files.remove(&hint).map_err(io_err(&hint))
}

/// What [`finish_interrupted`] found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interrupted {
    /// A committed merge was rolled forward: its inputs are gone.
    pub rolled_forward: Option<Manifest>,
    /// A committed merge whose outputs were missing was rolled back: its
    /// outputs are gone, its inputs kept.
    pub rolled_back: Option<Manifest>,
    /// Uncommitted outputs removed.
    pub discarded: Vec<String>,
}

/// Settles a merge that a crash interrupted; run before the segments are
/// listed for recovery (and before a merge starts). With an intact
/// manifest whose outputs are all there (under either name): finish it
/// (rename, remove the inputs and their hints, then the manifest). If an
/// output is missing (moved aside after the crash), undo it instead: keep
/// the inputs, remove the outputs. Then remove every uncommitted output.
///
/// # Errors
/// A file operation failed, or the manifest is damaged (refuse to start:
/// which of the two sets to keep is the operator's call).
pub fn finish_interrupted(files: &mut impl MergeFiles) -> io::Result<Interrupted> {
    let mut done = Interrupted::default();
    if let Some(bytes) = files.read_if_exists(MANIFEST_FILE)? {
        let manifest = Manifest::decode(&bytes).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{MANIFEST_FILE} (an interrupted merge) is damaged: restore it from a \
                     backup, or remove it and move aside either the segments it merged or the \
                     ones it wrote"
                ),
            )
        })?;
        let names = files.list()?;
        let has = |n: &str| names.iter().any(|x| x == n);
        let complete = manifest
            .outputs
            .iter()
            .all(|&n| has(&segment_file_name(n)) || has(&merging_file_name(n)));
        if complete {
            for &n in &manifest.outputs {
                if !has(&segment_file_name(n)) {
                    files.rename(&merging_file_name(n), &segment_file_name(n))?;
                }
            }
            for &n in &manifest.inputs {
                files.remove(&segment_file_name(n))?;
                files.remove(&hint_file_name(n))?;
            }
            files.remove(MANIFEST_FILE)?;
            done.rolled_forward = Some(manifest);
        } else {
            for &n in &manifest.outputs {
                files.remove(&segment_file_name(n))?;
                files.remove(&hint_file_name(n))?;
                files.remove(&merging_file_name(n))?;
            }
            files.remove(MANIFEST_FILE)?;
            done.rolled_back = Some(manifest);
        }
    }
    for name in files.list()? {
        if name.ends_with(MERGING_SUFFIX) {
            files.remove(&name)?;
            done.discarded.push(name);
        }
    }
    Ok(done)
}

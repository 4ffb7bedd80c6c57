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
//!   directory holds it: `Deleted` in its segment, at its version. Every
//!   tombstone in force is carried forward (copied verbatim, 34 bytes plus
//!   the alias); one whose key moved on (an alias claimed again after its
//!   quarantine: a higher version) is dead like a superseded link.
//!   Dropping a tombstone in force would be safe only once no other
//!   segment can hold an older record of its key (else a restart
//!   resurrects it: the highest version found wins). That set is not
//!   knowable here: the cores' active segments have no hint, and a
//!   concurrent update that took a lower version can land its record
//!   after the delete, in any segment. Bitcask drops a tombstone only when
//!   the file of the value it deleted is among the merge's inputs or gone
//!   (`merge_single_tombstone`); with several writers and versions that
//!   would need every record's version history, so tombstones stay. What
//!   it costs: a deleted link's disk bytes shrink to its tombstone's, and
//!   its key directory slot stays, which the lifecycle needs anyway: a
//!   deleted alias's quarantine runs from its tombstone, and a deleted
//!   code is never taken again (generated ids are also never reissued:
//!   the `STATE` high-water mark and the seals' largest id, but the slot
//!   is what stops an import or a 7-character alias from taking it).
//! - An *expired* link (or one past its click limit, or disabled) is kept
//!   live: it still answers (410, or a redirect to its expired-URL), an
//!   update may extend it, and dropping it would need a tombstone in its
//!   place (see above) for a saving of its URL's bytes only. No
//!   `--merge-expired-grace`; a later change can turn expired links into
//!   tombstones here if their URLs' bytes ever matter.
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

use std::io;

use crate::keydir::{KeyDir, Target, TOMBSTONE};
use crate::log::hint::{encode_hint, hint_file_name, HintEntry};
use crate::log::record::{
    decode_record, encode_preamble, encode_seal, Decoded, Seal, NO_ID, PREAMBLE_LEN, SEAL_LEN,
    TOMBSTONE_LEN,
};
use crate::log::recovery::RecoveryFiles;
use crate::log::scan::{scan_segment, ScanError, SegmentEnd};
use crate::log::segments::{segment_file_name, FileIdx, SegmentRef, SegmentTable};

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
            if live.is_live(&entry, idx) {
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
}

/// Seals `out` and writes it as `<segment>.merging`, synced (step 1).
fn write_output(
    files: &mut impl MergeFiles,
    out: Output,
    done: &mut Vec<Written>,
    report: &mut MergeReport,
) -> Result<(), MergeError> {
    let (out, _, hint) = out.seal();
    let name = merging_file_name(out.segment.number);
    // Listed first, so a failed write's partial file is removed too.
    done.push(Written {
        segment: out.segment,
        moves: out.moves,
        hint,
    });
    files
        .create_synced(&name, &out.bytes)
        .map_err(io_err(&name))?;
    report.bytes_after += out.bytes.len() as u64;
    report.io_bytes += out.bytes.len() as u64;
    Ok(())
}

/// Reads the inputs and writes their live records into outputs (step 1).
fn write_outputs(
    files: &mut impl MergeFiles,
    table: &SegmentTable,
    live: &impl Liveness,
    inputs: &[SegmentRef],
    segment_bytes: u64,
    done: &mut Vec<Written>,
    report: &mut MergeReport,
) -> Result<(), MergeError> {
    let mut current: Option<Output> = None;
    for input in inputs {
        let name = segment_file_name(input.number);
        let bytes = files.read(&name).map_err(io_err(&name))?;
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
            // Copied verbatim (the record API's framing, not its fields):
            // whatever a record holds survives the merge unchanged.
            let Decoded::Record(_, len) = decode_record(&bytes[offset as usize..]) else {
                return Err(MergeError::NotSealed { name, error: None });
            };
            let raw = &bytes[offset as usize..offset as usize + len];
            let full = current.as_ref().is_some_and(|o| {
                o.links > 0 && (o.bytes.len() + len + SEAL_LEN) as u64 > segment_bytes
            });
            if full {
                if let Some(out) = current.take() {
                    write_output(files, out, done, report)?;
                }
            }
            let out = match &mut current {
                Some(out) => out,
                None => current.insert(Output::new(table.create().ok_or(MergeError::TableFull)?)),
            };
            // Offsets fit: segments are bounded far below 4 GiB.
            let at = if entry.is_tombstone() {
                TOMBSTONE
            } else {
                out.bytes.len() as u32
            };
            out.moves.push((entry, input.idx, at));
            out.bytes.extend_from_slice(raw);
            out.links += 1;
            if id != NO_ID {
                out.max_id = Some(out.max_id.map_or(id, |m| m.max(id)));
            }
        }
    }
    if let Some(out) = current.take() {
        write_output(files, out, done, report)?;
    }
    Ok(())
}

/// Merges `inputs` (sealed segments of `table`) into new segments of at
/// most `segment_bytes` each, as the module doc orders it. `retire` is
/// called after the key directory swap and must return only once no read
/// can still hold an input's [`FileIdx`].
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
    let mut report = MergeReport::default();
    // Each output is written (step 1) as soon as it is full, so the merge
    // holds one input and one output in memory, plus 12 bytes a moved key.
    let mut done: Vec<Written> = Vec::new();
    if let Err(err) = write_outputs(
        files,
        table,
        live,
        inputs,
        segment_bytes,
        &mut done,
        &mut report,
    ) {
        // Nothing is committed: give the space back now (a full disk is
        // the likely cause), not at the next start.
        for out in &done {
            let _ = files.remove(&merging_file_name(out.segment.number));
        }
        return Err(err);
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
    // 5. No reader holds an input any more.
    retire();
    // 6. The inputs go, then the manifest.
    for input in inputs {
        remove_segment(files, input.number)?;
    }
    files.remove(MANIFEST_FILE).map_err(io_err(MANIFEST_FILE))?;
    report.inputs = manifest.inputs;
    report.outputs = manifest.outputs;
    Ok(report)
}

fn remove_segment(files: &mut impl MergeFiles, number: u64) -> Result<(), MergeError> {
    let name = segment_file_name(number);
    // Emptied first: a core may still hold the file open in its handle
    // cache, and an unlinked file's blocks come back only when its last
    // descriptor closes; an emptied one's at once. No read needs it now.
    match files.truncate_and_append(&name, 0, &[]) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => return Err(io_err(&name)(err)),
        _ => {}
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

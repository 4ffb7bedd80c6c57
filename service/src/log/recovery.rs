//! Recovering one segment at start: load it from its hint file when it is
//! sealed and the hint checks out, otherwise scan it, apply the recovery
//! rule of [`crate::log::scan`], and leave it sealed with a hint.
//!
//! The file operations go through [`RecoveryFiles`]: the runtime
//! implements it with `std::fs`, the crash simulator with its model of a
//! disk, so both run exactly this code.

use std::io;

use crate::log::hint::{
    decode_hint, encode_hint, hint_file_name, hint_seal, hint_vouches, HintEntry,
};
use crate::log::is_disk_full;
use crate::log::record::{decode_record, encode_seal, Decoded, Record, Seal, SEAL_LEN};
use crate::log::scan::{holds_nothing, scan_vouched, ScanError, SegmentEnd};
use crate::log::segments::segment_file_name;

/// The file operations recovery needs, by file name within the data
/// directory. Every change must be durable when the call returns.
pub trait RecoveryFiles {
    /// The whole file.
    fn read(&mut self, name: &str) -> io::Result<Vec<u8>>;
    /// The file's length and its last `n` bytes (fewer if it is shorter).
    fn read_tail(&mut self, name: &str, n: usize) -> io::Result<(u64, Vec<u8>)>;
    /// The whole file, or `None` if it does not exist.
    fn read_if_exists(&mut self, name: &str) -> io::Result<Option<Vec<u8>>>;
    /// Cuts the file to `len` bytes and syncs, then appends `tail` (if any)
    /// and syncs again: the first `len` bytes must be durable before `tail`
    /// (a seal vouching for them) is written.
    fn truncate_and_append(&mut self, name: &str, len: u64, tail: &[u8]) -> io::Result<()>;
    /// Removes the file if it exists, durably.
    fn remove(&mut self, name: &str) -> io::Result<()>;
    /// Replaces the file with `bytes` atomically and durably (write a
    /// temporary file, sync, rename, sync the directory).
    fn write_atomic(&mut self, name: &str, bytes: &[u8]) -> io::Result<()>;
}

/// What recovery did with one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentOutcome {
    /// Keyed records (links and tombstones) loaded.
    pub links: u64,
    /// Largest id among them.
    pub max_id: Option<u64>,
    /// Loaded from its hint file without reading the segment.
    pub from_hint: bool,
    /// Why the hint was not used, when the segment was sealed but had to
    /// be scanned.
    pub hint_problem: Option<String>,
    /// Bytes cut off the end: `(from, to, why)`.
    pub cut: Option<(u64, u64, &'static str)>,
    /// The segment was unsealed and is sealed now.
    pub sealed_now: bool,
    /// The file held nothing acknowledged and was removed.
    pub removed: bool,
}

/// Why a segment cannot be recovered.
#[derive(Debug)]
#[non_exhaustive]
pub enum RecoveryError {
    /// A file operation failed.
    Io {
        /// The file.
        name: String,
        /// The failure.
        source: io::Error,
    },
    /// The segment is damaged where acknowledged data lives, or is not of
    /// this format.
    Scan {
        /// The file.
        name: String,
        /// What was found.
        error: ScanError,
    },
    /// A link's URL is not UTF-8 (it was validated before it was written).
    InvalidUrl {
        /// The file.
        name: String,
        /// The record's offset.
        offset: u64,
    },
}

impl std::fmt::Display for RecoveryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecoveryError::Io { name, source } => write!(f, "{name}: {source}"),
            RecoveryError::Scan { name, error } => write!(f, "{name}: {error}"),
            RecoveryError::InvalidUrl { name, offset } => {
                write!(f, "{name}: the link at byte offset {offset} is not UTF-8")
            }
        }
    }
}

impl std::error::Error for RecoveryError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RecoveryError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The seal at the end of a file of length `len` whose last bytes are
/// `tail`, if there is a valid one exactly there.
pub fn seal_at_end(len: u64, tail: &[u8]) -> Option<Seal> {
    if tail.len() != SEAL_LEN {
        return None;
    }
    match decode_record(tail) {
        Decoded::Record(Record::Seal(seal), SEAL_LEN)
            if seal.data_len.saturating_add(SEAL_LEN as u64) == len =>
        {
            Some(seal)
        }
        _ => None,
    }
}

/// Recovers segment `number`, calling `on_link` for every keyed record
/// (link or tombstone) it holds, in file order.
///
/// # Errors
/// [`RecoveryError`]; the server must not start.
pub fn recover_segment(
    files: &mut impl RecoveryFiles,
    number: u64,
    mut on_link: impl FnMut(HintEntry),
) -> Result<SegmentOutcome, RecoveryError> {
    let name = segment_file_name(number);
    let hint_name = hint_file_name(number);
    let io_err = |name: &str| {
        let name = name.to_owned();
        move |source| RecoveryError::Io { name, source }
    };
    let mut outcome = SegmentOutcome {
        links: 0,
        max_id: None,
        from_hint: false,
        hint_problem: None,
        cut: None,
        sealed_now: false,
        removed: false,
    };
    let (len, tail) = files.read_tail(&name, SEAL_LEN).map_err(io_err(&name))?;
    let hint = files
        .read_if_exists(&hint_name)
        .map_err(io_err(&hint_name))?;
    // An intact hint proves its segment was sealed at the length it names,
    // even if the seal itself is damaged: that much is vouched for.
    let hint_vouches = hint_vouches(hint.as_deref(), number);
    if let Some(seal) = seal_at_end(len, &tail) {
        match &hint {
            None => outcome.hint_problem = Some("no hint file".into()),
            Some(hint) => match decode_hint(hint, number, &seal) {
                Ok(entries) => {
                    entries.for_each(&mut on_link);
                    outcome.links = seal.links;
                    outcome.max_id = (seal.links > 0).then_some(seal.max_id);
                    outcome.from_hint = true;
                    return Ok(outcome);
                }
                Err(err) => outcome.hint_problem = Some(format!("hint file unusable: {err}")),
            },
        }
    }

    let bytes = files.read(&name).map_err(io_err(&name))?;
    let mut entries: Vec<HintEntry> = Vec::new();
    let mut bad_url = None;
    let scan = scan_vouched(&bytes, number, hint_vouches, |record, offset| {
        if record
            .link()
            .is_some_and(|link| std::str::from_utf8(link.url).is_err())
        {
            bad_url = bad_url.or(Some(offset));
        }
        entries.push(HintEntry::of(&record, offset));
    })
    .map_err(|error| RecoveryError::Scan {
        name: name.clone(),
        error,
    })?;
    if let Some(offset) = bad_url {
        return Err(RecoveryError::InvalidUrl { name, offset });
    }
    outcome.links = scan.links;
    outcome.max_id = scan.max_id;
    let seal = match scan.end {
        SegmentEnd::Sealed { seal, trailing } => {
            if trailing > 0 {
                files
                    .truncate_and_append(&name, len - trailing, &[])
                    .map_err(io_err(&name))?;
                outcome.cut = Some((len - trailing, len, "padding after the seal"));
            }
            seal
        }
        end if holds_nothing(&end) => {
            files.remove(&hint_name).map_err(io_err(&hint_name))?;
            files.remove(&name).map_err(io_err(&name))?;
            outcome.removed = true;
            if let SegmentEnd::Torn { reason, .. } = end {
                outcome.cut = Some((0, len, reason));
            }
            return Ok(outcome);
        }
        SegmentEnd::Open { .. } | SegmentEnd::Torn { .. } => {
            let valid_len = match scan.end {
                SegmentEnd::Torn { valid_len, reason } => {
                    outcome.cut = Some((valid_len, len, reason));
                    valid_len
                }
                _ => len,
            };
            let seal = Seal {
                data_len: valid_len,
                crc: crc32c::crc32c(bytes.get(..valid_len as usize).unwrap_or_default()),
                links: scan.links,
                max_id: scan.max_id.unwrap_or(0),
            };
            let mut sealed = Vec::with_capacity(SEAL_LEN);
            encode_seal(&seal, &mut sealed);
            match files.truncate_and_append(&name, valid_len, &sealed) {
                Ok(()) => {
                    outcome.sealed_now = true;
                    seal
                }
                // A full disk must not keep the server from starting (and
                // redirecting): the segment stays unsealed, which is what
                // a crash leaves, and the next start seals it. What was
                // cut is cut and synced before the seal is written.
                Err(err) if is_disk_full(&err) => {
                    entries.into_iter().for_each(on_link);
                    outcome.hint_problem = Some(format!("left unsealed, the disk is full: {err}"));
                    return Ok(outcome);
                }
                Err(err) => return Err(io_err(&name)(err)),
            }
        }
    };
    let mut hint = Vec::with_capacity(64 + entries.len() * 12);
    encode_hint(number, &seal, &entries, &mut hint);
    entries.into_iter().for_each(on_link);
    // A hint only saves the next start a scan: failing to write one (a
    // full disk, most likely) never stops this one.
    if let Err(err) = files.write_atomic(&hint_name, &hint) {
        outcome.hint_problem = Some(format!("hint file not written: {err}"));
    }
    Ok(outcome)
}

/// Name of the high-water file in the data directory: ids and segment
/// numbers a run may have handed out (see [`HighWater`]).
pub const STATE_FILE: &str = "STATE";

/// Ids a run may hand out past the high-water mark recorded at its start
/// before it must record a higher one. A restart after a crash skips what
/// the crashed run left unused of it (at most this many ids of 3.5
/// trillion 7-character codes).
pub const ID_LEASE: u64 = 1 << 24;

/// Segment numbers likewise (numbers are `u64`; skipping some costs
/// nothing).
pub const SEGMENT_LEASE: u64 = 1024;

/// A high-water mark: no id at or above `next_id` and no segment numbered
/// at or above `next_segment` was ever handed out. Kept in [`STATE_FILE`]
/// (written atomically and synced) because the files alone cannot say it:
/// an operator may move a damaged segment aside (the README's remedy), and
/// its ids and number must never be handed out again, or an old short URL
/// would redirect to a new link and the moved file could never come back.
/// Recovery takes the largest of every source: the file, every segment's
/// and every hint's number (an orphaned hint too), and every seal's
/// largest id.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HighWater {
    /// One past the largest id that may be in use.
    pub next_id: u64,
    /// One past the largest segment number that may be in use.
    pub next_segment: u64,
}

/// The first 8 bytes of [`STATE_FILE`].
const STATE_MAGIC: [u8; 8] = *b"SHORTYST";

/// [`STATE_FILE`]'s length: magic, format `u16` and 6 zero bytes, the two
/// marks, CRC32C of everything before it.
const STATE_LEN: usize = 8 + 8 + 8 + 8 + 4;

impl HighWater {
    /// The larger of each mark.
    #[must_use]
    pub fn max(self, other: Self) -> Self {
        Self {
            next_id: self.next_id.max(other.next_id),
            next_segment: self.next_segment.max(other.next_segment),
        }
    }

    /// What a segment numbered `number` whose largest id is `max_id`
    /// proves was handed out.
    pub fn of_segment(number: u64, max_id: Option<u64>) -> Self {
        Self {
            next_id: max_id.map_or(0, |id| id.saturating_add(1)),
            next_segment: number.saturating_add(1),
        }
    }

    /// What a hint file of segment `number` proves, whether or not its
    /// segment is still there: its number, and (if the hint is intact and
    /// counts links) its seal's largest id. An orphaned hint is never
    /// trusted as data, but what it says was handed out still was.
    pub fn of_hint(number: u64, bytes: &[u8]) -> Self {
        let max_id = hint_seal(bytes, number)
            .filter(|seal| seal.links > 0)
            .map(|seal| seal.max_id);
        Self::of_segment(number, max_id)
    }

    /// The limit a run records before it starts: this mark plus a lease,
    /// so it can hand out ids and make segments without writing the file
    /// each time.
    #[must_use]
    pub fn leased(self) -> Self {
        Self {
            next_id: self.next_id.saturating_add(ID_LEASE),
            next_segment: self.next_segment.saturating_add(SEGMENT_LEASE),
        }
    }

    /// `true` when a run that recorded `self` and has handed out up to
    /// `in_use` must record a new limit (half its lease or more is used).
    pub fn needs_extension(self, in_use: Self) -> bool {
        in_use.next_id.saturating_add(ID_LEASE / 2) >= self.next_id
            || in_use.next_segment.saturating_add(SEGMENT_LEASE / 2) >= self.next_segment
    }

    /// The bytes of [`STATE_FILE`].
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(STATE_LEN);
        bytes.extend_from_slice(&STATE_MAGIC);
        bytes.extend_from_slice(&1u16.to_le_bytes());
        bytes.extend_from_slice(&[0; 6]);
        bytes.extend_from_slice(&self.next_id.to_le_bytes());
        bytes.extend_from_slice(&self.next_segment.to_le_bytes());
        let crc = crc32c::crc32c(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        bytes
    }

    /// Reads [`STATE_FILE`]'s bytes; `None` when they are not an intact
    /// state file of this format.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != STATE_LEN || bytes[..8] != STATE_MAGIC || bytes[8..10] != [1, 0] {
            return None;
        }
        let (body, crc) = bytes.split_at(STATE_LEN - 4);
        let u64_at =
            |at: usize| u64::from_le_bytes(body[at..at + 8].try_into().unwrap_or_default());
        (crc32c::crc32c(body).to_le_bytes() == crc).then(|| Self {
            next_id: u64_at(16),
            next_segment: u64_at(24),
        })
    }
}

/// What a restart would do with one segment, without changing anything
/// (for `verify`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Sealed and whole; its hint is usable (or `hint_problem` says why
    /// not, and a restart would rebuild it).
    Sealed {
        /// Links it holds.
        links: u64,
        /// Why the hint cannot be used, if it cannot.
        hint_problem: Option<String>,
    },
    /// Unsealed but whole (an unclean stop): a restart seals it.
    Open {
        /// Links it holds.
        links: u64,
    },
    /// A restart cuts an unacknowledged tail at `valid_len`.
    Torn {
        /// Links kept.
        links: u64,
        /// Where the cut would be.
        valid_len: u64,
        /// The file's length.
        len: u64,
        /// What the damage looks like.
        reason: &'static str,
    },
    /// A restart refuses to start.
    Refused(ScanError),
}

/// Checks one segment's bytes (and its hint file's, if any) fully,
/// including every record's checksum, without changing anything.
pub fn verify_segment(number: u64, bytes: &[u8], hint: Option<&[u8]>) -> Verdict {
    verify_segment_entries(number, bytes, hint, |_| {})
}

/// [`verify_segment`], calling `on_entry` for every keyed record a restart
/// would load (those before any damage), in file order: what
/// [`recover_segment`] hands its caller, so `verify` can run recovery's
/// checks across segments (two records of one key at one version).
pub fn verify_segment_entries(
    number: u64,
    bytes: &[u8],
    hint: Option<&[u8]>,
    mut on_entry: impl FnMut(HintEntry),
) -> Verdict {
    let vouched = hint_vouches(hint, number);
    let scan = match scan_vouched(bytes, number, vouched, |record, offset| {
        on_entry(HintEntry::of(&record, offset));
    }) {
        Ok(scan) => scan,
        Err(err) => return Verdict::Refused(err),
    };
    match scan.end {
        SegmentEnd::Sealed { seal, .. } => Verdict::Sealed {
            links: scan.links,
            hint_problem: match hint.map(|h| decode_hint(h, number, &seal).map(|_| ())) {
                None => Some("no hint file".into()),
                Some(Err(err)) => Some(format!("hint file unusable: {err}")),
                Some(Ok(())) => None,
            },
        },
        SegmentEnd::Open { .. } => Verdict::Open { links: scan.links },
        SegmentEnd::Torn { valid_len, reason } => Verdict::Torn {
            links: scan.links,
            valid_len,
            len: bytes.len() as u64,
            reason,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::hint::build_hint;
    use crate::log::record::Link;
    use crate::log::segments::encode_sealed_segment;
    use std::collections::HashMap;

    /// Files in memory.
    #[derive(Default)]
    struct Mem(HashMap<String, Vec<u8>>);

    fn missing() -> io::Error {
        io::ErrorKind::NotFound.into()
    }

    impl RecoveryFiles for Mem {
        fn read(&mut self, name: &str) -> io::Result<Vec<u8>> {
            self.0.get(name).cloned().ok_or_else(missing)
        }
        fn read_tail(&mut self, name: &str, n: usize) -> io::Result<(u64, Vec<u8>)> {
            let f = self.0.get(name).ok_or_else(missing)?;
            Ok((f.len() as u64, f[f.len().saturating_sub(n)..].to_vec()))
        }
        fn read_if_exists(&mut self, name: &str) -> io::Result<Option<Vec<u8>>> {
            Ok(self.0.get(name).cloned())
        }
        fn truncate_and_append(&mut self, name: &str, len: u64, tail: &[u8]) -> io::Result<()> {
            let f = self.0.get_mut(name).ok_or_else(missing)?;
            f.truncate(len as usize);
            f.extend_from_slice(tail);
            Ok(())
        }
        fn remove(&mut self, name: &str) -> io::Result<()> {
            self.0.remove(name);
            Ok(())
        }
        fn write_atomic(&mut self, name: &str, bytes: &[u8]) -> io::Result<()> {
            self.0.insert(name.to_owned(), bytes.to_vec());
            Ok(())
        }
    }

    /// Six links in three batches, sealed, with its hint: a clean stop.
    fn six_links(number: u64) -> (Vec<u8>, Vec<u8>, Vec<usize>) {
        let urls: Vec<String> = (0..6).map(|i| format!("https://e.com/{i}")).collect();
        let links: Vec<Link<'_>> = urls
            .iter()
            .enumerate()
            .map(|(i, u)| Link {
                key: 100 + i as u64,
                id: i as u64,
                url: u.as_bytes(),
                options: &[],
            })
            .collect();
        let bytes = encode_sealed_segment(number, &[&links[..2], &links[2..4], &links[4..]]);
        let hint = build_hint(number, &bytes).unwrap();
        let mut starts = Vec::new();
        crate::log::scan::scan_segment(&bytes, number, |_, at| starts.push(at as usize)).unwrap();
        (bytes, hint, starts)
    }

    /// [`Mem`] on a full disk: cutting works (it frees space), nothing
    /// can be added or written.
    struct Full(Mem);

    fn full() -> io::Error {
        io::ErrorKind::StorageFull.into()
    }

    impl RecoveryFiles for Full {
        fn read(&mut self, name: &str) -> io::Result<Vec<u8>> {
            self.0.read(name)
        }
        fn read_tail(&mut self, name: &str, n: usize) -> io::Result<(u64, Vec<u8>)> {
            self.0.read_tail(name, n)
        }
        fn read_if_exists(&mut self, name: &str) -> io::Result<Option<Vec<u8>>> {
            self.0.read_if_exists(name)
        }
        fn truncate_and_append(&mut self, name: &str, len: u64, tail: &[u8]) -> io::Result<()> {
            self.0.truncate_and_append(name, len, &[])?;
            if tail.is_empty() {
                Ok(())
            } else {
                Err(full())
            }
        }
        fn remove(&mut self, name: &str) -> io::Result<()> {
            self.0.remove(name)
        }
        fn write_atomic(&mut self, _: &str, _: &[u8]) -> io::Result<()> {
            Err(full())
        }
    }

    /// A restart on a full disk (the reviewer's repro: hints not written
    /// during the outage) starts with every link: a hint it cannot write
    /// or a seal it cannot append costs the next start a scan, nothing more.
    #[test]
    fn a_full_disk_never_stops_a_start() {
        let (bytes, _, starts) = six_links(4);
        let name = segment_file_name(4);
        // Sealed, its hint lost: scanned, and the new hint cannot be written.
        let mut files = Full(Mem::default());
        files.0 .0.insert(name.clone(), bytes.clone());
        let mut keys = Vec::new();
        let outcome = recover_segment(&mut files, 4, |e| keys.push(e.key)).unwrap();
        assert_eq!(keys, (100..106).collect::<Vec<_>>());
        assert!(outcome
            .hint_problem
            .as_deref()
            .is_some_and(|p| p.contains("not written")));
        assert!(!files.0 .0.contains_key(&hint_file_name(4)));
        // Unsealed (a crash), with a torn last record: cut, but the seal
        // cannot be appended; it starts with the whole links, unsealed.
        let unsealed_end = bytes.len() - SEAL_LEN;
        let torn = starts[5] + 3;
        assert!(torn < unsealed_end);
        let mut files = Full(Mem::default());
        files.0 .0.insert(name.clone(), bytes[..torn].to_vec());
        let mut keys = Vec::new();
        let outcome = recover_segment(&mut files, 4, |e| keys.push(e.key)).unwrap();
        assert_eq!(keys, (100..105).collect::<Vec<_>>());
        assert!(!outcome.sealed_now);
        assert!(outcome
            .hint_problem
            .as_deref()
            .is_some_and(|p| p.contains("unsealed")));
        assert_eq!(files.0 .0[&name], bytes[..starts[5]]);
        // The next start, with space, seals it and writes its hint.
        let mut files = files.0;
        let outcome = recover_segment(&mut files, 4, |_| {}).unwrap();
        assert!(outcome.sealed_now && outcome.links == 5);
        assert!(files.0.contains_key(&hint_file_name(4)));
    }

    #[test]
    fn a_hinted_segment_cut_anywhere_is_refused_naming_both_lengths() {
        let (bytes, hint, starts) = six_links(3);
        let name = segment_file_name(3);
        // The repro first: cut at the start of link 5, a record
        // boundary (what remains scans as a whole, unsealed segment).
        let mut cuts = vec![starts[4]];
        cuts.extend(1..bytes.len());
        for cut in cuts {
            let mut files = Mem::default();
            files.0.insert(name.clone(), bytes[..cut].to_vec());
            files.0.insert(hint_file_name(3), hint.clone());
            let err = recover_segment(&mut files, 3, |_| {}).unwrap_err();
            let text = err.to_string();
            assert!(
                matches!(&err, RecoveryError::Scan { error: ScanError::Missing { len, vouched }, .. }
                    if *len == cut as u64 && *vouched == bytes.len() as u64),
                "cut at {cut}: {text}"
            );
            assert!(text.contains(&name), "{text}");
            assert!(text.contains(&cut.to_string()), "{text}");
            assert!(text.contains(&bytes.len().to_string()), "{text}");
            // Nothing was re-sealed shorter, and the hint that proves the
            // segment was longer is kept.
            assert_eq!(files.0[&name], bytes[..cut]);
            assert_eq!(files.0[&hint_file_name(3)], hint);
            assert!(matches!(
                verify_segment(3, &bytes[..cut], Some(&hint)),
                Verdict::Refused(ScanError::Missing { .. })
            ));
        }
        // Whole, it loads from the hint.
        let mut files = Mem::default();
        files.0.insert(name, bytes.clone());
        files.0.insert(hint_file_name(3), hint);
        let outcome = recover_segment(&mut files, 3, |_| {}).unwrap();
        assert!(outcome.from_hint && outcome.links == 6);
    }

    #[test]
    fn a_hint_that_passes_its_checksum_but_claims_any_length_never_panics() {
        // Found by the structure-aware fuzz target: a hint rewritten with a
        // valid checksum whose seal copy claims a length near `u64::MAX`.
        let (bytes, hint, _) = six_links(3);
        for claim in [u64::MAX, u64::MAX - 40, 1 << 40] {
            let mut forged = hint.clone();
            forged[24..32].copy_from_slice(&claim.to_le_bytes());
            let body = forged.len() - 4;
            let crc = crc32c::crc32c(&forged[..body]);
            forged[body..].copy_from_slice(&crc.to_le_bytes());
            let mut files = Mem::default();
            files.0.insert(segment_file_name(3), bytes.clone());
            files.0.insert(hint_file_name(3), forged.clone());
            let err = recover_segment(&mut files, 3, |_| {}).unwrap_err();
            assert!(
                matches!(
                    err,
                    RecoveryError::Scan {
                        error: ScanError::Missing { .. },
                        ..
                    }
                ),
                "{err}"
            );
            assert!(matches!(
                verify_segment(3, &bytes, Some(&forged)),
                Verdict::Refused(ScanError::Missing { .. })
            ));
        }
    }

    #[test]
    fn the_high_water_mark_round_trips_and_every_flip_is_caught() {
        let mark = HighWater {
            next_id: 123_456,
            next_segment: 42,
        };
        let bytes = mark.encode();
        assert_eq!(HighWater::decode(&bytes), Some(mark));
        for at in 0..bytes.len() {
            for bit in 0..8 {
                let mut bad = bytes.clone();
                bad[at] ^= 1 << bit;
                assert_eq!(HighWater::decode(&bad), None, "flip at {at}.{bit}");
            }
        }
        assert_eq!(HighWater::decode(&bytes[..bytes.len() - 1]), None);
    }

    #[test]
    fn an_orphaned_hint_counts_for_the_mark_and_a_lease_is_extended_at_half() {
        let (_, hint, _) = six_links(9);
        assert_eq!(
            HighWater::of_hint(9, &hint),
            HighWater {
                next_id: 6,
                next_segment: 10
            }
        );
        // A damaged hint still proves its number was used.
        let mut bad = hint.clone();
        bad[30] ^= 1;
        assert_eq!(HighWater::of_hint(9, &bad).next_segment, 10);
        let limit = HighWater::default().leased();
        assert!(!limit.needs_extension(HighWater::default()));
        assert!(limit.needs_extension(HighWater {
            next_id: ID_LEASE / 2,
            next_segment: 0
        }));
        assert!(limit.needs_extension(HighWater {
            next_id: 0,
            next_segment: SEGMENT_LEASE / 2
        }));
    }
}

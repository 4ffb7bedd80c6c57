//! Recovering one segment at start: load it from its hint file when it is
//! sealed and the hint checks out, otherwise scan it, apply the recovery
//! rule of [`crate::log::scan`], and leave it sealed with a hint.
//!
//! The file operations go through [`RecoveryFiles`]: the runtime
//! implements it with `std::fs`, the crash simulator with its model of a
//! disk, so both run exactly this code.

use std::io;

use crate::log::hint::{decode_hint, encode_hint, hint_file_name, hint_seal};
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
    /// Links loaded.
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
        Decoded::Record(Record::Seal(seal), SEAL_LEN) if seal.data_len + SEAL_LEN as u64 == len => {
            Some(seal)
        }
        _ => None,
    }
}

/// Recovers segment `number`, calling `on_link(key, offset)` for every link
/// it holds.
///
/// # Errors
/// [`RecoveryError`]; the server must not start.
pub fn recover_segment(
    files: &mut impl RecoveryFiles,
    number: u64,
    mut on_link: impl FnMut(u64, u32),
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
    let hint_vouches = hint
        .as_deref()
        .and_then(|h| hint_seal(h, number))
        .map_or(0, |seal| seal.data_len + SEAL_LEN as u64);
    if let Some(seal) = seal_at_end(len, &tail) {
        match &hint {
            None => outcome.hint_problem = Some("no hint file".into()),
            Some(hint) => match decode_hint(hint, number, &seal) {
                Ok(entries) => {
                    for (key, offset) in entries {
                        on_link(key, offset);
                    }
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
    let mut entries: Vec<(u64, u32)> = Vec::new();
    let mut bad_url = None;
    let scan = scan_vouched(&bytes, number, hint_vouches, |link, offset| {
        if std::str::from_utf8(link.url).is_err() {
            bad_url = bad_url.or(Some(offset));
        }
        // Offsets fit: segments are bounded far below 4 GiB.
        entries.push((link.key, u32::try_from(offset).unwrap_or(u32::MAX)));
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
            files
                .truncate_and_append(&name, valid_len, &sealed)
                .map_err(io_err(&name))?;
            outcome.sealed_now = true;
            seal
        }
    };
    for &(key, offset) in &entries {
        on_link(key, offset);
    }
    let mut hint = Vec::with_capacity(64 + entries.len() * 12);
    encode_hint(number, &seal, entries, &mut hint);
    files
        .write_atomic(&hint_name, &hint)
        .map_err(io_err(&hint_name))?;
    Ok(outcome)
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
    let vouched = hint
        .and_then(|h| hint_seal(h, number))
        .map_or(0, |seal| seal.data_len + SEAL_LEN as u64);
    let scan = match scan_vouched(bytes, number, vouched, |_, _| {}) {
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

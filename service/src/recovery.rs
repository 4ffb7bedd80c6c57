//! Start-up recovery: replay every segment into the index.
//!
//! [`scan_segment`] is pure: it walks a segment's bytes and says where the
//! valid records end and why. A torn final record (the process or machine
//! died mid-write) is cut off; damage anywhere before the tail stops the
//! server with the file name and offset, because dropping records silently
//! would lose URLs that were acknowledged.
//!
//! What counts as the tail: acknowledged records always form a prefix of a
//! segment (a shard writes a batch only after the previous one is synced,
//! and replies only after its own sync), and every batch after the first
//! opens with a commit marker giving the offset up to which the segment was
//! durable when it was written (see [`crate::log`]). Damage at offset `p` is
//! therefore in acknowledged data exactly when a valid marker somewhere
//! after it claims durability beyond `p`: that is corruption, and the
//! server refuses to start. Any other damage (a record running past the end
//! of the file, a checksum failure, zero fill where the file system or a
//! DMA writer extended the file, a half-written block, even valid but
//! unacknowledged records after a hole) lies in the one batch that was never
//! acknowledged: a torn tail, cut off. A forged marker in garbage needs a
//! CRC32C collision (odds 2^-32 per candidate offset).
//!
//! [`recover`] is the driver the servers call before starting their
//! runtimes: plain blocking `std::fs`, run once.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::log::{
    decode_record, parse_segment_file_name, Decoded, Record, MARKER_LEN, RECORD_HEADER_LEN,
};

/// How a segment's valid records end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SegmentEnd {
    /// Every byte belongs to a valid record.
    Clean,
    /// A torn final record starts at `valid_len`; cut the file there.
    Torn {
        /// Length of the valid prefix.
        valid_len: u64,
    },
}

/// Damage before a segment's tail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corruption {
    /// Byte offset of the damaged record.
    pub offset: u64,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Walks `bytes`, calling `on_record` for each valid record.
///
/// # Errors
/// [`Corruption`] for damage before the tail.
pub fn scan_segment<'a>(
    bytes: &'a [u8],
    mut on_record: impl FnMut(Record<'a>),
) -> Result<SegmentEnd, Corruption> {
    let mut pos = 0usize;
    while let Some(rest) = bytes.get(pos..).filter(|rest| !rest.is_empty()) {
        let torn = SegmentEnd::Torn {
            valid_len: pos as u64,
        };
        let reason = match decode_record(rest) {
            Decoded::Record(record, len) => {
                if record.marker().is_none() {
                    on_record(record);
                }
                pos += len;
                continue;
            }
            Decoded::Incomplete => return Ok(torn),
            Decoded::BadLength => "record length out of range",
            Decoded::BadChecksum => "checksum mismatch",
        };
        if durable_beyond(bytes, pos) {
            return Err(Corruption {
                offset: pos as u64,
                reason,
            });
        }
        return Ok(torn);
    }
    Ok(SegmentEnd::Clean)
}

/// `true` if a well-formed commit marker after `pos` claims that the segment
/// was durable beyond `pos`.
fn durable_beyond(bytes: &[u8], pos: usize) -> bool {
    let marker_len = ((MARKER_LEN - RECORD_HEADER_LEN) as u32).to_le_bytes();
    (pos + 1..bytes.len()).any(|start| {
        // Cheap filter first: only a marker's length field can start a
        // marker, so garbage is never checksummed at every offset.
        bytes.get(start..start + 4) == Some(&marker_len[..])
            && matches!(
                decode_record(&bytes[start..]),
                Decoded::Record(record, _) if record.marker().is_some_and(|end| end > pos as u64)
            )
    })
}

/// Why recovery could not finish. The server refuses to start.
#[derive(Debug)]
#[non_exhaustive]
pub enum RecoveryError {
    /// Reading, truncating or listing failed.
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The failure.
        source: io::Error,
    },
    /// A segment is damaged before its tail.
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Where and what.
        corruption: Corruption,
    },
    /// A record's URL is not UTF-8 (it was validated before it was written).
    InvalidUrl {
        /// The segment file.
        path: PathBuf,
        /// The record's id.
        id: u64,
    },
}

impl fmt::Display for RecoveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecoveryError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            RecoveryError::Corrupt { path, corruption } => write!(
                f,
                "{}: corrupt log at byte offset {}: {} (refusing to start rather than lose \
                 acknowledged URLs; restore the file or move it aside to proceed)",
                path.display(),
                corruption.offset,
                corruption.reason
            ),
            RecoveryError::InvalidUrl { path, id } => {
                write!(
                    f,
                    "{}: record {id} holds a URL that is not UTF-8",
                    path.display()
                )
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

/// What recovery found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// URLs loaded.
    pub urls: u64,
    /// Segment files read.
    pub segments: u64,
    /// Torn tails cut off (one per segment at most).
    pub torn_tails: u64,
    /// One past the largest id found (0 for an empty directory).
    pub next_id: u64,
    /// One past the largest segment number found.
    pub next_segment: u64,
    /// Time taken.
    pub elapsed: Duration,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> RecoveryError + '_ {
    move |source| RecoveryError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Replays every segment in `dir` (created if missing), calling `insert`
/// for every record, and cuts torn tails off.
///
/// # Errors
/// [`RecoveryError`] on I/O failure or corruption before a tail.
pub fn recover(
    dir: &Path,
    mut insert: impl FnMut(u64, &str),
) -> Result<RecoveryReport, RecoveryError> {
    let started = Instant::now();
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let mut segments: Vec<(u64, PathBuf)> = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        if let Some(number) = entry.file_name().to_str().and_then(parse_segment_file_name) {
            segments.push((number, entry.path()));
        }
    }
    segments.sort_unstable();

    let mut report = RecoveryReport {
        urls: 0,
        segments: segments.len() as u64,
        torn_tails: 0,
        next_id: 0,
        next_segment: segments.last().map_or(0, |(n, _)| n + 1),
        elapsed: Duration::ZERO,
    };
    for (_, path) in &segments {
        let bytes = fs::read(path).map_err(io_err(path))?;
        let mut bad_id = None;
        let end = scan_segment(&bytes, |record| match std::str::from_utf8(record.url) {
            Ok(url) => {
                insert(record.id, url);
                report.urls += 1;
                report.next_id = report.next_id.max(record.id.saturating_add(1));
            }
            Err(_) => bad_id = bad_id.or(Some(record.id)),
        })
        .map_err(|corruption| RecoveryError::Corrupt {
            path: path.clone(),
            corruption,
        })?;
        if let Some(id) = bad_id {
            return Err(RecoveryError::InvalidUrl {
                path: path.clone(),
                id,
            });
        }
        if let SegmentEnd::Torn { valid_len } = end {
            tracing::warn!(
                path = %path.display(),
                valid_len,
                cut = bytes.len() as u64 - valid_len,
                "cutting a torn final record off a log segment"
            );
            let file = fs::OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(io_err(path))?;
            file.set_len(valid_len).map_err(io_err(path))?;
            file.sync_all().map_err(io_err(path))?;
            report.torn_tails += 1;
        }
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{encode_record, segment_file_name};

    fn segment(records: &[(u64, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (id, url) in records {
            encode_record(*id, url.as_bytes(), &mut out);
        }
        out
    }

    fn scan(bytes: &[u8]) -> (Vec<u64>, Result<SegmentEnd, Corruption>) {
        let mut ids = Vec::new();
        let end = scan_segment(bytes, |r| ids.push(r.id));
        (ids, end)
    }

    #[test]
    fn clean_segment() {
        let bytes = segment(&[(1, "http://a"), (2, "http://b")]);
        assert_eq!(scan(&bytes), (vec![1, 2], Ok(SegmentEnd::Clean)));
        assert_eq!(scan(&[]), (vec![], Ok(SegmentEnd::Clean)));
    }

    #[test]
    fn every_cut_through_the_last_record_is_a_torn_tail() {
        let whole = segment(&[(1, "http://a"), (2, "http://bbbbbbbb")]);
        let first_len = segment(&[(1, "http://a")]).len();
        for cut in first_len + 1..whole.len() {
            let (ids, end) = scan(&whole[..cut]);
            assert_eq!(ids, [1], "cut at {cut}");
            assert_eq!(
                end,
                Ok(SegmentEnd::Torn {
                    valid_len: first_len as u64
                })
            );
        }
    }

    #[test]
    fn garbage_in_the_final_record_is_a_torn_tail() {
        let mut bytes = segment(&[(1, "http://a"), (2, "http://b")]);
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        assert_eq!(scan(&bytes).1, Ok(SegmentEnd::Torn { valid_len: 24 }));
        // Zeros where the file system extended the file but no data landed.
        let mut zeros = segment(&[(1, "http://a")]);
        zeros.extend_from_slice(&[0; 100]);
        assert_eq!(
            scan(&zeros),
            (vec![1], Ok(SegmentEnd::Torn { valid_len: 24 }))
        );
    }

    /// Batches as `LogWriter` writes them: a marker before every batch but
    /// the first.
    fn batches(batches: &[&[(u64, &str)]]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, batch) in batches.iter().enumerate() {
            if i > 0 {
                crate::log::encode_marker(out.len() as u64, &mut out);
            }
            out.extend_from_slice(&segment(batch));
        }
        out
    }

    #[test]
    fn markers_are_not_urls() {
        let bytes = batches(&[&[(1, "http://a")], &[(2, "http://b")], &[(3, "http://c")]]);
        assert_eq!(scan(&bytes), (vec![1, 2, 3], Ok(SegmentEnd::Clean)));
    }

    #[test]
    fn damage_in_acknowledged_batches_is_corruption() {
        // Batch 1 is vouched for by the marker opening batch 2.
        let clean = batches(&[&[(1, "http://a"), (2, "http://b")], &[(3, "http://c")]]);
        let mut bytes = clean.clone();
        bytes[30] ^= 0x01; // inside record 2's body
        assert_eq!(
            scan(&bytes).1,
            Err(Corruption {
                offset: 24,
                reason: "checksum mismatch"
            })
        );
        let mut bytes = clean.clone();
        bytes[24..28].copy_from_slice(&u32::MAX.to_le_bytes()); // record 2's length
        assert_eq!(
            scan(&bytes).1,
            Err(Corruption {
                offset: 24,
                reason: "record length out of range"
            })
        );
        // Zeros in the middle of acknowledged data: refuse, do not cut.
        let mut bytes = clean;
        bytes[24..48].fill(0);
        assert_eq!(
            scan(&bytes).1,
            Err(Corruption {
                offset: 24,
                reason: "record length out of range"
            })
        );
    }

    #[test]
    fn damage_in_the_unacknowledged_batch_is_a_torn_tail() {
        // A hole in the last batch followed by more of its (never
        // acknowledged) records, as a torn block-level write leaves it.
        let mut bytes = batches(&[&[(1, "http://a")], &[(2, "http://b"), (3, "http://c")]]);
        let batch2 = 24 + MARKER_LEN;
        bytes[batch2..batch2 + 24].fill(0); // record 2 lost, record 3 intact
        assert_eq!(
            scan(&bytes),
            (
                vec![1],
                Ok(SegmentEnd::Torn {
                    valid_len: batch2 as u64
                })
            )
        );
        // DMA zero padding followed by a half-written block.
        let mut bytes = segment(&[(1, "http://a")]);
        bytes.extend_from_slice(&[0; 300]);
        bytes.extend_from_slice(b"\x07garbage that is no record");
        assert_eq!(
            scan(&bytes),
            (vec![1], Ok(SegmentEnd::Torn { valid_len: 24 }))
        );
        // A damaged length in the very last record.
        let mut bytes = segment(&[(1, "http://a"), (2, "http://b")]);
        bytes[24..28].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            scan(&bytes),
            (vec![1], Ok(SegmentEnd::Torn { valid_len: 24 }))
        );
    }

    fn urls_in(dir: &Path) -> (Vec<(u64, String)>, Result<RecoveryReport, RecoveryError>) {
        let mut urls = Vec::new();
        let report = recover(dir, |id, url| urls.push((id, url.to_owned())));
        urls.sort();
        (urls, report)
    }

    #[test]
    fn recovers_an_empty_directory() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let (urls, report) = urls_in(&data);
        let report = report.unwrap();
        assert!(urls.is_empty() && data.is_dir());
        assert_eq!(
            (report.urls, report.next_id, report.next_segment),
            (0, 0, 0)
        );
    }

    #[test]
    fn recovers_many_segments_and_cuts_torn_tails() {
        let dir = tempfile::tempdir().unwrap();
        let mut expected = Vec::new();
        for n in 0..20u64 {
            let records: Vec<(u64, String)> = (0..50)
                .map(|i| (n * 1000 + i, format!("http://e.com/{n}/{i}")))
                .collect();
            let refs: Vec<(u64, &str)> = records.iter().map(|(id, u)| (*id, u.as_str())).collect();
            let mut bytes = segment(&refs);
            if n % 5 == 0 {
                bytes.extend_from_slice(&[9, 0, 0]); // torn header
            }
            fs::write(dir.path().join(segment_file_name(n * 3)), bytes).unwrap();
            expected.extend(records);
        }
        fs::write(dir.path().join("code.key"), [0u8; 16]).unwrap(); // not a segment
        let (urls, report) = urls_in(dir.path());
        let report = report.unwrap();
        expected.sort();
        assert_eq!(urls, expected);
        assert_eq!(report.urls, 1000);
        assert_eq!(report.segments, 20);
        assert_eq!(report.torn_tails, 4);
        assert_eq!(report.next_id, 19_050);
        assert_eq!(report.next_segment, 58);
        // The tails were cut: a second recovery finds nothing to cut.
        let (again, report) = urls_in(dir.path());
        assert_eq!(again, expected);
        assert_eq!(report.unwrap().torn_tails, 0);
    }

    #[test]
    fn refuses_a_corrupt_middle_and_names_file_and_offset() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = batches(&[&[(1, "http://a"), (2, "http://b")], &[(3, "http://c")]]);
        bytes[40] ^= 0x55;
        let path = dir.path().join(segment_file_name(4));
        fs::write(&path, &bytes).unwrap();
        let err = urls_in(dir.path()).1.unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("00000000000000000004.log"), "{msg}");
        assert!(msg.contains("byte offset 24"), "{msg}");
        assert_eq!(fs::read(&path).unwrap(), bytes, "nothing was cut");
    }
}

//! The process-wide table of segment files: numbers, paths, and the small
//! index ([`FileIdx`]) the key directory stores instead of a path.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use crate::log::record::{
    encode_link, encode_marker, encode_preamble, encode_seal, encode_tombstone, Keyed, Link, Seal,
    NO_ID,
};

/// Index of a segment in the [`SegmentTable`]; what the key directory
/// stores for a link's file. Fits in [`FILE_IDX_BITS`] bits.
pub type FileIdx = u32;

/// Bits of a [`FileIdx`]: 4M segments, 256 TiB of log at 64 MiB each.
pub const FILE_IDX_BITS: u32 = 22;

/// The file name of segment `number`.
pub fn segment_file_name(number: u64) -> String {
    format!("{number:020}.log")
}

/// The segment number of a file name, if it is a segment's.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    parse_numbered(name, ".log")
}

/// The segment number of a hint file's name.
pub fn parse_hint_file_name(name: &str) -> Option<u64> {
    parse_numbered(name, ".hint")
}

/// The marker a start refused for damage in segment `number` leaves
/// beside it. A hint marks a sealed segment's place when the segment is
/// moved aside; the segment a crash damages is usually the one being
/// written, which has no hint, so this marks it instead: while a marker's
/// segment is missing, merges forget no tombstone (the segment may be
/// moved back, and its older records would come back with it; review 6).
/// A start that loads the segment removes it.
pub fn damaged_file_name(number: u64) -> String {
    format!("{number:020}.damaged")
}

/// The segment number of a [`damaged_file_name`].
pub fn parse_damaged_file_name(name: &str) -> Option<u64> {
    parse_numbered(name, ".damaged")
}

pub(crate) fn parse_numbered(name: &str, suffix: &str) -> Option<u64> {
    let digits = name.strip_suffix(suffix)?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// A whole sealed segment `number` as the writer lays one out: the
/// preamble, then `batches`, each after the first opened by a commit marker
/// for everything before it, then the seal. For tests, the fuzz targets
/// and tools that need a valid segment without running a writer.
pub fn encode_sealed_segment(number: u64, batches: &[&[Link<'_>]]) -> Vec<u8> {
    let keyed: Vec<Vec<Keyed<'_>>> = batches
        .iter()
        .map(|b| b.iter().map(|l| Keyed::Link(*l)).collect())
        .collect();
    let keyed: Vec<&[Keyed<'_>]> = keyed.iter().map(Vec::as_slice).collect();
    encode_sealed_records(number, &keyed)
}

/// As [`encode_sealed_segment`], with tombstones among the records.
pub fn encode_sealed_records(number: u64, batches: &[&[Keyed<'_>]]) -> Vec<u8> {
    let mut bytes = Vec::new();
    encode_preamble(number, &mut bytes);
    let (mut links, mut max_id) = (0u64, None::<u64>);
    for (i, batch) in batches.iter().enumerate() {
        if i > 0 {
            encode_marker(bytes.len() as u64, &mut bytes);
        }
        for record in *batch {
            links += 1;
            match record {
                Keyed::Link(link) => {
                    encode_link(link, &mut bytes);
                    if link.id != NO_ID {
                        max_id = Some(max_id.map_or(link.id, |m| m.max(link.id)));
                    }
                }
                Keyed::Tombstone(t) => encode_tombstone(t, &mut bytes),
            }
        }
    }
    let seal = Seal {
        data_len: bytes.len() as u64,
        crc: crc32c::crc32c(&bytes),
        links,
        max_id: max_id.unwrap_or(0),
    };
    encode_seal(&seal, &mut bytes);
    bytes
}

#[derive(Debug)]
struct Inner {
    next_number: u64,
    numbers: Vec<u64>,
}

/// Every segment of the data directory, old and new. Shared by all cores;
/// touched only when a segment is created or a read needs a path.
#[derive(Debug)]
pub struct SegmentTable {
    dir: PathBuf,
    inner: Mutex<Inner>,
}

/// A segment as the writer and the readers name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentRef {
    /// Its index in the table.
    pub idx: FileIdx,
    /// Its number (file name).
    pub number: u64,
    /// Its path.
    pub path: PathBuf,
}

impl SegmentTable {
    /// An empty table for segments in `dir`, numbering new ones from
    /// `next_number`.
    pub fn new(dir: &Path, next_number: u64) -> Self {
        Self {
            dir: dir.to_owned(),
            inner: Mutex::new(Inner {
                next_number,
                numbers: Vec::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers an existing segment (at recovery). `None` when the table
    /// is full.
    pub fn register(&self, number: u64) -> Option<FileIdx> {
        let mut inner = self.lock();
        let idx = FileIdx::try_from(inner.numbers.len())
            .ok()
            .filter(|&i| i < 1 << FILE_IDX_BITS)?;
        inner.numbers.push(number);
        inner.next_number = inner.next_number.max(number + 1);
        Some(idx)
    }

    /// Numbers new segments from `number` on, if that is past every number
    /// so far: recovery passes the high-water mark (segments moved aside
    /// or lost leave numbers that must never be used again).
    pub fn advance_to(&self, number: u64) {
        let mut inner = self.lock();
        inner.next_number = inner.next_number.max(number);
    }

    /// The number the next new segment gets.
    pub fn next_number(&self) -> u64 {
        self.lock().next_number
    }

    /// Allocates a new segment. `None` when the table is full.
    pub fn create(&self) -> Option<SegmentRef> {
        let mut inner = self.lock();
        let idx = FileIdx::try_from(inner.numbers.len())
            .ok()
            .filter(|&i| i < 1 << FILE_IDX_BITS)?;
        let number = inner.next_number;
        inner.next_number += 1;
        inner.numbers.push(number);
        Some(SegmentRef {
            idx,
            number,
            path: self.dir.join(segment_file_name(number)),
        })
    }

    /// The segment at `idx`.
    pub fn get(&self, idx: FileIdx) -> Option<SegmentRef> {
        let number = *self.lock().numbers.get(idx as usize)?;
        Some(SegmentRef {
            idx,
            number,
            path: self.dir.join(segment_file_name(number)),
        })
    }

    /// Segments registered.
    pub fn len(&self) -> usize {
        self.lock().numbers.len()
    }

    /// `true` when no segment is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(segment_file_name(42), "00000000000000000042.log");
        assert_eq!(
            parse_segment_file_name("00000000000000000042.log"),
            Some(42)
        );
        assert_eq!(parse_hint_file_name("00000000000000000042.hint"), Some(42));
        assert_eq!(parse_segment_file_name("42.log"), None);
        assert_eq!(parse_segment_file_name("0000000000000000004x.log"), None);
        assert_eq!(parse_segment_file_name("code.key"), None);
    }

    #[test]
    fn new_segments_number_past_every_registered_one() {
        let table = SegmentTable::new(Path::new("/d"), 0);
        assert_eq!(table.register(5), Some(0));
        assert_eq!(table.register(2), Some(1));
        let new = table.create().unwrap();
        assert_eq!((new.idx, new.number), (2, 6));
        assert_eq!(new.path, Path::new("/d/00000000000000000006.log"));
        assert_eq!(table.get(1).unwrap().number, 2);
        assert!(table.get(3).is_none());
    }
}

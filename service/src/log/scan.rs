//! Reading one segment back, and the recovery rule: which damage is a
//! torn, unacknowledged tail to cut off, and which is damage to
//! acknowledged data that must stop the server.
//!
//! **Vouched bytes.** A byte is *vouched for* when the log itself proves it
//! was durable before anything after it was acknowledged:
//! - a commit marker at offset `m` with `durable_end = d` vouches for
//!   `0..d` (the writer wrote it only after syncing everything before `d`);
//! - a seal vouches for the whole segment (it is written at a roll or a
//!   clean stop, after which nothing more is appended).
//!
//! **The rule.** Walk the records from the start. At the first damaged
//! record (bad checksum or length, an unknown kind, or one that runs past
//! the end of the file), look for any valid marker or seal *anywhere* in
//! the file that vouches for the damaged offset. If one does, the damage is
//! in acknowledged data: refuse, naming the offset. If none does, the damage
//! lies in the one batch that was in flight at a crash (a torn write, DMA
//! zero padding, a hole from a torn block): cut the file there.
//!
//! Only the last batch written before a crash can be unvouched, and it was
//! acknowledged only if its sync completed; the writer follows every batch
//! with a marker within [`crate::log::VOUCH_DELAY`] when no other batch
//! comes, so the window in which a damaged acknowledged record would be cut
//! rather than refused is that short (see ARCHITECTURE.md).

use crate::log::record::{
    decode_record, looks_like_format_1, Decoded, Keyed, Record, Seal, MAGIC, MARKER_LEN,
    PREAMBLE_LEN, RECORD_HEADER_LEN, SEAL_LEN,
};

/// How a segment ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentEnd {
    /// The file ends with a valid seal: every byte up to it is vouched for.
    /// `trailing` bytes follow the seal (zero padding of an O_DIRECT write
    /// that was not truncated away before a crash): cut them.
    Sealed {
        /// The seal.
        seal: Seal,
        /// Bytes after the seal record.
        trailing: u64,
    },
    /// Every byte is a valid record, but there is no seal (the segment was
    /// being written when the process stopped without a clean shutdown).
    Open {
        /// The file's length.
        len: u64,
    },
    /// Damage in the unvouched tail: the file is valid up to `valid_len`.
    /// When `valid_len < PREAMBLE_LEN` not even the header survived, so
    /// nothing in the file was ever acknowledged.
    Torn {
        /// Length of the valid prefix.
        valid_len: u64,
        /// What the damage looked like.
        reason: &'static str,
    },
}

/// Why a segment cannot be recovered. The server refuses to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanError {
    /// Damage inside vouched bytes.
    Corrupt {
        /// Byte offset of the first damaged record.
        offset: u64,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The file is a segment of log format 1 (Shorty 0.1).
    OldFormat,
    /// The header names another segment (a copied or renamed file).
    WrongSegment {
        /// The number in the header.
        found: u64,
    },
    /// The file is shorter than evidence from outside it (an intact hint's
    /// copy of the seal) proves it was: vouched bytes are missing, so
    /// acknowledged links may be gone even if what remains is whole (a cut
    /// on a record boundary looks exactly like a clean end).
    Missing {
        /// The file's length.
        len: u64,
        /// The length vouched for.
        vouched: u64,
    },
}

impl std::fmt::Display for ScanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScanError::Corrupt { offset, reason } => write!(
                f,
                "damaged acknowledged data at byte offset {offset}: {reason}"
            ),
            ScanError::OldFormat => f.write_str(
                "written by an older Shorty (log format 1), which this version does not read",
            ),
            ScanError::WrongSegment { found } => {
                write!(
                    f,
                    "its header names segment {found}: a renamed or copied file"
                )
            }
            ScanError::Missing { len, vouched } => write!(
                f,
                "the file holds {len} bytes but its hint proves it was sealed at {vouched} bytes: \
                 acknowledged bytes are missing (a truncated file, or a copy of the segment older \
                 than its hint: copy the segment again; deleting the hint starts from what the \
                 file holds and loses the rest)"
            ),
        }
    }
}

/// What a scan found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scan {
    /// How the segment ends.
    pub end: SegmentEnd,
    /// Keyed records (links and tombstones) found (before any cut).
    pub links: u64,
    /// The largest id of a link found, if any link has one.
    pub max_id: Option<u64>,
    /// The end of the bytes vouched for.
    pub vouched_end: u64,
}

/// Scans segment `number`, calling `on_link` with every valid keyed record
/// (link or tombstone) and its offset, and applies the recovery rule.
///
/// # Errors
/// [`ScanError`] when vouched bytes are damaged or the file is not a
/// segment this version reads.
pub fn scan_segment<'a>(
    bytes: &'a [u8],
    number: u64,
    on_link: impl FnMut(Keyed<'a>, u64),
) -> Result<Scan, ScanError> {
    scan_vouched(bytes, number, 0, on_link)
}

/// As [`scan_segment`], with the first `vouched` bytes already vouched for
/// by evidence from outside the file (an intact hint's copy of the seal).
///
/// # Errors
/// As [`scan_segment`].
pub fn scan_vouched<'a>(
    bytes: &'a [u8],
    number: u64,
    vouched: u64,
    mut on_link: impl FnMut(Keyed<'a>, u64),
) -> Result<Scan, ScanError> {
    let mut scan = Scan {
        end: SegmentEnd::Open {
            len: bytes.len() as u64,
        },
        links: 0,
        max_id: None,
        vouched_end: vouched,
    };
    // Missing vouched bytes are damage, not a clean end: a file cut on a
    // record boundary would otherwise scan as whole and lose its tail.
    if (bytes.len() as u64) < vouched {
        return Err(ScanError::Missing {
            len: bytes.len() as u64,
            vouched,
        });
    }
    if bytes.get(..MAGIC.len()) != Some(&MAGIC[..]) {
        if looks_like_format_1(bytes) {
            return Err(ScanError::OldFormat);
        }
        if bytes.is_empty() {
            scan.end = SegmentEnd::Torn {
                valid_len: 0,
                reason: "empty file",
            };
            return Ok(scan);
        }
        return damaged(bytes, 0, "bad magic", scan);
    }
    let mut walk = Walk::new(number);
    loop {
        let pos = walk.pos as usize;
        (scan.links, scan.max_id) = (walk.links, walk.max_id);
        let Some(rest) = bytes.get(pos..).filter(|r| !r.is_empty()) else {
            if pos == MAGIC.len() {
                // The magic and nothing more: the header never landed.
                scan.end = SegmentEnd::Torn {
                    valid_len: pos as u64,
                    reason: "no header",
                };
            }
            return Ok(scan);
        };
        let (record, len) = match decode_record(rest) {
            Decoded::Record(record, len) => (record, len),
            other => return damaged(bytes, pos, other.reason(), scan),
        };
        match walk.step(record, &rest[..len]) {
            Ok(Walked::Header) => {}
            Ok(Walked::Link(link)) => on_link(link, pos as u64),
            Ok(Walked::Marker { durable_end }) => {
                scan.vouched_end = scan.vouched_end.max(durable_end);
            }
            Ok(Walked::Seal(seal)) => {
                scan.vouched_end = (pos + len) as u64;
                scan.end = SegmentEnd::Sealed {
                    seal,
                    trailing: (bytes.len() - pos - len) as u64,
                };
                return Ok(scan);
            }
            Err(WalkError::Damaged(reason)) => return damaged(bytes, pos, reason, scan),
            Err(WalkError::Refused(err)) => return Err(err),
        }
    }
}

/// A walk over a segment's records, after its magic: the checks every
/// reader of a segment makes record by record (the header comes first,
/// once, and names the segment; a marker vouches only for bytes before it;
/// a seal matches everything before it), and the running checksum, link
/// count and largest id a seal is checked against. Shared by
/// [`scan_vouched`] (a whole file in memory) and [`SealedCheck`] (a sealed
/// segment read in chunks).
#[derive(Debug)]
struct Walk {
    number: u64,
    /// Where the next record starts.
    pos: u64,
    /// CRC32C of every byte before `pos`.
    crc: u32,
    links: u64,
    max_id: Option<u64>,
}

/// What a record was, once [`Walk::step`] took it.
enum Walked<'a> {
    Header,
    Link(Keyed<'a>),
    Marker {
        durable_end: u64,
    },
    /// A seal that matches the segment; the walk ends here.
    Seal(Seal),
}

/// Why [`Walk::step`] did not take a record.
enum WalkError {
    /// The record is damage at its offset; the recovery rule decides.
    Damaged(&'static str),
    /// Refused whatever vouches for it.
    Refused(ScanError),
}

impl Walk {
    fn new(number: u64) -> Self {
        Self {
            number,
            pos: MAGIC.len() as u64,
            crc: crc32c::crc32c(&MAGIC),
            links: 0,
            max_id: None,
        }
    }

    /// Takes the record that starts at `self.pos`; `raw` is its bytes.
    fn step<'a>(&mut self, record: Record<'a>, raw: &[u8]) -> Result<Walked<'a>, WalkError> {
        let first = self.pos == MAGIC.len() as u64;
        let walked = match record {
            Record::Header { segment, .. } if first => {
                if segment != self.number {
                    return Err(WalkError::Refused(ScanError::WrongSegment {
                        found: segment,
                    }));
                }
                Walked::Header
            }
            _ if first => return Err(WalkError::Damaged("missing header")),
            Record::Header { .. } => return Err(WalkError::Damaged("second header")),
            Record::Link(link) => {
                self.links += 1;
                if link.id != crate::log::record::NO_ID {
                    self.max_id = Some(self.max_id.map_or(link.id, |m| m.max(link.id)));
                }
                Walked::Link(Keyed::Link(link))
            }
            Record::Tombstone(tombstone) => {
                // Counted with the links: the seal counts the keyed
                // records a hint holds an entry for.
                self.links += 1;
                Walked::Link(Keyed::Tombstone(tombstone))
            }
            Record::Marker { durable_end } if durable_end <= self.pos => {
                Walked::Marker { durable_end }
            }
            Record::Marker { .. } => {
                return Err(WalkError::Damaged("marker vouches for bytes after itself"))
            }
            Record::Seal(seal) => {
                let consistent = seal.data_len == self.pos
                    && seal.crc == self.crc
                    && seal.links == self.links
                    && seal.max_id == self.max_id.unwrap_or(0);
                if !consistent {
                    return Err(WalkError::Refused(ScanError::Corrupt {
                        offset: self.pos,
                        reason: "seal does not match the segment",
                    }));
                }
                return Ok(Walked::Seal(seal));
            }
        };
        self.crc = crc32c::crc32c_append(self.crc, raw);
        self.pos += raw.len() as u64;
        Ok(walked)
    }
}

/// Checks a sealed segment fed in chunks, so that a reader (the scrub
/// after start) need not hold a whole segment (up to 1 GiB) in memory.
/// Sans-IO: the caller reads; [`feed`](Self::feed) says whether the seal
/// checked out, more bytes are needed, or where the damage is. A sealed
/// segment is vouched for to its last byte, so any damage is refused.
#[derive(Debug)]
pub struct SealedCheck {
    walk: Walk,
    /// Bytes fed but not yet taken: at most one record's worth.
    pending: Vec<u8>,
    /// The magic has been checked.
    started: bool,
}

impl SealedCheck {
    /// A check of segment `number`.
    pub fn new(number: u64) -> Self {
        Self {
            walk: Walk::new(number),
            pending: Vec::new(),
            started: false,
        }
    }

    /// Feeds the file's next `bytes` (`eof` when there are no more):
    /// `Ok(true)` once the seal matches everything before it, `Ok(false)`
    /// when more bytes are needed.
    ///
    /// # Errors
    /// [`ScanError`] at the first damage, or when the file ends unsealed.
    pub fn feed(&mut self, bytes: &[u8], eof: bool) -> Result<bool, ScanError> {
        self.pending.extend_from_slice(bytes);
        let corrupt = |offset, reason| ScanError::Corrupt { offset, reason };
        if !self.started {
            if self.pending.len() < MAGIC.len() && !eof {
                return Ok(false);
            }
            if self.pending.get(..MAGIC.len()) != Some(&MAGIC[..]) {
                return Err(corrupt(0, "bad magic"));
            }
            self.pending.drain(..MAGIC.len());
            self.started = true;
        }
        let mut used = 0;
        let result = loop {
            let (record, len) = match decode_record(&self.pending[used..]) {
                Decoded::Record(record, len) => (record, len),
                Decoded::Incomplete if !eof => break Ok(false),
                other => break Err(corrupt(self.walk.pos, other.reason())),
            };
            let offset = self.walk.pos;
            match self.walk.step(record, &self.pending[used..used + len]) {
                Ok(Walked::Seal(_)) => break Ok(true),
                Ok(_) => used += len,
                Err(WalkError::Damaged(reason)) => break Err(corrupt(offset, reason)),
                Err(WalkError::Refused(err)) => break Err(err),
            }
        };
        self.pending.drain(..used);
        result
    }
}

/// Applies the rule at the first damaged offset `pos`.
fn damaged(
    bytes: &[u8],
    pos: usize,
    reason: &'static str,
    mut scan: Scan,
) -> Result<Scan, ScanError> {
    scan.vouched_end = scan.vouched_end.max(vouched_beyond(bytes, pos));
    if (pos as u64) < scan.vouched_end {
        return Err(ScanError::Corrupt {
            offset: pos as u64,
            reason,
        });
    }
    scan.end = SegmentEnd::Torn {
        valid_len: pos as u64,
        reason,
    };
    Ok(scan)
}

/// The furthest end vouched for by any valid marker or seal that starts
/// after `pos` (0 if none).
fn vouched_beyond(bytes: &[u8], pos: usize) -> u64 {
    let marker_len = ((MARKER_LEN - RECORD_HEADER_LEN) as u32).to_le_bytes();
    let seal_len = ((SEAL_LEN - RECORD_HEADER_LEN) as u32).to_le_bytes();
    let mut vouched = 0;
    for start in pos + 1..bytes.len() {
        // Cheap filter first: only a marker's or a seal's length field can
        // start one, so garbage is not checksummed at every offset.
        let head = bytes.get(start..start + 4);
        if head != Some(&marker_len[..]) && head != Some(&seal_len[..]) {
            continue;
        }
        match decode_record(&bytes[start..]) {
            Decoded::Record(Record::Marker { durable_end }, _) if durable_end <= start as u64 => {
                vouched = vouched.max(durable_end);
            }
            Decoded::Record(Record::Seal(seal), _) if seal.data_len == start as u64 => {
                vouched = vouched.max((start + SEAL_LEN) as u64);
            }
            _ => {}
        }
    }
    vouched
}

/// `true` when a scan's outcome leaves nothing acknowledged in the file
/// (not even its header survived), so recovery may delete it.
pub fn holds_nothing(end: &SegmentEnd) -> bool {
    matches!(end, SegmentEnd::Torn { valid_len, .. } if *valid_len < PREAMBLE_LEN as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::record::{encode_link, encode_marker, encode_preamble, encode_seal, Link};

    /// A segment as the writer lays it out: preamble, then batches, each but
    /// the first opened by a marker vouching for everything before it.
    struct Builder {
        bytes: Vec<u8>,
        links: u64,
        max_id: u64,
    }

    impl Builder {
        fn new(number: u64) -> Self {
            let mut bytes = Vec::new();
            encode_preamble(number, &mut bytes);
            Self {
                bytes,
                links: 0,
                max_id: 0,
            }
        }

        fn batch(mut self, ids: &[u64]) -> Self {
            if self.links > 0 {
                encode_marker(self.bytes.len() as u64, &mut self.bytes);
            }
            for &id in ids {
                let url = format!("http://e.com/{id}");
                encode_link(
                    &Link {
                        key: id * 10,
                        id,
                        url: url.as_bytes(),
                        options: &[],
                    },
                    &mut self.bytes,
                );
                self.links += 1;
                self.max_id = self.max_id.max(id);
            }
            self
        }

        fn seal(mut self) -> Self {
            let seal = Seal {
                data_len: self.bytes.len() as u64,
                crc: crc32c::crc32c(&self.bytes),
                links: self.links,
                max_id: self.max_id,
            };
            encode_seal(&seal, &mut self.bytes);
            self
        }
    }

    fn scan(bytes: &[u8]) -> (Vec<u64>, Result<Scan, ScanError>) {
        let mut ids = Vec::new();
        let result = scan_segment(bytes, 3, |link, _| ids.push(link.link().unwrap().id));
        (ids, result)
    }

    fn end(bytes: &[u8]) -> Result<SegmentEnd, ScanError> {
        scan(bytes).1.map(|s| s.end)
    }

    #[test]
    fn a_sealed_segment_is_vouched_for_to_its_last_byte() {
        let bytes = Builder::new(3).batch(&[1, 2]).batch(&[3]).seal().bytes;
        let (ids, result) = scan(&bytes);
        let result = result.unwrap();
        assert_eq!(ids, [1, 2, 3]);
        assert_eq!(result.vouched_end, bytes.len() as u64);
        assert!(matches!(result.end, SegmentEnd::Sealed { trailing: 0, seal } if seal.links == 3));
    }

    #[test]
    fn damage_anywhere_in_a_sealed_segment_is_refused() {
        // Bit rot in the last batch of a sealed segment: the case a marker
        // alone could not catch.
        let clean = Builder::new(3).batch(&[1, 2]).batch(&[3]).seal().bytes;
        for at in 0..clean.len() - SEAL_LEN {
            let mut bytes = clean.clone();
            bytes[at] ^= 0x20;
            assert!(
                matches!(end(&bytes), Err(ScanError::Corrupt { .. })),
                "flip at {at}: {:?}",
                end(&bytes)
            );
        }
    }

    /// Feeds `bytes` to a [`SealedCheck`] in chunks of `chunk` bytes.
    fn check_in_chunks(bytes: &[u8], chunk: usize) -> Result<bool, ScanError> {
        let mut check = SealedCheck::new(3);
        for piece in bytes.chunks(chunk) {
            if check.feed(piece, false)? {
                return Ok(true);
            }
        }
        check.feed(&[], true)
    }

    #[test]
    fn a_sealed_segment_checks_the_same_in_chunks_as_whole() {
        let clean = Builder::new(3).batch(&[1, 2]).batch(&[3]).seal().bytes;
        for chunk in [1, 7, 64, clean.len()] {
            assert_eq!(check_in_chunks(&clean, chunk), Ok(true), "chunk {chunk}");
        }
        // Damage anywhere: refused in chunks exactly where a whole scan
        // refuses it, naming the same offset.
        for at in 0..clean.len() {
            let mut bytes = clean.clone();
            bytes[at] ^= 0x20;
            let whole = end(&bytes);
            let chunked = check_in_chunks(&bytes, 5);
            match whole {
                Err(ScanError::Corrupt { offset, .. }) => assert!(
                    matches!(chunked, Err(ScanError::Corrupt { offset: o, .. }) if o == offset),
                    "flip at {at}: {chunked:?}, whole {offset}"
                ),
                other => assert!(chunked.is_err(), "flip at {at}: {chunked:?} / {other:?}"),
            }
        }
        // Unsealed: not a sealed segment.
        let open = Builder::new(3).batch(&[1]).bytes;
        assert!(check_in_chunks(&open, 3).is_err());
    }

    #[test]
    fn the_unvouched_last_batch_is_cut_at_any_tear() {
        let first = Builder::new(3).batch(&[1]).batch(&[2]).bytes;
        let whole = Builder::new(3).batch(&[1]).batch(&[2]).batch(&[3, 4]).bytes;
        // The last batch starts with its marker.
        for cut in first.len() + 1..whole.len() {
            let (ids, result) = scan(&whole[..cut]);
            // Everything vouched for survives; a tear on a record boundary
            // is indistinguishable from a clean end and keeps what is whole.
            assert_eq!(ids[..2], [1, 2], "cut at {cut}");
            match result.unwrap().end {
                SegmentEnd::Torn { valid_len, .. } => {
                    assert!(valid_len >= first.len() as u64 && valid_len < cut as u64)
                }
                SegmentEnd::Open { len } => assert_eq!(len, cut as u64),
                other => panic!("cut at {cut}: {other:?}"),
            }
        }
        // Zeros where the file system extended the file but no data landed.
        let mut zeros = first.clone();
        zeros.extend_from_slice(&[0; 300]);
        assert!(matches!(
            end(&zeros).unwrap(),
            SegmentEnd::Torn { valid_len, .. } if valid_len == first.len() as u64
        ));
    }

    #[test]
    fn damage_before_a_marker_is_refused_with_its_offset() {
        let bytes = Builder::new(3).batch(&[1, 2]).batch(&[3]).bytes;
        let second = PREAMBLE_LEN + crate::log::record::link_len(14);
        let mut flipped = bytes.clone();
        flipped[second + 12] ^= 1;
        assert_eq!(
            end(&flipped),
            Err(ScanError::Corrupt {
                offset: second as u64,
                reason: "checksum mismatch"
            })
        );
        // A damaged length that runs past the end of the file is damage
        // too, not a torn tail, when a marker vouches for it.
        let mut long = bytes.clone();
        long[second..second + 4].copy_from_slice(&1_000_000u32.to_le_bytes());
        assert_eq!(
            end(&long),
            Err(ScanError::Corrupt {
                offset: second as u64,
                reason: "record runs past the end of the file"
            })
        );
        // Zeros over vouched data.
        let mut zeroed = bytes;
        zeroed[second..second + 20].fill(0);
        assert!(matches!(end(&zeroed), Err(ScanError::Corrupt { .. })));
    }

    #[test]
    fn a_damaged_magic_in_a_vouched_segment_is_refused_not_cut() {
        let mut bytes = Builder::new(3).batch(&[1]).seal().bytes;
        bytes[0] = b'X';
        assert!(matches!(
            end(&bytes),
            Err(ScanError::Corrupt { offset: 0, .. })
        ));
        // Unvouched (one unsynced batch, crash): the whole file goes.
        let mut bytes = Builder::new(3).batch(&[1]).bytes;
        bytes[0] = b'X';
        let end = end(&bytes).unwrap();
        assert!(holds_nothing(&end), "{end:?}");
    }

    #[test]
    fn other_files_are_named_for_what_they_are() {
        let mut v1 = (19u32).to_le_bytes().to_vec();
        let body = [&7u64.to_le_bytes()[..], b"http://old/"].concat();
        v1.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
        v1.extend_from_slice(&body);
        assert_eq!(end(&v1), Err(ScanError::OldFormat));
        let other = Builder::new(4).batch(&[1]).bytes;
        assert_eq!(end(&other), Err(ScanError::WrongSegment { found: 4 }));
        assert!(holds_nothing(&end(&[]).unwrap()));
        assert!(holds_nothing(&end(&MAGIC).unwrap()), "magic, no header");
    }

    #[test]
    fn padding_after_a_seal_is_trailing_not_damage() {
        let sealed = Builder::new(3).batch(&[1]).seal().bytes;
        let mut padded = sealed.clone();
        padded.extend_from_slice(&[0; 4000]);
        assert!(matches!(
            end(&padded).unwrap(),
            SegmentEnd::Sealed { trailing: 4000, .. }
        ));
    }
}

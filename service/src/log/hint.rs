//! Hint files (Bitcask's): for each sealed segment, the key and offset of
//! every link it holds, so a restart loads the key directory without
//! reading the segment.
//!
//! `NNNNNNNNNNNNNNNNNNNN.hint` sits beside its segment:
//!
//! | offset | size | field                                             |
//! |-------:|-----:|---------------------------------------------------|
//! | 0      | 8    | magic `SHORTYHT`                                  |
//! | 8      | 2    | format `u16` (= 2), then 6 bytes of zero          |
//! | 16     | 8    | segment number `u64`                              |
//! | 24     | 28   | the segment's seal: `data_len` `u64`, CRC `u32`, links `u64`, max id `u64` |
//! | 52     | 12·n | entries: key `u64`, record offset `u32`            |
//! | end−4  | 4    | CRC32C of everything before it                    |
//!
//! A hint is used only if its checksum holds, it names its segment, its
//! copy of the seal equals the seal at the end of the segment, it has
//! exactly as many entries as the seal counts links, and every entry points
//! inside the sealed bytes: it never vouches for more than the segment
//! holds. Anything else and recovery scans the segment instead.
//!
//! Room for deletes: a tombstone will be an entry whose offset is
//! `u32::MAX` (no link record can start there), counted separately.

use bytes::BufMut;

use crate::log::record::{Seal, LINK_OVERHEAD, PREAMBLE_LEN, SEAL_LEN};

/// The first 8 bytes of a hint file.
pub const HINT_MAGIC: [u8; 8] = *b"SHORTYHT";

/// Bytes before the first entry.
pub const HINT_HEADER_LEN: usize = 52;

/// Bytes per entry.
pub const HINT_ENTRY_LEN: usize = 12;

/// Where the seal copy's link count lies: after the magic, format,
/// segment number, `data_len` and CRC.
const LINKS_AT: usize = 8 + 8 + 8 + 8 + 4;

/// Links worth reserving room for in the key directory for one segment,
/// from the first bytes of its hint (`header`), the hint file's length and
/// the segment file's length, before anything is checksummed. Only a count
/// that both lengths confirm is taken (an intact hint holds exactly
/// [`HINT_ENTRY_LEN`] bytes per link, and a segment at least
/// [`LINK_OVERHEAD`] per link); anything else reserves nothing, so a
/// damaged hint costs a scan and the table's normal growth, never an
/// allocation its files cannot back.
pub fn hint_reservation(header: &[u8], hint_len: u64, segment_len: u64) -> u64 {
    let Some(links) = header
        .get(LINKS_AT..LINKS_AT + 8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
    else {
        return 0;
    };
    let hint_len_claimed = links
        .checked_mul(HINT_ENTRY_LEN as u64)
        .and_then(|n| n.checked_add((HINT_HEADER_LEN + 4) as u64));
    let segment_room =
        segment_len.saturating_sub((PREAMBLE_LEN + SEAL_LEN) as u64) / LINK_OVERHEAD as u64;
    if hint_len_claimed == Some(hint_len) && links <= segment_room {
        links
    } else {
        0
    }
}

/// Why a hint file cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HintError {
    /// Not a hint file of this format.
    BadHeader,
    /// The checksum does not match.
    BadChecksum,
    /// It belongs to another segment or another seal of it.
    Mismatch,
    /// An entry points outside the sealed bytes.
    BadEntry,
}

impl std::fmt::Display for HintError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HintError::BadHeader => "not a hint file of this format",
            HintError::BadChecksum => "checksum mismatch",
            HintError::Mismatch => "it does not match its segment's seal",
            HintError::BadEntry => "an entry points outside the segment",
        })
    }
}

/// The file name of segment `number`'s hint.
pub fn hint_file_name(number: u64) -> String {
    format!("{number:020}.hint")
}

/// Encodes the hint of segment `segment`, sealed with `seal`, holding the
/// links `entries` (key, record offset).
pub fn encode_hint(
    segment: u64,
    seal: &Seal,
    entries: impl IntoIterator<Item = (u64, u32)>,
    dst: &mut Vec<u8>,
) {
    let start = dst.len();
    dst.put_slice(&HINT_MAGIC);
    dst.put_u16_le(crate::log::record::FORMAT_VERSION);
    dst.put_bytes(0, 6);
    dst.put_u64_le(segment);
    dst.put_u64_le(seal.data_len);
    dst.put_u32_le(seal.crc);
    dst.put_u64_le(seal.links);
    dst.put_u64_le(seal.max_id);
    for (key, offset) in entries {
        dst.put_u64_le(key);
        dst.put_u32_le(offset);
    }
    let crc = crc32c::crc32c(&dst[start..]);
    dst.put_u32_le(crc);
}

/// How many of a segment's bytes its hint file (`hint`, if any) vouches
/// for: the sealed length, seal included, of an intact hint's seal copy
/// ([`hint_seal`]); 0 without one. Recovery, `verify` and export judge a
/// segment by it alike.
pub fn hint_vouches(hint: Option<&[u8]>, segment: u64) -> u64 {
    hint.and_then(|h| hint_seal(h, segment))
        .map_or(0, |seal| seal.data_len.saturating_add(SEAL_LEN as u64))
}

/// The copy of the seal a hint file holds, if the hint is intact and names
/// segment `segment`. Even when the seal at the end of the segment is
/// damaged, an intact hint proves the segment was sealed at this length,
/// so recovery takes it as vouching for those bytes.
pub fn hint_seal(bytes: &[u8], segment: u64) -> Option<Seal> {
    if bytes.len() < HINT_HEADER_LEN + 4 || bytes[..8] != HINT_MAGIC {
        return None;
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    let u64_at = |at: usize| u64::from_le_bytes(body[at..at + 8].try_into().unwrap_or_default());
    (crc32c::crc32c(body).to_le_bytes() == crc
        && u16::from_le_bytes([body[8], body[9]]) == crate::log::record::FORMAT_VERSION
        && u64_at(16) == segment)
        .then(|| Seal {
            data_len: u64_at(24),
            crc: u32::from_le_bytes(body[32..36].try_into().unwrap_or_default()),
            links: u64_at(36),
            max_id: u64_at(44),
        })
}

/// Checks a hint against segment `segment`'s seal and returns its entries
/// (key, record offset).
///
/// # Errors
/// [`HintError`] when the hint cannot be trusted for this segment.
pub fn decode_hint<'a>(
    bytes: &'a [u8],
    segment: u64,
    seal: &Seal,
) -> Result<impl ExactSizeIterator<Item = (u64, u32)> + 'a, HintError> {
    if bytes.len() < HINT_HEADER_LEN + 4 || bytes[..8] != HINT_MAGIC {
        return Err(HintError::BadHeader);
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32c::crc32c(body).to_le_bytes() != crc {
        return Err(HintError::BadChecksum);
    }
    let u64_at = |at: usize| u64::from_le_bytes(body[at..at + 8].try_into().unwrap_or_default());
    let format = u16::from_le_bytes([body[8], body[9]]);
    if format != crate::log::record::FORMAT_VERSION {
        return Err(HintError::BadHeader);
    }
    let copy = Seal {
        data_len: u64_at(24),
        crc: u32::from_le_bytes(body[32..36].try_into().unwrap_or_default()),
        links: u64_at(36),
        max_id: u64_at(44),
    };
    let entries = &body[HINT_HEADER_LEN..];
    if u64_at(16) != segment
        || copy != *seal
        || entries.len() % HINT_ENTRY_LEN != 0
        || (entries.len() / HINT_ENTRY_LEN) as u64 != seal.links
    {
        return Err(HintError::Mismatch);
    }
    let last_start = seal.data_len.saturating_sub(LINK_OVERHEAD as u64);
    let parse = |e: &[u8]| {
        (
            u64::from_le_bytes(e[..8].try_into().unwrap_or_default()),
            u32::from_le_bytes(e[8..12].try_into().unwrap_or_default()),
        )
    };
    let inside = |offset: u32| (PREAMBLE_LEN as u64..=last_start).contains(&u64::from(offset));
    if !entries
        .chunks_exact(HINT_ENTRY_LEN)
        .all(|e| inside(parse(e).1))
    {
        return Err(HintError::BadEntry);
    }
    Ok(entries.chunks_exact(HINT_ENTRY_LEN).map(parse))
}

/// Builds the hint of a sealed segment from its bytes (what the runtime's
/// hint writer does after a seal). `None` when the bytes are not a whole
/// sealed segment `number`.
pub fn build_hint(number: u64, bytes: &[u8]) -> Option<Vec<u8>> {
    let mut entries = Vec::new();
    let scan = crate::log::scan::scan_segment(bytes, number, |link, offset| {
        entries.push((link.key, u32::try_from(offset).unwrap_or(u32::MAX)));
    })
    .ok()?;
    let crate::log::scan::SegmentEnd::Sealed { seal, .. } = scan.end else {
        return None;
    };
    let mut hint = Vec::with_capacity(HINT_HEADER_LEN + entries.len() * HINT_ENTRY_LEN + 4);
    encode_hint(number, &seal, entries, &mut hint);
    Some(hint)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seal() -> Seal {
        Seal {
            data_len: 1000,
            crc: 5,
            links: 2,
            max_id: 9,
        }
    }

    #[test]
    fn a_hint_round_trips_and_checks_its_segment() {
        let mut bytes = Vec::new();
        encode_hint(7, &seal(), [(1, 30), (2, 400)], &mut bytes);
        assert_eq!(bytes.len(), HINT_HEADER_LEN + 2 * HINT_ENTRY_LEN + 4);
        let entries: Vec<_> = decode_hint(&bytes, 7, &seal()).unwrap().collect();
        assert_eq!(entries, [(1, 30), (2, 400)]);
        assert_eq!(
            decode_hint(&bytes, 8, &seal()).err(),
            Some(HintError::Mismatch)
        );
        let other = Seal { crc: 6, ..seal() };
        assert_eq!(
            decode_hint(&bytes, 7, &other).err(),
            Some(HintError::Mismatch)
        );
    }

    #[test]
    fn a_hint_never_vouches_for_more_than_the_segment_holds() {
        let mut bytes = Vec::new();
        encode_hint(7, &seal(), [(1, 30), (2, 990)], &mut bytes);
        assert_eq!(
            decode_hint(&bytes, 7, &seal()).err(),
            Some(HintError::BadEntry)
        );
        let mut short = Vec::new();
        encode_hint(7, &seal(), [(1, 30)], &mut short);
        assert_eq!(
            decode_hint(&short, 7, &seal()).err(),
            Some(HintError::Mismatch)
        );
    }

    #[test]
    fn every_flip_is_caught() {
        let mut bytes = Vec::new();
        encode_hint(7, &seal(), [(1, 30), (2, 400)], &mut bytes);
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 4;
            assert!(decode_hint(&bad, 7, &seal()).is_err(), "flip at {at}");
        }
    }
}

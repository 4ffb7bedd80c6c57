//! Hint files (Bitcask's): for each sealed segment, the key and offset of
//! every link it holds, so a restart loads the key directory without
//! reading the segment.
//!
//! `NNNNNNNNNNNNNNNNNNNN.hint` sits beside its segment:
//!
//! | offset | size | field                                             |
//! |-------:|-----:|---------------------------------------------------|
//! | 0      | 8    | magic `SHORTYHT`                                  |
//! | 8      | 2    | format `u16` (2 or 3), then 6 bytes of zero       |
//! | 16     | 8    | segment number `u64`                              |
//! | 24     | 28   | the segment's seal: `data_len` `u64`, CRC `u32`, keyed records `u64`, max id `u64` |
//! | 52     | 12·n | entries: key `u64`, record offset `u32` ([`TOMBSTONE`] for a tombstone) |
//! | …      | …    | format 3: extras, for the entries that are not plain links: entry index `u32`, version `u64`, deleted at `u64` (Unix ms, 0 for a link), alias length `u16` (bit 15: [`OWNED`]), alias, then if [`OWNED`]: owner key id `u32`, created at `u64` |
//! | end−4  | 4    | CRC32C of everything before it                    |
//!
//! The extras give recovery from hints alone each mutated key's version,
//! each tombstone's time and each alias: enough to apply "the highest
//! version wins" and to know quarantines without reading the segment. A
//! segment of generated links only has no extras: its hint costs 12 bytes
//! per link, as in format 2 (whose hints still read).
//!
//! A link made with an API key has an extra too, carrying its owner and
//! creation time, so the owner index ([`crate::owners`]) is rebuilt from
//! hints alone. The [`OWNED`] bit sits in the alias length (aliases are
//! at most 64 bytes): a build that predates it reads such a hint as
//! damaged and scans the segment instead, never misreads it.
//!
//! A hint is used only if its checksum holds, it names its segment, its
//! copy of the seal equals the seal at the end of the segment, it has
//! exactly as many entries as the seal counts links, and every entry points
//! inside the sealed bytes: it never vouches for more than the segment
//! holds. Anything else and recovery scans the segment instead.
//!
use bytes::BufMut;

use crate::keydir::TOMBSTONE;
use crate::log::record::{Keyed, Seal, FORMAT_VERSION, LINK_OVERHEAD, PREAMBLE_LEN, SEAL_LEN};

/// What a hint (or a scan) says about one keyed record: all recovery
/// needs to apply it to the key directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HintEntry {
    /// The key ([`crate::log::record::ALIAS_KEY`] for an alias that is
    /// not a code).
    pub key: u64,
    /// The record's offset, or [`TOMBSTONE`].
    pub offset: u32,
    /// The record's version.
    pub version: u64,
    /// When it was deleted (a tombstone), else 0.
    pub deleted_at_ms: u64,
    /// The alias, if the record is an alias's.
    pub alias: Option<Box<str>>,
    /// The API key that made the link, and when (links only).
    pub owner: Option<crate::owners::Ownership>,
}

impl HintEntry {
    /// A plain link's entry.
    pub fn plain(key: u64, offset: u32) -> Self {
        Self {
            key,
            offset,
            version: 0,
            deleted_at_ms: 0,
            alias: None,
            owner: None,
        }
    }

    /// The entry of `record` found at `offset`.
    pub fn of(record: &Keyed<'_>, offset: u64) -> Self {
        let (offset, deleted_at_ms) = match record {
            // Offsets fit: segments are bounded far below 4 GiB.
            Keyed::Link(_) => (u32::try_from(offset).unwrap_or(TOMBSTONE - 1), 0),
            Keyed::Tombstone(t) => (TOMBSTONE, t.deleted_at_ms),
        };
        Self {
            key: record.key(),
            offset,
            version: record.version(),
            deleted_at_ms,
            // Checked UTF-8 when the record was decoded.
            alias: record
                .alias()
                .map(|a| String::from_utf8_lossy(a).into_owned().into_boxed_str()),
            owner: match record {
                Keyed::Link(link) => crate::owners::Ownership::of_options(link.options),
                Keyed::Tombstone(_) => None,
            },
        }
    }

    /// `true` for a tombstone's entry.
    pub fn is_tombstone(&self) -> bool {
        self.offset == TOMBSTONE
    }

    /// The key directory's name for it.
    pub fn ident(&self) -> crate::keydir::Ident<'_> {
        match (&self.alias, self.key) {
            (Some(alias), crate::log::record::ALIAS_KEY) => crate::keydir::Ident::Alias(alias),
            _ => crate::keydir::Ident::Key(self.key),
        }
    }

    /// What the key directory holds for it, its record lying in segment
    /// `file`.
    pub fn target(&self, file: crate::log::segments::FileIdx) -> crate::keydir::Target {
        if self.is_tombstone() {
            crate::keydir::Target::Deleted {
                file,
                deleted_at_ms: self.deleted_at_ms,
            }
        } else {
            crate::keydir::Target::Live(crate::keydir::Location {
                file,
                offset: self.offset,
            })
        }
    }

    fn is_plain(&self) -> bool {
        self.version == 0
            && self.deleted_at_ms == 0
            && self.alias.is_none()
            && self.owner.is_none()
            && !self.is_tombstone()
    }
}

/// Bytes of an extra besides its alias.
const EXTRA_LEN: usize = 4 + 8 + 8 + 2;

/// Bit of an extra's alias length: the owner (`u32`) and creation time
/// (`u64`) follow the alias.
pub const OWNED: u16 = 0x8000;

/// Bytes of an extra's owner and creation time.
const OWNER_LEN: usize = 4 + 8;

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
    // Format 3's extras make a hint longer than its entries, never
    // shorter.
    if hint_len_claimed.is_some_and(|claimed| claimed <= hint_len) && links <= segment_room {
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

/// Encodes the hint of segment `segment`, sealed with `seal`, holding
/// `entries` in file order.
pub fn encode_hint<'e>(
    segment: u64,
    seal: &Seal,
    entries: impl IntoIterator<Item = &'e HintEntry>,
    dst: &mut Vec<u8>,
) {
    let start = dst.len();
    dst.put_slice(&HINT_MAGIC);
    dst.put_u16_le(FORMAT_VERSION);
    dst.put_bytes(0, 6);
    dst.put_u64_le(segment);
    dst.put_u64_le(seal.data_len);
    dst.put_u32_le(seal.crc);
    dst.put_u64_le(seal.links);
    dst.put_u64_le(seal.max_id);
    let mut extras = Vec::new();
    for (i, entry) in entries.into_iter().enumerate() {
        dst.put_u64_le(entry.key);
        dst.put_u32_le(entry.offset);
        if !entry.is_plain() {
            let alias = entry.alias.as_deref().unwrap_or_default().as_bytes();
            // Aliases are at most 64 bytes (`crate::link::MAX_ALIAS_LEN`).
            let alias = &alias[..alias.len().min(usize::from(u16::MAX))];
            extras.put_u32_le(u32::try_from(i).unwrap_or(u32::MAX));
            extras.put_u64_le(entry.version);
            extras.put_u64_le(entry.deleted_at_ms);
            let owned = if entry.owner.is_some() { OWNED } else { 0 };
            extras.put_u16_le(alias.len() as u16 | owned);
            extras.put_slice(alias);
            if let Some(o) = entry.owner {
                extras.put_u32_le(o.owner);
                extras.put_u64_le(o.created_at_ms);
            }
        }
    }
    dst.put_slice(&extras);
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
        && (2..=FORMAT_VERSION).contains(&u16::from_le_bytes([body[8], body[9]]))
        && u64_at(16) == segment)
        .then(|| Seal {
            data_len: u64_at(24),
            crc: u32::from_le_bytes(body[32..36].try_into().unwrap_or_default()),
            links: u64_at(36),
            max_id: u64_at(44),
        })
}

/// Checks a hint against segment `segment`'s seal and returns its entries
/// (checked whole before the first is handed out, and parsed as they are
/// iterated: a hint of millions of links is never copied).
///
/// # Errors
/// [`HintError`] when the hint cannot be trusted for this segment.
pub fn decode_hint<'a>(
    bytes: &'a [u8],
    segment: u64,
    seal: &Seal,
) -> Result<HintEntries<'a>, HintError> {
    if bytes.len() < HINT_HEADER_LEN + 4 || bytes[..8] != HINT_MAGIC {
        return Err(HintError::BadHeader);
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32c::crc32c(body).to_le_bytes() != crc {
        return Err(HintError::BadChecksum);
    }
    let u64_at = |at: usize| u64::from_le_bytes(body[at..at + 8].try_into().unwrap_or_default());
    let format = u16::from_le_bytes([body[8], body[9]]);
    if !(2..=FORMAT_VERSION).contains(&format) {
        return Err(HintError::BadHeader);
    }
    let copy = Seal {
        data_len: u64_at(24),
        crc: u32::from_le_bytes(body[32..36].try_into().unwrap_or_default()),
        links: u64_at(36),
        max_id: u64_at(44),
    };
    let after = &body[HINT_HEADER_LEN..];
    let n = usize::try_from(seal.links).unwrap_or(usize::MAX);
    let entries_len = n.checked_mul(HINT_ENTRY_LEN).filter(|&l| l <= after.len());
    let Some(entries_len) = entries_len.filter(|_| u64_at(16) == segment && copy == *seal) else {
        return Err(HintError::Mismatch);
    };
    let (entries, extras) = after.split_at(entries_len);
    if format == 2 && !extras.is_empty() {
        return Err(HintError::Mismatch);
    }
    let last_start = seal.data_len.saturating_sub(LINK_OVERHEAD as u64);
    let inside = |offset: u32| (PREAMBLE_LEN as u64..=last_start).contains(&u64::from(offset));
    // The extras: well-formed, in entry order, each entry at most once.
    let mut rest = extras;
    let mut next_index = 0usize;
    let mut deletes = Vec::new();
    while !rest.is_empty() {
        let (extra, len) = parse_extra(rest).ok_or(HintError::BadEntry)?;
        if extra.index < next_index || extra.index >= n {
            return Err(HintError::BadEntry);
        }
        if extra.version > 0 {
            deletes.push(extra.index);
        }
        next_index = extra.index + 1;
        rest = &rest[len..];
    }
    // Every entry inside the sealed bytes, or a tombstone, which always
    // has an extra with its version (a delete is never version 0).
    let valid = entries
        .chunks_exact(HINT_ENTRY_LEN)
        .enumerate()
        .all(|(i, e)| match parse_entry(e).1 {
            TOMBSTONE => deletes.binary_search(&i).is_ok(),
            offset => inside(offset),
        });
    if !valid {
        return Err(HintError::BadEntry);
    }
    Ok(HintEntries {
        entries,
        extras,
        next: 0,
    })
}

fn parse_entry(e: &[u8]) -> (u64, u32) {
    (
        u64::from_le_bytes(e[..8].try_into().unwrap_or_default()),
        u32::from_le_bytes(e[8..12].try_into().unwrap_or_default()),
    )
}

struct Extra<'a> {
    index: usize,
    version: u64,
    deleted_at_ms: u64,
    alias: Option<&'a str>,
    owner: Option<crate::owners::Ownership>,
}

/// The extra at the front of `bytes` and its length.
fn parse_extra(bytes: &[u8]) -> Option<(Extra<'_>, usize)> {
    let head = bytes.get(..EXTRA_LEN)?;
    let len_field = u16::from_le_bytes([head[20], head[21]]);
    let alias_len = usize::from(len_field & !OWNED);
    let alias = bytes.get(EXTRA_LEN..EXTRA_LEN + alias_len)?;
    let alias = match alias {
        [] => None,
        text => Some(std::str::from_utf8(text).ok()?),
    };
    let mut len = EXTRA_LEN + alias_len;
    let owner = if len_field & OWNED != 0 {
        let o = bytes.get(len..len + OWNER_LEN)?;
        len += OWNER_LEN;
        Some(crate::owners::Ownership {
            owner: u32::from_le_bytes(o[..4].try_into().ok()?),
            created_at_ms: u64::from_le_bytes(o[4..].try_into().ok()?),
        })
    } else {
        None
    };
    let extra = Extra {
        index: u32::from_le_bytes(head[..4].try_into().ok()?) as usize,
        version: u64::from_le_bytes(head[4..12].try_into().ok()?),
        deleted_at_ms: u64::from_le_bytes(head[12..20].try_into().ok()?),
        alias,
        owner,
    };
    Some((extra, len))
}

/// The entries of a checked hint ([`decode_hint`]).
#[derive(Debug, Clone)]
pub struct HintEntries<'a> {
    entries: &'a [u8],
    extras: &'a [u8],
    next: usize,
}

impl Iterator for HintEntries<'_> {
    type Item = HintEntry;

    fn next(&mut self) -> Option<HintEntry> {
        let at = self.next * HINT_ENTRY_LEN;
        let (key, offset) = parse_entry(self.entries.get(at..at + HINT_ENTRY_LEN)?);
        let mut entry = HintEntry::plain(key, offset);
        if let Some((extra, len)) = parse_extra(self.extras) {
            if extra.index == self.next {
                entry.version = extra.version;
                entry.deleted_at_ms = extra.deleted_at_ms;
                entry.alias = extra.alias.map(Into::into);
                entry.owner = extra.owner;
                self.extras = &self.extras[len..];
            }
        }
        self.next += 1;
        Some(entry)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.entries.len() / HINT_ENTRY_LEN - self.next;
        (n, Some(n))
    }
}

impl ExactSizeIterator for HintEntries<'_> {}

/// Builds the hint of a sealed segment from its bytes (what the runtime's
/// hint writer does after a seal). `None` when the bytes are not a whole
/// sealed segment `number`.
pub fn build_hint(number: u64, bytes: &[u8]) -> Option<Vec<u8>> {
    let mut entries = Vec::new();
    let scan = crate::log::scan::scan_segment(bytes, number, |record, offset| {
        entries.push(HintEntry::of(&record, offset));
    })
    .ok()?;
    let crate::log::scan::SegmentEnd::Sealed { seal, .. } = scan.end else {
        return None;
    };
    let mut hint = Vec::with_capacity(HINT_HEADER_LEN + entries.len() * HINT_ENTRY_LEN + 4);
    encode_hint(number, &seal, &entries, &mut hint);
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

    fn plain(entries: &[(u64, u32)]) -> Vec<HintEntry> {
        entries
            .iter()
            .map(|&(k, o)| HintEntry::plain(k, o))
            .collect()
    }

    #[test]
    fn extras_carry_versions_tombstones_and_aliases() {
        let entries = vec![
            HintEntry::plain(1, 30),
            HintEntry {
                key: 2,
                offset: 200,
                version: 5,
                deleted_at_ms: 0,
                alias: None,
                owner: None,
            },
            HintEntry {
                key: crate::log::record::ALIAS_KEY,
                offset: TOMBSTONE,
                version: 2,
                deleted_at_ms: 1_700_000_000_000,
                alias: Some("promo".into()),
                owner: None,
            },
            // A generated link made with a key: only its owner is extra.
            HintEntry {
                owner: Some(crate::owners::Ownership {
                    owner: 7,
                    created_at_ms: 1_700_000_000_123,
                }),
                ..HintEntry::plain(3, 300)
            },
            HintEntry {
                key: crate::log::record::ALIAS_KEY,
                offset: 400,
                version: 1,
                deleted_at_ms: 0,
                alias: Some("spring".into()),
                owner: Some(crate::owners::Ownership {
                    owner: u32::MAX,
                    created_at_ms: 0,
                }),
            },
        ];
        let seal = Seal { links: 5, ..seal() };
        let mut bytes = Vec::new();
        encode_hint(7, &seal, &entries, &mut bytes);
        let decoded: Vec<_> = decode_hint(&bytes, 7, &seal).unwrap().collect();
        assert_eq!(decoded, entries);
        // Only the plain entries: exactly format 2's size.
        // A tombstone without its version is refused.
        let mut bare = Vec::new();
        let seal3 = Seal { links: 3, ..seal };
        encode_hint(
            7,
            &seal3,
            &[
                HintEntry::plain(1, 30),
                HintEntry::plain(2, 200),
                HintEntry::plain(3, TOMBSTONE),
            ],
            &mut bare,
        );
        assert_eq!(
            decode_hint(&bare, 7, &seal3).err(),
            Some(HintError::BadEntry)
        );
        let mut plain_only = Vec::new();
        encode_hint(7, &seal, &entries[..1], &mut plain_only);
        assert_eq!(plain_only.len(), HINT_HEADER_LEN + HINT_ENTRY_LEN + 4);
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 4;
            assert!(decode_hint(&bad, 7, &seal).is_err(), "flip at {at}");
        }
    }

    #[test]
    fn a_hint_round_trips_and_checks_its_segment() {
        let mut bytes = Vec::new();
        encode_hint(7, &seal(), &plain(&[(1, 30), (2, 400)]), &mut bytes);
        assert_eq!(bytes.len(), HINT_HEADER_LEN + 2 * HINT_ENTRY_LEN + 4);
        let entries: Vec<_> = decode_hint(&bytes, 7, &seal()).unwrap().collect();
        assert_eq!(entries, plain(&[(1, 30), (2, 400)]));
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
        encode_hint(7, &seal(), &plain(&[(1, 30), (2, 990)]), &mut bytes);
        assert_eq!(
            decode_hint(&bytes, 7, &seal()).err(),
            Some(HintError::BadEntry)
        );
        let mut short = Vec::new();
        encode_hint(7, &seal(), &plain(&[(1, 30)]), &mut short);
        assert_eq!(
            decode_hint(&short, 7, &seal()).err(),
            Some(HintError::Mismatch)
        );
    }

    #[test]
    fn every_flip_is_caught() {
        let mut bytes = Vec::new();
        encode_hint(7, &seal(), &plain(&[(1, 30), (2, 400)]), &mut bytes);
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 4;
            assert!(decode_hint(&bad, 7, &seal()).is_err(), "flip at {at}");
        }
    }
}

//! The log's on-disk format, version 2: segment preamble and records.
//!
//! A segment file is the 8-byte magic [`MAGIC`] followed by records. Every
//! record has the same frame:
//!
//! | offset | size | field                                                  |
//! |-------:|-----:|--------------------------------------------------------|
//! | 0      | 4    | body length `n`, `u32` LE (`2..=MAX_RECORD_BODY`)       |
//! | 4      | 4    | CRC32C of the length field's 4 bytes, then of the body |
//! | 8      | n    | body: `kind` (u8), `flags` (u8), then the kind's fields |
//!
//! The checksum covers the length, so a damaged length is caught like any
//! other damage (format 1 checksummed only the body).
//!
//! | kind | name   | fields after `kind`, `flags`                                      |
//! |-----:|--------|-------------------------------------------------------------------|
//! | 0    | header | format `u16` (= 2), segment number `u64`; always the first record |
//! | 1    | link   | key `u64`, id `u64` ([`NO_ID`] when imported), the URL (UTF-8)    |
//! | 2    | marker | `durable_end` `u64`: every byte before it was durable when written |
//! | 3    | seal   | `data_len` `u64`, CRC32C of bytes `0..data_len` `u32`, links `u64`, max id `u64`; always the last record |
//! | 4    | (reserved: tombstone, key `u64`) |
//!
//! `flags` is 0 in format 2. Room for what comes next: deletes will be
//! tombstone records (kind 4) naming a key; expiry will be a link flag
//! (bit 0) followed by an expiry time `u64`. A reader meets an unknown kind
//! or flag only in a log written by a newer version, and refuses it.
//!
//! Everything here is pure: bytes in, values out.

use bytes::BufMut;

/// The first 8 bytes of every segment of format 2 (and later).
pub const MAGIC: [u8; 8] = *b"SHORTYLG";

/// The format this crate writes and reads.
pub const FORMAT_VERSION: u16 = 2;

/// Bytes before a record's body: length and checksum.
pub const RECORD_HEADER_LEN: usize = 8;

/// Largest record body accepted (16 MiB): far above any URL limit, so a
/// length above it can only be damage.
pub const MAX_RECORD_BODY: usize = 16 * 1024 * 1024;

/// The id of an imported link, which was not made from this data
/// directory's id counter.
pub const NO_ID: u64 = u64::MAX;

/// Bytes a link record needs besides its URL.
pub const LINK_OVERHEAD: usize = RECORD_HEADER_LEN + 2 + 8 + 8;

/// The longest URL a link record can hold.
pub const MAX_URL_IN_RECORD: usize = MAX_RECORD_BODY - (LINK_OVERHEAD - RECORD_HEADER_LEN);

/// Encoded size of the magic plus the header record: where a segment's
/// first link starts.
pub const PREAMBLE_LEN: usize = MAGIC.len() + RECORD_HEADER_LEN + 2 + 2 + 8;

/// Encoded size of a commit marker.
pub const MARKER_LEN: usize = RECORD_HEADER_LEN + 2 + 8;

/// Encoded size of a seal.
pub const SEAL_LEN: usize = RECORD_HEADER_LEN + 2 + 8 + 4 + 8 + 8;

const KIND_HEADER: u8 = 0;
const KIND_LINK: u8 = 1;
const KIND_MARKER: u8 = 2;
const KIND_SEAL: u8 = 3;

/// What a segment's seal says about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seal {
    /// Bytes before the seal record: the whole segment but the seal.
    pub data_len: u64,
    /// CRC32C of those bytes.
    pub crc: u32,
    /// Link records in the segment.
    pub links: u64,
    /// The largest id of a link in the segment ([`NO_ID`] excluded), or 0.
    pub max_id: u64,
}

/// A link: a code's key and its URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link<'a> {
    /// The code's numeric value (see [`crate::codes`]).
    pub key: u64,
    /// The id the key was made from, or [`NO_ID`] for an imported link.
    pub id: u64,
    /// The long URL.
    pub url: &'a [u8],
}

/// One decoded record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record<'a> {
    /// The segment's header.
    Header {
        /// The format version it was written in.
        format: u16,
        /// The segment's number (its file name).
        segment: u64,
    },
    /// A link.
    Link(Link<'a>),
    /// A commit marker.
    Marker {
        /// Every byte of the segment before this offset was durable when the
        /// marker was written.
        durable_end: u64,
    },
    /// The segment's seal.
    Seal(Seal),
}

/// What the bytes at the front of a slice hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A well-formed record, and how many bytes it occupies.
    Record(Record<'a>, usize),
    /// The header or the body runs past the end of the bytes.
    Incomplete,
    /// The length field is outside `2..=MAX_RECORD_BODY`.
    BadLength,
    /// The record does not match its checksum.
    BadChecksum,
    /// A checksummed record this version does not understand (a kind, a
    /// flag or a layout from a newer version).
    Unknown,
}

impl Decoded<'_> {
    /// A short description of why the bytes are not a record.
    pub fn reason(&self) -> &'static str {
        match self {
            Decoded::Record(..) => "a valid record",
            Decoded::Incomplete => "record runs past the end of the file",
            Decoded::BadLength => "record length out of range",
            Decoded::BadChecksum => "checksum mismatch",
            Decoded::Unknown => "record of an unknown kind (written by a newer version?)",
        }
    }
}

fn checksum(len_field: &[u8], body: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(len_field), body)
}

/// Appends one record whose body is `kind`, `flags` = 0, then `fields`.
fn put_record(dst: &mut impl BufMut, kind: u8, fields: &[&[u8]]) {
    let body_len = 2 + fields.iter().map(|f| f.len()).sum::<usize>();
    // Callers bound URLs far below 4 GiB (`MAX_URL_IN_RECORD`).
    let len = u32::try_from(body_len).unwrap_or(u32::MAX).to_le_bytes();
    let mut crc = crc32c::crc32c_append(crc32c::crc32c(&len), &[kind, 0]);
    for field in fields {
        crc = crc32c::crc32c_append(crc, field);
    }
    dst.put_slice(&len);
    dst.put_u32_le(crc);
    dst.put_u8(kind);
    dst.put_u8(0);
    for field in fields {
        dst.put_slice(field);
    }
}

/// Appends the magic and the header record of segment `segment`.
pub fn encode_preamble(segment: u64, dst: &mut impl BufMut) {
    dst.put_slice(&MAGIC);
    put_record(
        dst,
        KIND_HEADER,
        &[&FORMAT_VERSION.to_le_bytes(), &segment.to_le_bytes()],
    );
}

/// Appends a link record.
pub fn encode_link(link: &Link<'_>, dst: &mut impl BufMut) {
    put_record(
        dst,
        KIND_LINK,
        &[&link.key.to_le_bytes(), &link.id.to_le_bytes(), link.url],
    );
}

/// Encoded size of a link record for a URL of `url_len` bytes.
pub fn link_len(url_len: usize) -> usize {
    LINK_OVERHEAD + url_len
}

/// Appends a commit marker stating that the first `durable_end` bytes of
/// the segment are durable.
pub fn encode_marker(durable_end: u64, dst: &mut impl BufMut) {
    put_record(dst, KIND_MARKER, &[&durable_end.to_le_bytes()]);
}

/// Appends a seal.
pub fn encode_seal(seal: &Seal, dst: &mut impl BufMut) {
    put_record(
        dst,
        KIND_SEAL,
        &[
            &seal.data_len.to_le_bytes(),
            &seal.crc.to_le_bytes(),
            &seal.links.to_le_bytes(),
            &seal.max_id.to_le_bytes(),
        ],
    );
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

/// Decodes the record at the front of `bytes`: the one decoder of the
/// format, shared by the write path, recovery, reads and the tools.
pub fn decode_record(bytes: &[u8]) -> Decoded<'_> {
    let (Some(len), Some(crc)) = (u32_at(bytes, 0), u32_at(bytes, 4)) else {
        return Decoded::Incomplete;
    };
    let body_len = len as usize;
    if !(2..=MAX_RECORD_BODY).contains(&body_len) {
        return Decoded::BadLength;
    }
    let Some(body) = bytes.get(RECORD_HEADER_LEN..RECORD_HEADER_LEN + body_len) else {
        return Decoded::Incomplete;
    };
    if checksum(&len.to_le_bytes(), body) != crc {
        return Decoded::BadChecksum;
    }
    let size = RECORD_HEADER_LEN + body_len;
    let (kind, flags, fields) = (body[0], body[1], &body[2..]);
    if flags != 0 {
        return Decoded::Unknown;
    }
    let record = match (kind, fields.len()) {
        (KIND_HEADER, 10) => u16::from_le_bytes([fields[0], fields[1]])
            .eq(&FORMAT_VERSION)
            .then(|| Record::Header {
                format: FORMAT_VERSION,
                segment: u64_at(fields, 2).unwrap_or_default(),
            }),
        (KIND_LINK, n) if n >= 16 => Some(Record::Link(Link {
            key: u64_at(fields, 0).unwrap_or_default(),
            id: u64_at(fields, 8).unwrap_or_default(),
            url: &fields[16..],
        })),
        (KIND_MARKER, 8) => Some(Record::Marker {
            durable_end: u64_at(fields, 0).unwrap_or_default(),
        }),
        (KIND_SEAL, 28) => Some(Record::Seal(Seal {
            data_len: u64_at(fields, 0).unwrap_or_default(),
            crc: u32_at(fields, 8).unwrap_or_default(),
            links: u64_at(fields, 12).unwrap_or_default(),
            max_id: u64_at(fields, 20).unwrap_or_default(),
        })),
        _ => None,
    };
    match record {
        Some(record) => Decoded::Record(record, size),
        None => Decoded::Unknown,
    }
}

/// `true` if `bytes` start like a segment of format 1 (no magic; a first
/// record whose checksum covers only its body), so an old data directory is
/// named as such instead of being taken for damage.
pub fn looks_like_format_1(bytes: &[u8]) -> bool {
    let (Some(len), Some(crc)) = (u32_at(bytes, 0), u32_at(bytes, 4)) else {
        return false;
    };
    let len = len as usize;
    (8..=MAX_RECORD_BODY).contains(&len)
        && bytes
            .get(RECORD_HEADER_LEN..RECORD_HEADER_LEN + len)
            .is_some_and(|body| crc32c::crc32c(body) == crc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(bytes: &[u8]) -> Record<'_> {
        match decode_record(bytes) {
            Decoded::Record(record, len) => {
                assert_eq!(len, bytes.len());
                record
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_kind_round_trips_at_its_documented_size() {
        let mut out = Vec::new();
        encode_preamble(42, &mut out);
        assert_eq!(out.len(), PREAMBLE_LEN);
        assert_eq!(&out[..8], b"SHORTYLG");
        assert_eq!(
            one(&out[8..]),
            Record::Header {
                format: 2,
                segment: 42
            }
        );

        let link = Link {
            key: 7,
            id: 9,
            url: b"https://e.com/",
        };
        let mut out = Vec::new();
        encode_link(&link, &mut out);
        assert_eq!(out.len(), link_len(14));
        assert_eq!(one(&out), Record::Link(link));

        let mut out = Vec::new();
        encode_marker(1234, &mut out);
        assert_eq!(out.len(), MARKER_LEN);
        assert_eq!(one(&out), Record::Marker { durable_end: 1234 });

        let seal = Seal {
            data_len: 99,
            crc: 0xdead_beef,
            links: 3,
            max_id: 77,
        };
        let mut out = Vec::new();
        encode_seal(&seal, &mut out);
        assert_eq!(out.len(), SEAL_LEN);
        assert_eq!(one(&out), Record::Seal(seal));
    }

    #[test]
    fn the_checksum_covers_the_length_field() {
        let mut out = Vec::new();
        encode_link(
            &Link {
                key: 1,
                id: 1,
                url: b"http://a/bc",
            },
            &mut out,
        );
        out.extend_from_slice(&[0; 8]);
        // A length one shorter still lies inside the bytes: only the
        // checksum can tell.
        let len = u32::from_le_bytes(out[..4].try_into().unwrap());
        out[..4].copy_from_slice(&(len - 1).to_le_bytes());
        assert_eq!(decode_record(&out), Decoded::BadChecksum);
        out[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode_record(&out), Decoded::BadLength);
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let mut out = Vec::new();
        encode_link(
            &Link {
                key: 5,
                id: 6,
                url: b"http://flip/",
            },
            &mut out,
        );
        for bit in 0..out.len() * 8 {
            let mut bad = out.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(
                !matches!(decode_record(&bad), Decoded::Record(..)),
                "bit {bit} went unnoticed"
            );
        }
    }

    #[test]
    fn unknown_kinds_and_flags_are_not_guessed_at() {
        let mut out = Vec::new();
        put_record(&mut out, 4, &[&1u64.to_le_bytes()]);
        assert_eq!(decode_record(&out), Decoded::Unknown);
        let mut out = Vec::new();
        put_record(&mut out, KIND_MARKER, &[&[1, 2, 3]]);
        assert_eq!(decode_record(&out), Decoded::Unknown, "wrong layout");
    }

    #[test]
    fn format_1_is_recognised() {
        // A format-1 record: length, CRC of the body, id, URL.
        let body = [&7u64.to_le_bytes()[..], b"http://old/"].concat();
        let mut v1 = (body.len() as u32).to_le_bytes().to_vec();
        v1.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
        v1.extend_from_slice(&body);
        assert!(looks_like_format_1(&v1));
        let mut v2 = Vec::new();
        encode_preamble(0, &mut v2);
        assert!(!looks_like_format_1(&v2));
        assert!(!looks_like_format_1(&[0; 64]));
    }
}

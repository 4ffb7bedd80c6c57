//! The log's on-disk format, version 3: segment preamble and records.
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
//! | 0    | header | format `u16` (2 or 3), segment number `u64`; always the first record |
//! | 1    | link   | key `u64`, id `u64` ([`NO_ID`] when imported), the URL (UTF-8)    |
//! | 1, flag bit 0 | link with options | key `u64`, id `u64`, URL length `u32`, the URL, the option list ([`crate::log::tlv`]) |
//! | 2    | marker | `durable_end` `u64`: every byte before it was durable when written |
//! | 3    | seal   | `data_len` `u64`, CRC32C of bytes `0..data_len` `u32`, keyed records (links and tombstones) `u64`, max id `u64`; always the last record |
//! | 4    | tombstone | key `u64`, version `u64`, deleted at `u64` (Unix ms); flag bit 0: an alias's, its text follows |
//!
//! Format 2 is format 3 without flags and tombstones: a format-2 segment
//! reads unchanged, and a plain generated link is the same bytes in both
//! (26 + URL), so options cost nothing to links that have none. An update
//! is a whole new link record of the same key with a higher `version`
//! option; a delete is a tombstone. A link or tombstone of an alias that
//! is not a code carries [`ALIAS_KEY`] as its key and the alias as its
//! identity. A reader meets an unknown kind or flag only in a log written
//! by a newer version, and refuses it.
//!
//! Everything here is pure: bytes in, values out.

use bytes::BufMut;

/// The first 8 bytes of every segment of format 2 (and later).
pub const MAGIC: [u8; 8] = *b"SHORTYLG";

/// The format this crate writes.
pub const FORMAT_VERSION: u16 = 3;

/// The oldest format this crate reads.
pub const OLDEST_FORMAT: u16 = 2;

/// The key field of the records of an alias that is not a code (it lives
/// in the alias side map, named by its text). No code has this key: it is
/// above every 11-character code's.
pub const ALIAS_KEY: u64 = u64::MAX;

/// Link flag: an option list follows the URL.
pub const HAS_OPTIONS: u8 = 1;

/// Tombstone flag: the deleted link was an alias; its text follows.
pub const TOMBSTONE_ALIAS: u8 = 1;

/// Encoded size of a tombstone without alias text.
pub const TOMBSTONE_LEN: usize = RECORD_HEADER_LEN + 2 + 8 + 8 + 8;

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
const KIND_TOMBSTONE: u8 = 4;

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
    /// The code's numeric value (see [`crate::codes`]), or [`ALIAS_KEY`].
    pub key: u64,
    /// The id the key was made from, or [`NO_ID`] for an imported link.
    pub id: u64,
    /// The long URL.
    pub url: &'a [u8],
    /// The option list (empty: a plain link, written in format-2 bytes).
    /// Decoded records hold a well-formed list only.
    pub options: &'a [u8],
}

impl<'a> Link<'a> {
    /// A link without options.
    pub fn plain(key: u64, id: u64, url: &'a [u8]) -> Self {
        Self {
            key,
            id,
            url,
            options: &[],
        }
    }

    /// Its mutation version (0: never changed).
    pub fn version(&self) -> u64 {
        crate::log::tlv::find(self.options, crate::log::tlv::VERSION)
            .and_then(crate::log::tlv::u64_of)
            .unwrap_or(0)
    }

    /// The alias it was made under, if any.
    pub fn alias(&self) -> Option<&'a [u8]> {
        crate::log::tlv::find(self.options, crate::log::tlv::ALIAS)
    }

    /// Its encoded size.
    pub fn encoded_len(&self) -> usize {
        if self.options.is_empty() {
            link_len(self.url.len())
        } else {
            link_len(self.url.len()) + 4 + self.options.len()
        }
    }
}

/// A deleted link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tombstone<'a> {
    /// The code's key, or [`ALIAS_KEY`].
    pub key: u64,
    /// The delete's version: one more than the link's last.
    pub version: u64,
    /// When it was deleted (Unix ms): an alias's quarantine runs from here.
    pub deleted_at_ms: u64,
    /// The alias, when the deleted link was one.
    pub alias: Option<&'a [u8]>,
}

impl Tombstone<'_> {
    /// Its encoded size.
    pub fn encoded_len(&self) -> usize {
        TOMBSTONE_LEN + self.alias.map_or(0, <[u8]>::len)
    }
}

/// A record that names a key: a link or a tombstone. What recovery, hints,
/// the seal's count and the tools index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keyed<'a> {
    /// A link.
    Link(Link<'a>),
    /// A deleted link.
    Tombstone(Tombstone<'a>),
}

impl<'a> Keyed<'a> {
    /// Its key ([`ALIAS_KEY`] for an alias that is not a code).
    pub fn key(&self) -> u64 {
        match self {
            Keyed::Link(link) => link.key,
            Keyed::Tombstone(t) => t.key,
        }
    }

    /// Its version.
    pub fn version(&self) -> u64 {
        match self {
            Keyed::Link(link) => link.version(),
            Keyed::Tombstone(t) => t.version,
        }
    }

    /// The alias it belongs to, if any.
    pub fn alias(&self) -> Option<&'a [u8]> {
        match self {
            Keyed::Link(link) => link.alias(),
            Keyed::Tombstone(t) => t.alias,
        }
    }

    /// The alias the key directory names it by: its alias when it is of
    /// the side map ([`ALIAS_KEY`]). A code-spelled alias's record carries
    /// its text too, but it is named by its key, like every other record
    /// of that key.
    pub fn side_alias(&self) -> Option<&'a [u8]> {
        if self.key() == ALIAS_KEY {
            self.alias()
        } else {
            None
        }
    }

    /// The link, if it is one.
    pub fn link(&self) -> Option<&Link<'a>> {
        match self {
            Keyed::Link(link) => Some(link),
            Keyed::Tombstone(_) => None,
        }
    }
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
    /// A deleted link.
    Tombstone(Tombstone<'a>),
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

/// Appends one record whose body is `kind`, `flags`, then `fields`.
fn put_record(dst: &mut impl BufMut, kind: u8, flags: u8, fields: &[&[u8]]) {
    let body_len = 2 + fields.iter().map(|f| f.len()).sum::<usize>();
    // Callers bound URLs far below 4 GiB (`MAX_URL_IN_RECORD`).
    let len = u32::try_from(body_len).unwrap_or(u32::MAX).to_le_bytes();
    let mut crc = crc32c::crc32c_append(crc32c::crc32c(&len), &[kind, flags]);
    for field in fields {
        crc = crc32c::crc32c_append(crc, field);
    }
    dst.put_slice(&len);
    dst.put_u32_le(crc);
    dst.put_u8(kind);
    dst.put_u8(flags);
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
        0,
        &[&FORMAT_VERSION.to_le_bytes(), &segment.to_le_bytes()],
    );
}

/// Appends a link record: format-2 bytes when it has no options.
pub fn encode_link(link: &Link<'_>, dst: &mut impl BufMut) {
    if link.options.is_empty() {
        return put_record(
            dst,
            KIND_LINK,
            0,
            &[&link.key.to_le_bytes(), &link.id.to_le_bytes(), link.url],
        );
    }
    // `MAX_URL_IN_RECORD` bounds URLs far below 4 GiB.
    let url_len = u32::try_from(link.url.len()).unwrap_or(u32::MAX);
    put_record(
        dst,
        KIND_LINK,
        HAS_OPTIONS,
        &[
            &link.key.to_le_bytes(),
            &link.id.to_le_bytes(),
            &url_len.to_le_bytes(),
            link.url,
            link.options,
        ],
    );
}

/// Appends a tombstone.
pub fn encode_tombstone(tombstone: &Tombstone<'_>, dst: &mut impl BufMut) {
    let fields: [&[u8]; 4] = [
        &tombstone.key.to_le_bytes(),
        &tombstone.version.to_le_bytes(),
        &tombstone.deleted_at_ms.to_le_bytes(),
        tombstone.alias.unwrap_or_default(),
    ];
    let flags = if tombstone.alias.is_some() {
        TOMBSTONE_ALIAS
    } else {
        0
    };
    put_record(dst, KIND_TOMBSTONE, flags, &fields);
}

/// Encoded size of a plain link record for a URL of `url_len` bytes.
pub fn link_len(url_len: usize) -> usize {
    LINK_OVERHEAD + url_len
}

/// Appends a commit marker stating that the first `durable_end` bytes of
/// the segment are durable.
pub fn encode_marker(durable_end: u64, dst: &mut impl BufMut) {
    put_record(dst, KIND_MARKER, 0, &[&durable_end.to_le_bytes()]);
}

/// Appends a seal.
pub fn encode_seal(seal: &Seal, dst: &mut impl BufMut) {
    put_record(
        dst,
        KIND_SEAL,
        0,
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
    decode(bytes, true)
}

/// [`decode_record`] without checking the checksum, for bytes this process
/// encoded itself and still holds in memory (a write batch, read back for
/// its keys once durable): nothing between could have changed them, and
/// the checksum was a few percent of a durable SHORTEN's CPU (issue 23).
/// Never for bytes read from a file.
pub(crate) fn decode_own_record(bytes: &[u8]) -> Decoded<'_> {
    decode(bytes, false)
}

fn decode(bytes: &[u8], verify: bool) -> Decoded<'_> {
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
    if verify && checksum(&len.to_le_bytes(), body) != crc {
        return Decoded::BadChecksum;
    }
    let size = RECORD_HEADER_LEN + body_len;
    let (kind, flags, fields) = (body[0], body[1], &body[2..]);
    let record = match (kind, flags, fields.len()) {
        (KIND_HEADER, 0, 10) => {
            let format = u16::from_le_bytes([fields[0], fields[1]]);
            (OLDEST_FORMAT..=FORMAT_VERSION)
                .contains(&format)
                .then(|| Record::Header {
                    format,
                    segment: u64_at(fields, 2).unwrap_or_default(),
                })
        }
        (KIND_LINK, 0, n) if n >= 16 => Some(Record::Link(Link::plain(
            u64_at(fields, 0).unwrap_or_default(),
            u64_at(fields, 8).unwrap_or_default(),
            &fields[16..],
        ))),
        (KIND_LINK, HAS_OPTIONS, n) if n >= 20 => {
            let url_len = u32_at(fields, 16).unwrap_or_default() as usize;
            fields
                .get(20..)
                .filter(|rest| rest.len() >= url_len)
                .map(|rest| rest.split_at(url_len))
                // A link with options has at least one: an empty list
                // would be written as a plain link.
                .filter(|(_, options)| {
                    !options.is_empty() && crate::log::tlv::check(options).is_ok()
                })
                .map(|(url, options)| {
                    Record::Link(Link {
                        key: u64_at(fields, 0).unwrap_or_default(),
                        id: u64_at(fields, 8).unwrap_or_default(),
                        url,
                        options,
                    })
                })
        }
        (KIND_TOMBSTONE, 0 | TOMBSTONE_ALIAS, n) if n >= 24 => {
            let alias = &fields[24..];
            let alias = match (flags, alias.is_empty()) {
                (0, true) => Some(None),
                (TOMBSTONE_ALIAS, false) => Some(Some(alias)),
                _ => None,
            };
            alias.map(|alias| {
                Record::Tombstone(Tombstone {
                    key: u64_at(fields, 0).unwrap_or_default(),
                    version: u64_at(fields, 8).unwrap_or_default(),
                    deleted_at_ms: u64_at(fields, 16).unwrap_or_default(),
                    alias,
                })
            })
        }
        (KIND_MARKER, 0, 8) => Some(Record::Marker {
            durable_end: u64_at(fields, 0).unwrap_or_default(),
        }),
        (KIND_SEAL, 0, 28) => Some(Record::Seal(Seal {
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
                format: FORMAT_VERSION,
                segment: 42
            }
        );

        let link = Link::plain(7, 9, b"https://e.com/");
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
    fn format_3_records_round_trip_and_a_plain_link_keeps_its_format_2_bytes() {
        let mut options = Vec::new();
        crate::log::tlv::put(&mut options, crate::log::tlv::VERSION, &7u64.to_le_bytes());
        crate::log::tlv::put(&mut options, crate::log::tlv::ALIAS, b"promo");
        let link = Link {
            key: ALIAS_KEY,
            id: NO_ID,
            url: b"https://e.com/x",
            options: &options,
        };
        let mut out = Vec::new();
        encode_link(&link, &mut out);
        assert_eq!(out.len(), link.encoded_len());
        assert_eq!(one(&out), Record::Link(link));
        assert_eq!(link.version(), 7);
        assert_eq!(link.alias(), Some(&b"promo"[..]));

        // The plain link's bytes are exactly format 2's: length, CRC, kind
        // 1, flags 0, key, id, URL.
        let plain = Link::plain(3, 4, b"https://e.com/");
        let mut out = Vec::new();
        encode_link(&plain, &mut out);
        assert_eq!(out.len(), LINK_OVERHEAD + 14);
        assert_eq!(&out[8..10], &[KIND_LINK, 0]);
        assert_eq!(&out[10..18], &3u64.to_le_bytes());
        assert_eq!(plain.version(), 0);

        for alias in [None, Some(&b"gone-alias"[..])] {
            let tombstone = Tombstone {
                key: 11,
                version: 2,
                deleted_at_ms: 1_700_000_000_000,
                alias,
            };
            let mut out = Vec::new();
            encode_tombstone(&tombstone, &mut out);
            assert_eq!(out.len(), tombstone.encoded_len());
            assert_eq!(one(&out), Record::Tombstone(tombstone));
        }
    }

    #[test]
    fn format_2_headers_are_read() {
        let mut out = Vec::new();
        put_record(
            &mut out,
            KIND_HEADER,
            0,
            &[&2u16.to_le_bytes(), &5u64.to_le_bytes()],
        );
        assert_eq!(
            one(&out),
            Record::Header {
                format: 2,
                segment: 5
            }
        );
        let mut out = Vec::new();
        put_record(
            &mut out,
            KIND_HEADER,
            0,
            &[&4u16.to_le_bytes(), &5u64.to_le_bytes()],
        );
        assert_eq!(decode_record(&out), Decoded::Unknown, "a newer format");
    }

    #[test]
    fn the_checksum_covers_the_length_field() {
        let mut out = Vec::new();
        encode_link(&Link::plain(1, 1, b"http://a/bc"), &mut out);
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
        encode_link(&Link::plain(5, 6, b"http://flip/"), &mut out);
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
        put_record(&mut out, 5, 0, &[&1u64.to_le_bytes()]);
        assert_eq!(decode_record(&out), Decoded::Unknown);
        let mut out = Vec::new();
        put_record(&mut out, KIND_MARKER, 0, &[&[1, 2, 3]]);
        assert_eq!(decode_record(&out), Decoded::Unknown, "wrong layout");
        let mut out = Vec::new();
        put_record(&mut out, KIND_MARKER, 1, &[&1u64.to_le_bytes()]);
        assert_eq!(decode_record(&out), Decoded::Unknown, "unknown flag");
        let mut out = Vec::new();
        put_record(&mut out, KIND_LINK, 2, &[&[0; 16], b"http://a/"]);
        assert_eq!(decode_record(&out), Decoded::Unknown, "unknown link flag");
        // Options that do not parse, or an unknown mandatory option.
        for options in [&[1u8, 8, 0, 1][..], &[0x7f, 0, 0], &[]] {
            let mut out = Vec::new();
            put_record(
                &mut out,
                KIND_LINK,
                HAS_OPTIONS,
                &[&[0; 16], &1u32.to_le_bytes(), b"h", options],
            );
            assert_eq!(decode_record(&out), Decoded::Unknown, "{options:?}");
        }
        // A URL length past the body.
        let mut out = Vec::new();
        put_record(
            &mut out,
            KIND_LINK,
            HAS_OPTIONS,
            &[&[0; 16], &9u32.to_le_bytes(), b"h", &[5, 0, 0]],
        );
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

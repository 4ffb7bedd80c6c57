//! Tag-length-value lists: the extensible part of protocol version 2.
//!
//! A TLV is `u8 tag, u16 length (LE), value`. The tags and their values are
//! the same in the wire protocol and in the server's log (format 3), so a
//! link's fields have one numbering everywhere ([`tag`]). Tags with bit 7
//! set ([`tag::SKIPPABLE`]) may be skipped by a reader that does not know
//! them; an unknown tag below `0x80` is refused, because a newer writer
//! meant it to change the meaning of the message.
//!
//! [`TlvReader`] walks a list without copying; [`put`] and friends write
//! one. The typed views over a list ([`LinkOptions`](crate::link::LinkOptions),
//! ...) are in [`link`](crate::link).
//!
//! # Examples
//! ```
//! use shorty_protocol::tlv::{self, tag, TlvReader};
//!
//! let mut list = Vec::new();
//! tlv::put_u64(&mut list, tag::MAX_CLICKS, 10)?;
//! tlv::put(&mut list, tag::TITLE, b"docs")?;
//! let fields: Vec<_> = TlvReader::new(&list).collect::<Result<_, _>>()?;
//! assert_eq!(fields, [(tag::MAX_CLICKS, &10u64.to_le_bytes()[..]), (tag::TITLE, &b"docs"[..])]);
//!
//! // A value cut short is refused, never read past its end:
//! assert!(TlvReader::new(&list[..list.len() - 1]).any(|field| field.is_err()));
//! # Ok::<(), shorty_protocol::Error>(())
//! ```

use bytes::BufMut;

use crate::error::{Error, TlvProblem};

/// The tags of a link's fields (issue 19's contract, shared with the log).
pub mod tag {
    /// Expiry instant, `u64` Unix milliseconds.
    pub const EXPIRES_AT: u8 = 1;
    /// Click limit, `u64`.
    pub const MAX_CLICKS: u8 = 2;
    /// Redirect status of the link, `u16`: 301, 302, 307 or 308.
    pub const REDIRECT_STATUS: u8 = 3;
    /// Where visitors go once the link has expired, a URL (UTF-8).
    pub const EXPIRED_URL: u8 = 4;
    /// The link is disabled: an empty value (in a patch, `u8` 1 or 0).
    pub const DISABLED: u8 = 5;
    /// The API key id that made the link, `u32`.
    pub const OWNER: u8 = 6;
    /// A title, UTF-8.
    pub const TITLE: u8 = 7;
    /// Forward a visitor's query into the redirect, `u8` 0 or 1.
    pub const FORWARD_QUERY: u8 = 8;
    /// Creation instant, `u64` Unix milliseconds.
    pub const CREATED_AT: u8 = 9;
    /// A custom alias (see [`is_valid_code`](crate::link::is_valid_code)).
    pub const ALIAS: u8 = 10;
    /// The link's version (order of its mutations), `u64`.
    pub const VERSION: u8 = 11;
    /// The long URL, UTF-8 without control bytes (wire only).
    pub const URL: u8 = 12;
    /// Clicks in total, `u64` (wire only).
    pub const CLICKS_TOTAL: u8 = 13;
    /// Clicks by people, `u64` (wire only).
    pub const CLICKS_HUMAN: u8 = 14;
    /// Clicks by bots, `u64` (wire only).
    pub const CLICKS_BOT: u8 = 15;
    /// Last click, `u64` Unix milliseconds (wire only).
    pub const LAST_CLICK_AT: u8 = 16;
    /// The link's code (generated or alias) (wire only).
    pub const CODE: u8 = 17;
    /// The short URL, UTF-8 (wire only).
    pub const SHORT_URL: u8 = 18;
    /// First click, `u64` Unix milliseconds (wire only).
    pub const FIRST_CLICK_AT: u8 = 19;
    /// A click series: `(u64 bucket start ms, u64 count)` pairs, packed
    /// (wire only).
    pub const SERIES: u8 = 20;
    /// One top referrer: `u64` count, then the host (UTF-8); repeated, one
    /// per referrer (wire only).
    pub const REFERRER: u8 = 21;
    /// The series' granularity, `u8`: 0 hour, 1 day (wire only).
    pub const GRANULARITY: u8 = 22;
    /// The highest tag below [`SKIPPABLE`] this version knows.
    pub const MAX_KNOWN: u8 = GRANULARITY;
    /// Bit set in tags a reader may skip when it does not know them.
    pub const SKIPPABLE: u8 = 0x80;
}

/// Bytes of a TLV header (tag and length).
pub const HEADER_LEN: usize = 3;

/// The longest value a TLV can hold (its length is a `u16`).
pub const MAX_VALUE_LEN: usize = u16::MAX as usize;

/// The most TLVs one list may hold. A link has 22 known fields at most (a
/// STATS reply: 6 plus 10 referrers); the bound keeps a hostile list of
/// empty values from costing more than a bounded walk.
pub const MAX_TLVS: usize = 64;

/// A zero-copy walk over a TLV list: yields `(tag, value)` pairs borrowing
/// from the input, in order.
///
/// Refused, as [`Error::InvalidTlv`] (and the walk ends there): a header or
/// value cut short (a length running past the end), more than [`MAX_TLVS`]
/// entries, and an unknown tag below [`tag::SKIPPABLE`] (tag 0 included).
/// Skippable tags are yielded, so a caller may still look at them.
/// Duplicates are the typed readers' business: a referrer may repeat, a
/// field may not.
#[derive(Debug, Clone)]
pub struct TlvReader<'a> {
    rest: &'a [u8],
    seen: usize,
    failed: bool,
}

impl<'a> TlvReader<'a> {
    /// Starts a walk over `list`.
    pub const fn new(list: &'a [u8]) -> Self {
        Self {
            rest: list,
            seen: 0,
            failed: false,
        }
    }

    fn fail(&mut self, tag: u8, problem: TlvProblem) -> Option<Result<(u8, &'a [u8]), Error>> {
        self.failed = true;
        Some(Err(Error::InvalidTlv { tag, problem }))
    }
}

impl<'a> Iterator for TlvReader<'a> {
    type Item = Result<(u8, &'a [u8]), Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        let (t, len, after) = match self.rest {
            [t, lo, hi, after @ ..] => (*t, usize::from(u16::from_le_bytes([*lo, *hi])), after),
            [t, ..] => return self.fail(*t, TlvProblem::Truncated),
            [] => return None,
        };
        if self.seen == MAX_TLVS {
            return self.fail(t, TlvProblem::TooMany);
        }
        if !is_known(t) {
            return self.fail(t, TlvProblem::UnknownTag);
        }
        let Some((value, rest)) = after.split_at_checked(len) else {
            return self.fail(t, TlvProblem::Truncated);
        };
        self.seen += 1;
        self.rest = rest;
        Some(Ok((t, value)))
    }
}

impl core::iter::FusedIterator for TlvReader<'_> {}

/// `true` for a tag a reader must understand or refuse: known, or
/// skippable.
fn is_known(t: u8) -> bool {
    (1..=tag::MAX_KNOWN).contains(&t) || t & tag::SKIPPABLE != 0
}

/// The encoded length of a TLV holding `value_len` bytes.
pub const fn encoded_len(value_len: usize) -> usize {
    HEADER_LEN + value_len
}

/// Appends one TLV.
///
/// # Errors
/// [`Error::InvalidTlv`] with [`TlvProblem::ValueTooLong`] past
/// [`MAX_VALUE_LEN`] bytes; nothing is written then.
pub fn put<M: BufMut>(dst: &mut M, tag: u8, value: &[u8]) -> Result<(), Error> {
    let len = u16::try_from(value.len()).map_err(|_| Error::InvalidTlv {
        tag,
        problem: TlvProblem::ValueTooLong,
    })?;
    dst.put_u8(tag);
    dst.put_u16_le(len);
    dst.put_slice(value);
    Ok(())
}

/// Appends a TLV holding a `u64` (LE).
///
/// # Errors
/// None in practice; `Result` for symmetry with [`put`].
pub fn put_u64<M: BufMut>(dst: &mut M, tag: u8, value: u64) -> Result<(), Error> {
    put(dst, tag, &value.to_le_bytes())
}

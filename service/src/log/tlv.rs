//! The option list of link records (log format 3) and of protocol v2: a
//! sequence of `u8 tag, u16 LE length, value` entries, integers
//! little-endian.
//!
//! | tag | field           | value                          |
//! |----:|-----------------|--------------------------------|
//! | 1   | expires_at      | `u64` Unix ms                  |
//! | 2   | max_clicks      | `u64`                          |
//! | 3   | redirect_status | `u16`: 301, 302, 307 or 308    |
//! | 4   | expired_url     | UTF-8                          |
//! | 5   | disabled        | empty                          |
//! | 6   | owner key id    | `u32`                          |
//! | 7   | title           | UTF-8                          |
//! | 8   | forward_query   | `u8` 0 or 1                    |
//! | 9   | created_at      | `u64` Unix ms                  |
//! | 10  | alias           | UTF-8                          |
//! | 11  | version         | `u64`                          |
//!
//! A tag with bit 7 set is optional: a reader that does not know it skips
//! it. An unknown tag below `0x80` changes the record's meaning, so the
//! list is refused. Each tag appears at most once. This module checks the
//! list's *shape* (lengths, fixed sizes, UTF-8); what the values mean is
//! [`crate::link`]'s.

use bytes::BufMut;

/// Expiry time, `u64` Unix ms.
pub const EXPIRES_AT: u8 = 1;
/// Click limit, `u64`.
pub const MAX_CLICKS: u8 = 2;
/// The link's own redirect status, `u16`.
pub const REDIRECT_STATUS: u8 = 3;
/// Where visitors go after expiry, UTF-8.
pub const EXPIRED_URL: u8 = 4;
/// Disabled, empty value.
pub const DISABLED: u8 = 5;
/// The owning API key's id, `u32`.
pub const OWNER: u8 = 6;
/// A title, UTF-8.
pub const TITLE: u8 = 7;
/// Forward the visitor's query, `u8` 0/1.
pub const FORWARD_QUERY: u8 = 8;
/// Creation time, `u64` Unix ms.
pub const CREATED_AT: u8 = 9;
/// The custom alias, UTF-8.
pub const ALIAS: u8 = 10;
/// The mutation version, `u64` (docs/round3-design.md §4).
pub const VERSION: u8 = 11;

/// Tags at or above this may be skipped by a reader that does not know
/// them.
pub const SKIPPABLE: u8 = 0x80;

/// Bytes before a value.
pub const ENTRY_HEADER_LEN: usize = 3;

/// Why an option list is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlvError {
    /// An entry runs past the end of the list.
    Truncated,
    /// A tag below `0x80` this version does not know.
    UnknownTag(u8),
    /// A fixed-size value of the wrong size, or text that is not UTF-8.
    BadValue(u8),
    /// A tag that appears twice.
    Duplicate(u8),
}

impl std::fmt::Display for TlvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlvError::Truncated => f.write_str("option list truncated"),
            TlvError::UnknownTag(t) => write!(f, "unknown option tag {t}"),
            TlvError::BadValue(t) => write!(f, "option {t} has a malformed value"),
            TlvError::Duplicate(t) => write!(f, "option {t} appears twice"),
        }
    }
}

impl std::error::Error for TlvError {}

/// The size a known tag's value must have (`None`: any size, UTF-8 text).
fn fixed_len(tag: u8) -> Option<Option<usize>> {
    Some(match tag {
        EXPIRES_AT | MAX_CLICKS | CREATED_AT | VERSION => Some(8),
        REDIRECT_STATUS => Some(2),
        DISABLED => Some(0),
        OWNER => Some(4),
        FORWARD_QUERY => Some(1),
        EXPIRED_URL | TITLE | ALIAS => None,
        _ => return None,
    })
}

/// The entries of an option list, in order, each checked as it is met.
/// Skippable unknown tags are passed over.
#[derive(Debug, Clone)]
pub struct Entries<'a> {
    rest: &'a [u8],
    seen: u16,
}

/// Iterates over `list`'s entries.
pub fn entries(list: &[u8]) -> Entries<'_> {
    Entries {
        rest: list,
        seen: 0,
    }
}

impl<'a> Iterator for Entries<'a> {
    type Item = Result<(u8, &'a [u8]), TlvError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let (&tag, rest) = self.rest.split_first()?;
            let result = (|| {
                let len = rest.get(..2).ok_or(TlvError::Truncated)?;
                let len = usize::from(u16::from_le_bytes([len[0], len[1]]));
                let value = rest.get(2..2 + len).ok_or(TlvError::Truncated)?;
                Ok((value, &rest[2 + len..]))
            })();
            let (value, rest) = match result {
                Ok(ok) => ok,
                Err(err) => {
                    // Stop after the first error: nothing after it is
                    // trusted.
                    self.rest = &[];
                    return Some(Err(err));
                }
            };
            self.rest = rest;
            let checked = match fixed_len(tag) {
                None if tag >= SKIPPABLE => continue,
                None => Err(TlvError::UnknownTag(tag)),
                Some(Some(n)) if value.len() != n => Err(TlvError::BadValue(tag)),
                Some(None) if std::str::from_utf8(value).is_err() => Err(TlvError::BadValue(tag)),
                Some(_) if self.seen & (1 << tag) != 0 => Err(TlvError::Duplicate(tag)),
                Some(_) => {
                    self.seen |= 1 << tag;
                    Ok((tag, value))
                }
            };
            if checked.is_err() {
                self.rest = &[];
            }
            return Some(checked);
        }
    }
}

/// Checks a whole list.
pub fn check(list: &[u8]) -> Result<(), TlvError> {
    entries(list).try_for_each(|e| e.map(drop))
}

/// The value of `tag` in a list already [`check`]ed, if present.
pub fn find(list: &[u8], tag: u8) -> Option<&[u8]> {
    entries(list)
        .filter_map(Result::ok)
        .find(|(t, _)| *t == tag)
        .map(|(_, v)| v)
}

/// A `u64` value.
pub fn u64_of(value: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(value.try_into().ok()?))
}

/// Appends one entry. Values longer than `u16::MAX` are the caller's bug
/// (the link model bounds every text option far below it); they are cut
/// rather than written with a wrong length.
pub fn put(dst: &mut impl BufMut, tag: u8, value: &[u8]) {
    let value = &value[..value.len().min(usize::from(u16::MAX))];
    dst.put_u8(tag);
    dst.put_u16_le(value.len() as u16);
    dst.put_slice(value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_skippable_tags_are_skipped() {
        let mut list = Vec::new();
        put(&mut list, EXPIRES_AT, &5u64.to_le_bytes());
        put(&mut list, 0x90, b"future");
        put(&mut list, TITLE, "tïtle".as_bytes());
        put(&mut list, DISABLED, &[]);
        let got: Vec<_> = entries(&list).collect::<Result<_, _>>().unwrap();
        assert_eq!(
            got,
            vec![
                (EXPIRES_AT, &5u64.to_le_bytes()[..]),
                (TITLE, "tïtle".as_bytes()),
                (DISABLED, &[][..]),
            ]
        );
        assert_eq!(find(&list, TITLE), Some("tïtle".as_bytes()));
        assert_eq!(find(&list, VERSION), None);
    }

    #[test]
    fn malformed_lists_are_refused() {
        let cases: &[(&[u8], TlvError)] = &[
            (&[1, 8], TlvError::Truncated),
            (&[1, 8, 0, 1, 2], TlvError::Truncated),
            (&[1, 2, 0, 1, 2], TlvError::BadValue(1)),
            (&[0x7f, 0, 0], TlvError::UnknownTag(0x7f)),
            (&[5, 0, 0, 5, 0, 0], TlvError::Duplicate(5)),
            (&[7, 1, 0, 0xff], TlvError::BadValue(7)),
        ];
        for (list, want) in cases {
            assert_eq!(check(list), Err(*want), "{list:?}");
        }
        assert_eq!(check(&[]), Ok(()));
    }
}

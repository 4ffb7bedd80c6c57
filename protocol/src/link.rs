//! Typed views over the TLV lists of protocol version 2: what SHORTEN2
//! takes ([`LinkOptions`]), what UPDATE changes ([`LinkPatch`]), what INFO
//! and the other link replies describe ([`LinkInfo`]), and what STATS
//! answers ([`LinkStats`]).
//!
//! Each is a plain struct of `Option` fields borrowing its strings from the
//! bytes it was parsed from. `parse` checks every value (lengths, ranges,
//! UTF-8, alias characters, duplicates, fields the message does not take);
//! `encode` writes the list and refuses exactly what `parse` would refuse,
//! so whatever encodes reads back as itself. Fields are in tag order on the
//! wire; a reader accepts any order.
//!
//! # Examples
//! ```
//! use shorty_protocol::link::LinkOptions;
//!
//! let mut options = LinkOptions::new("https://example.com/");
//! options.alias = Some("docs");
//! options.max_clicks = Some(100);
//! let bytes = options.to_vec()?;
//! assert_eq!(LinkOptions::parse(&bytes)?, options);
//!
//! // An alias outside `[A-Za-z0-9_-]` is refused on both sides:
//! options.alias = Some("a/b");
//! assert!(options.to_vec().is_err());
//! # Ok::<(), shorty_protocol::Error>(())
//! ```

use alloc::vec::Vec;

use bytes::BufMut;

use crate::error::{Error, TlvProblem};
use crate::tlv::{self, tag, TlvReader};

/// The longest alias (and code) a link may have, in bytes.
pub const MAX_CODE_LEN: usize = 64;

/// The most buckets a STATS series holds; a request for more is answered
/// with the first this many.
pub const MAX_STATS_BUCKETS: usize = 1_000;

/// The most referrers a STATS reply lists.
pub const MAX_REFERRERS: usize = 10;

/// The longest referrer host, in bytes (a DNS name is at most 253).
pub const MAX_HOST_LEN: usize = 255;

/// The redirect statuses a link may have.
pub const REDIRECT_STATUSES: [u16; 4] = [301, 302, 307, 308];

/// `true` for a valid alias or code: 1–[`MAX_CODE_LEN`] bytes of
/// `[A-Za-z0-9_-]` (case-sensitive).
///
/// ```
/// use shorty_protocol::link::is_valid_code;
/// assert!(is_valid_code("my-docs_2") && is_valid_code("867nvAB"));
/// assert!(!is_valid_code("") && !is_valid_code("a/b") && !is_valid_code("é"));
/// ```
pub fn is_valid_code(code: &str) -> bool {
    (1..=MAX_CODE_LEN).contains(&code.len())
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A value to write: what the typed structs hand their shared encoder.
#[derive(Clone, Copy)]
enum Val<'a> {
    U64(u64),
    U32(u32),
    U16(u16),
    U8(u8),
    Bytes(&'a [u8]),
}

impl Val<'_> {
    fn len(self) -> usize {
        match self {
            Val::U64(_) => 8,
            Val::U32(_) => 4,
            Val::U16(_) => 2,
            Val::U8(_) => 1,
            Val::Bytes(b) => b.len(),
        }
    }

    fn put<M: BufMut>(self, dst: &mut M, t: u8) -> Result<(), Error> {
        match self {
            Val::U64(v) => tlv::put(dst, t, &v.to_le_bytes()),
            Val::U32(v) => tlv::put(dst, t, &v.to_le_bytes()),
            Val::U16(v) => tlv::put(dst, t, &v.to_le_bytes()),
            Val::U8(v) => tlv::put(dst, t, &[v]),
            Val::Bytes(b) => tlv::put(dst, t, b),
        }
    }
}

fn str_val(s: &str) -> Val<'_> {
    Val::Bytes(s.as_bytes())
}

fn bad(t: u8, problem: TlvProblem) -> Error {
    Error::InvalidTlv { tag: t, problem }
}

fn u64_of(t: u8, v: &[u8]) -> Result<u64, Error> {
    <[u8; 8]>::try_from(v)
        .map(u64::from_le_bytes)
        .map_err(|_| bad(t, TlvProblem::BadValue))
}

fn u32_of(t: u8, v: &[u8]) -> Result<u32, Error> {
    <[u8; 4]>::try_from(v)
        .map(u32::from_le_bytes)
        .map_err(|_| bad(t, TlvProblem::BadValue))
}

fn bool_of(t: u8, v: &[u8]) -> Result<bool, Error> {
    match v {
        [0] => Ok(false),
        [1] => Ok(true),
        _ => Err(bad(t, TlvProblem::BadValue)),
    }
}

fn status_of(t: u8, v: &[u8]) -> Result<u16, Error> {
    match <[u8; 2]>::try_from(v).map(u16::from_le_bytes) {
        Ok(status) if REDIRECT_STATUSES.contains(&status) => Ok(status),
        _ => Err(bad(t, TlvProblem::BadValue)),
    }
}

fn str_of(t: u8, v: &[u8]) -> Result<&str, Error> {
    core::str::from_utf8(v).map_err(|_| bad(t, TlvProblem::BadValue))
}

/// A URL: non-empty UTF-8 without control bytes (what the server hands
/// out and stores; see `PROTOCOL.md`, section 2.3).
fn url_of(t: u8, v: &[u8]) -> Result<&str, Error> {
    if v.is_empty() || v.iter().any(|&b| b <= 0x1f) {
        return Err(bad(t, TlvProblem::BadValue));
    }
    str_of(t, v)
}

fn code_of(t: u8, v: &[u8]) -> Result<&str, Error> {
    match core::str::from_utf8(v) {
        Ok(code) if is_valid_code(code) => Ok(code),
        _ => Err(bad(t, TlvProblem::BadValue)),
    }
}

/// Stores a field's value, refusing a second one.
fn set<T>(slot: &mut Option<T>, t: u8, value: T) -> Result<(), Error> {
    if slot.is_some() {
        return Err(bad(t, TlvProblem::Duplicate));
    }
    *slot = Some(value);
    Ok(())
}

/// A field only skippable tags may be ignored; a known one the message
/// does not take is refused.
fn not_allowed(t: u8) -> Result<(), Error> {
    if t & tag::SKIPPABLE != 0 {
        Ok(())
    } else {
        Err(bad(t, TlvProblem::NotAllowed))
    }
}

fn required<T>(slot: Option<T>, t: u8) -> Result<T, Error> {
    slot.ok_or(bad(t, TlvProblem::Missing))
}

/// Writes the fields `each` visits, after checking that they read back:
/// `check` parses the bytes that would be written, so that the encoder
/// refuses exactly what the decoder refuses. Nothing is written on error.
fn encode_checked<M: BufMut>(
    dst: &mut M,
    each: impl Fn(&mut dyn FnMut(u8, Val<'_>)),
    check: impl FnOnce(&[u8]) -> Result<(), Error>,
) -> Result<(), Error> {
    let mut bytes = Vec::new();
    let mut result = Ok(());
    each(&mut |t, v| {
        if result.is_ok() {
            result = v.put(&mut bytes, t);
        }
    });
    result?;
    check(&bytes)?;
    dst.put_slice(&bytes);
    Ok(())
}

fn len_of(each: impl Fn(&mut dyn FnMut(u8, Val<'_>))) -> usize {
    let mut len = 0;
    each(&mut |_, v| len += tlv::encoded_len(v.len()));
    len
}

/// The options of a new link: the body of SHORTEN2 (protocol version 2).
///
/// `url` is required; every other field is optional (`None`: the server's
/// default). Times are Unix milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[non_exhaustive]
pub struct LinkOptions<'a> {
    /// The long URL (tag 12).
    pub url: &'a str,
    /// A custom code instead of a generated one (tag 10; see
    /// [`is_valid_code`]).
    pub alias: Option<&'a str>,
    /// When the link expires (tag 1).
    pub expires_at_ms: Option<u64>,
    /// How many clicks it serves (tag 2).
    pub max_clicks: Option<u64>,
    /// Its redirect status, one of [`REDIRECT_STATUSES`] (tag 3).
    pub redirect_status: Option<u16>,
    /// Where visitors go once it has expired (tag 4).
    pub expired_url: Option<&'a str>,
    /// A title (tag 7).
    pub title: Option<&'a str>,
    /// Forward a visitor's query into the redirect (tag 8).
    pub forward_query: Option<bool>,
}

impl<'a> LinkOptions<'a> {
    /// Options with only the URL set.
    pub fn new(url: &'a str) -> Self {
        Self {
            url,
            ..Self::default()
        }
    }

    fn each(&self, f: &mut dyn FnMut(u8, Val<'_>)) {
        if let Some(v) = self.expires_at_ms {
            f(tag::EXPIRES_AT, Val::U64(v));
        }
        if let Some(v) = self.max_clicks {
            f(tag::MAX_CLICKS, Val::U64(v));
        }
        if let Some(v) = self.redirect_status {
            f(tag::REDIRECT_STATUS, Val::U16(v));
        }
        if let Some(v) = self.expired_url {
            f(tag::EXPIRED_URL, str_val(v));
        }
        if let Some(v) = self.title {
            f(tag::TITLE, str_val(v));
        }
        if let Some(v) = self.forward_query {
            f(tag::FORWARD_QUERY, Val::U8(v.into()));
        }
        if let Some(v) = self.alias {
            f(tag::ALIAS, str_val(v));
        }
        f(tag::URL, str_val(self.url));
    }

    /// Reads a SHORTEN2 body.
    ///
    /// # Errors
    /// [`Error::InvalidTlv`]: see [`TlvProblem`]; tags 5, 6, 9, 11 and the
    /// reply-only tags are [`TlvProblem::NotAllowed`].
    pub fn parse(list: &'a [u8]) -> Result<Self, Error> {
        let mut url = None;
        let mut o = Self::default();
        for field in TlvReader::new(list) {
            let (t, v) = field?;
            match t {
                tag::URL => set(&mut url, t, url_of(t, v)?)?,
                tag::ALIAS => set(&mut o.alias, t, code_of(t, v)?)?,
                tag::EXPIRES_AT => set(&mut o.expires_at_ms, t, u64_of(t, v)?)?,
                tag::MAX_CLICKS => set(&mut o.max_clicks, t, u64_of(t, v)?)?,
                tag::REDIRECT_STATUS => set(&mut o.redirect_status, t, status_of(t, v)?)?,
                tag::EXPIRED_URL => set(&mut o.expired_url, t, url_of(t, v)?)?,
                tag::TITLE => set(&mut o.title, t, str_of(t, v)?)?,
                tag::FORWARD_QUERY => set(&mut o.forward_query, t, bool_of(t, v)?)?,
                other => not_allowed(other)?,
            }
        }
        o.url = required(url, tag::URL)?;
        Ok(o)
    }

    /// The length of the encoded list.
    pub fn encoded_len(&self) -> usize {
        len_of(|f| self.each(f))
    }

    /// Appends the TLV list to `dst`.
    ///
    /// # Errors
    /// What [`parse`](Self::parse) would refuse; nothing is written then.
    pub fn encode<M: BufMut>(&self, dst: &mut M) -> Result<(), Error> {
        encode_checked(dst, |f| self.each(f), |b| LinkOptions::parse(b).map(drop))
    }

    /// The encoded list, e.g. for [`Request::Shorten2`](crate::Request::Shorten2).
    ///
    /// # Errors
    /// As [`encode`](Self::encode).
    pub fn to_vec(&self) -> Result<Vec<u8>, Error> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode(&mut out)?;
        Ok(out)
    }
}

/// A change to a link: the patch of UPDATE (protocol version 2).
///
/// Each field is `None` to keep it, `Some(None)` to clear it (a TLV with an
/// empty value on the wire) and `Some(Some(v))` to set it. The URL can be
/// set but not cleared; `disabled` is set (`true`), or cleared
/// (`false`, the link enabled again).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[non_exhaustive]
pub struct LinkPatch<'a> {
    /// A new long URL (tag 12).
    pub url: Option<&'a str>,
    /// Expiry (tag 1).
    pub expires_at_ms: Option<Option<u64>>,
    /// Click limit (tag 2).
    pub max_clicks: Option<Option<u64>>,
    /// Redirect status (tag 3).
    pub redirect_status: Option<Option<u16>>,
    /// URL after expiry (tag 4).
    pub expired_url: Option<Option<&'a str>>,
    /// Disable or enable (tag 5: `u8` 1 or 0; empty also enables).
    pub disabled: Option<bool>,
    /// Title (tag 7).
    pub title: Option<Option<&'a str>>,
    /// Query forwarding (tag 8).
    pub forward_query: Option<Option<bool>>,
}

/// A patch field: empty clears, anything else is parsed.
fn change<'v, T>(
    slot: &mut Option<Option<T>>,
    t: u8,
    v: &'v [u8],
    parse: impl FnOnce(u8, &'v [u8]) -> Result<T, Error>,
) -> Result<(), Error> {
    let value = if v.is_empty() {
        None
    } else {
        Some(parse(t, v)?)
    };
    set(slot, t, value)
}

fn put_change<T: Copy>(
    f: &mut dyn FnMut(u8, Val<'_>),
    t: u8,
    slot: Option<Option<T>>,
    val: impl Fn(T) -> Val<'static>,
) {
    match slot {
        Some(Some(v)) => f(t, val(v)),
        Some(None) => f(t, Val::Bytes(&[])),
        None => {}
    }
}

impl<'a> LinkPatch<'a> {
    fn each(&self, f: &mut dyn FnMut(u8, Val<'_>)) {
        put_change(f, tag::EXPIRES_AT, self.expires_at_ms, Val::U64);
        put_change(f, tag::MAX_CLICKS, self.max_clicks, Val::U64);
        put_change(f, tag::REDIRECT_STATUS, self.redirect_status, Val::U16);
        if let Some(v) = self.expired_url {
            f(tag::EXPIRED_URL, str_val(v.unwrap_or_default()));
        }
        if let Some(v) = self.disabled {
            f(tag::DISABLED, Val::U8(v.into()));
        }
        if let Some(v) = self.title {
            f(tag::TITLE, str_val(v.unwrap_or_default()));
        }
        put_change(f, tag::FORWARD_QUERY, self.forward_query, |v| {
            Val::U8(v.into())
        });
        if let Some(v) = self.url {
            f(tag::URL, str_val(v));
        }
    }

    /// `true` when the patch changes nothing.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Reads an UPDATE patch.
    ///
    /// # Errors
    /// [`Error::InvalidTlv`]: see [`TlvProblem`]; an empty URL is
    /// [`TlvProblem::BadValue`] (a link keeps a URL), tags 6, 9, 10, 11 and
    /// the reply-only tags are [`TlvProblem::NotAllowed`]. A title set to
    /// the empty string reads as cleared.
    pub fn parse(list: &'a [u8]) -> Result<Self, Error> {
        let mut p = Self::default();
        for field in TlvReader::new(list) {
            let (t, v) = field?;
            match t {
                tag::URL => set(&mut p.url, t, url_of(t, v)?)?,
                tag::EXPIRES_AT => change(&mut p.expires_at_ms, t, v, u64_of)?,
                tag::MAX_CLICKS => change(&mut p.max_clicks, t, v, u64_of)?,
                tag::REDIRECT_STATUS => change(&mut p.redirect_status, t, v, status_of)?,
                tag::EXPIRED_URL => change(&mut p.expired_url, t, v, url_of)?,
                tag::DISABLED => {
                    let disabled = if v.is_empty() { false } else { bool_of(t, v)? };
                    set(&mut p.disabled, t, disabled)?;
                }
                tag::TITLE => change(&mut p.title, t, v, str_of)?,
                tag::FORWARD_QUERY => change(&mut p.forward_query, t, v, bool_of)?,
                other => not_allowed(other)?,
            }
        }
        Ok(p)
    }

    /// The length of the encoded list.
    pub fn encoded_len(&self) -> usize {
        len_of(|f| self.each(f))
    }

    /// Appends the TLV list to `dst`.
    ///
    /// # Errors
    /// What [`parse`](Self::parse) would refuse, and a title or expired
    /// URL set to `Some(Some(""))` (it would read back as cleared); nothing
    /// is written then.
    pub fn encode<M: BufMut>(&self, dst: &mut M) -> Result<(), Error> {
        if self.title == Some(Some("")) {
            return Err(bad(tag::TITLE, TlvProblem::BadValue));
        }
        if self.expired_url == Some(Some("")) {
            return Err(bad(tag::EXPIRED_URL, TlvProblem::BadValue));
        }
        encode_checked(dst, |f| self.each(f), |b| LinkPatch::parse(b).map(drop))
    }

    /// The encoded list, e.g. for [`Request::update`](crate::Request::update).
    ///
    /// # Errors
    /// As [`encode`](Self::encode).
    pub fn to_vec(&self) -> Result<Vec<u8>, Error> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode(&mut out)?;
        Ok(out)
    }
}

/// A link as the server describes it: the body of the SHORTENED2, UPDATED
/// and INFO replies (protocol version 2).
///
/// `code` and `url` are required; the rest is present when the link has it
/// (the click fields when the server counts clicks).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[non_exhaustive]
pub struct LinkInfo<'a> {
    /// Its code, generated or alias (tag 17).
    pub code: &'a str,
    /// The short URL (tag 18).
    pub short_url: Option<&'a str>,
    /// The long URL (tag 12).
    pub url: &'a str,
    /// Creation time (tag 9).
    pub created_at_ms: Option<u64>,
    /// Expiry (tag 1).
    pub expires_at_ms: Option<u64>,
    /// Click limit (tag 2).
    pub max_clicks: Option<u64>,
    /// Redirect status (tag 3).
    pub redirect_status: Option<u16>,
    /// URL after expiry (tag 4).
    pub expired_url: Option<&'a str>,
    /// Disabled (tag 5, an empty value when set).
    pub disabled: bool,
    /// The API key id that made it (tag 6).
    pub owner_key_id: Option<u32>,
    /// Title (tag 7).
    pub title: Option<&'a str>,
    /// Query forwarding (tag 8; `None`: the server's default).
    pub forward_query: Option<bool>,
    /// Version: the order of its mutations (tag 11).
    pub version: Option<u64>,
    /// Clicks in total (tag 13).
    pub clicks_total: Option<u64>,
    /// Clicks by people (tag 14).
    pub clicks_human: Option<u64>,
    /// Clicks by bots (tag 15).
    pub clicks_bot: Option<u64>,
    /// Last click (tag 16).
    pub last_click_at_ms: Option<u64>,
}

impl<'a> LinkInfo<'a> {
    /// A description with only the code and URL set.
    pub fn new(code: &'a str, url: &'a str) -> Self {
        Self {
            code,
            url,
            ..Self::default()
        }
    }

    fn each(&self, f: &mut dyn FnMut(u8, Val<'_>)) {
        let u64s = [
            (tag::EXPIRES_AT, self.expires_at_ms),
            (tag::MAX_CLICKS, self.max_clicks),
        ];
        for (t, v) in u64s {
            if let Some(v) = v {
                f(t, Val::U64(v));
            }
        }
        if let Some(v) = self.redirect_status {
            f(tag::REDIRECT_STATUS, Val::U16(v));
        }
        if let Some(v) = self.expired_url {
            f(tag::EXPIRED_URL, str_val(v));
        }
        if self.disabled {
            f(tag::DISABLED, Val::Bytes(&[]));
        }
        if let Some(v) = self.owner_key_id {
            f(tag::OWNER, Val::U32(v));
        }
        if let Some(v) = self.title {
            f(tag::TITLE, str_val(v));
        }
        if let Some(v) = self.forward_query {
            f(tag::FORWARD_QUERY, Val::U8(v.into()));
        }
        let u64s = [
            (tag::CREATED_AT, self.created_at_ms),
            (tag::VERSION, self.version),
        ];
        for (t, v) in u64s {
            if let Some(v) = v {
                f(t, Val::U64(v));
            }
        }
        f(tag::URL, str_val(self.url));
        let u64s = [
            (tag::CLICKS_TOTAL, self.clicks_total),
            (tag::CLICKS_HUMAN, self.clicks_human),
            (tag::CLICKS_BOT, self.clicks_bot),
            (tag::LAST_CLICK_AT, self.last_click_at_ms),
        ];
        for (t, v) in u64s {
            if let Some(v) = v {
                f(t, Val::U64(v));
            }
        }
        f(tag::CODE, str_val(self.code));
        if let Some(v) = self.short_url {
            f(tag::SHORT_URL, str_val(v));
        }
    }

    /// Reads a link description.
    ///
    /// # Errors
    /// [`Error::InvalidTlv`]: see [`TlvProblem`]; tag 10 and the STATS tags
    /// are [`TlvProblem::NotAllowed`].
    pub fn parse(list: &'a [u8]) -> Result<Self, Error> {
        let (mut code, mut url, mut disabled) = (None, None, None);
        let mut i = Self::default();
        for field in TlvReader::new(list) {
            let (t, v) = field?;
            match t {
                tag::CODE => set(&mut code, t, code_of(t, v)?)?,
                tag::SHORT_URL => set(&mut i.short_url, t, url_of(t, v)?)?,
                tag::URL => set(&mut url, t, url_of(t, v)?)?,
                tag::CREATED_AT => set(&mut i.created_at_ms, t, u64_of(t, v)?)?,
                tag::EXPIRES_AT => set(&mut i.expires_at_ms, t, u64_of(t, v)?)?,
                tag::MAX_CLICKS => set(&mut i.max_clicks, t, u64_of(t, v)?)?,
                tag::REDIRECT_STATUS => set(&mut i.redirect_status, t, status_of(t, v)?)?,
                tag::EXPIRED_URL => set(&mut i.expired_url, t, url_of(t, v)?)?,
                tag::DISABLED if v.is_empty() => set(&mut disabled, t, ())?,
                tag::DISABLED => return Err(bad(t, TlvProblem::BadValue)),
                tag::OWNER => set(&mut i.owner_key_id, t, u32_of(t, v)?)?,
                tag::TITLE => set(&mut i.title, t, str_of(t, v)?)?,
                tag::FORWARD_QUERY => set(&mut i.forward_query, t, bool_of(t, v)?)?,
                tag::VERSION => set(&mut i.version, t, u64_of(t, v)?)?,
                tag::CLICKS_TOTAL => set(&mut i.clicks_total, t, u64_of(t, v)?)?,
                tag::CLICKS_HUMAN => set(&mut i.clicks_human, t, u64_of(t, v)?)?,
                tag::CLICKS_BOT => set(&mut i.clicks_bot, t, u64_of(t, v)?)?,
                tag::LAST_CLICK_AT => set(&mut i.last_click_at_ms, t, u64_of(t, v)?)?,
                other => not_allowed(other)?,
            }
        }
        i.code = required(code, tag::CODE)?;
        i.url = required(url, tag::URL)?;
        i.disabled = disabled.is_some();
        Ok(i)
    }

    /// The length of the encoded list.
    pub fn encoded_len(&self) -> usize {
        len_of(|f| self.each(f))
    }

    /// Appends the TLV list to `dst`.
    ///
    /// # Errors
    /// What [`parse`](Self::parse) would refuse; nothing is written then.
    pub fn encode<M: BufMut>(&self, dst: &mut M) -> Result<(), Error> {
        encode_checked(dst, |f| self.each(f), |b| LinkInfo::parse(b).map(drop))
    }

    /// The encoded list, e.g. for [`Reply::Info`](crate::Reply::Info).
    ///
    /// # Errors
    /// As [`encode`](Self::encode).
    pub fn to_vec(&self) -> Result<Vec<u8>, Error> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode(&mut out)?;
        Ok(out)
    }
}

/// The width of a STATS series' buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[non_exhaustive]
pub enum Granularity {
    /// One bucket per hour (wire value 0).
    Hour,
    /// One bucket per UTC day (wire value 1).
    Day,
}

impl Granularity {
    /// The wire value.
    pub const fn to_u8(self) -> u8 {
        match self {
            Granularity::Hour => 0,
            Granularity::Day => 1,
        }
    }

    /// From the wire value; `None` for values this version does not define.
    pub const fn from_u8(value: u8) -> Option<Self> {
        match value {
            0 => Some(Granularity::Hour),
            1 => Some(Granularity::Day),
            _ => None,
        }
    }

    /// A bucket's width in milliseconds.
    pub const fn millis(self) -> u64 {
        match self {
            Granularity::Hour => 3_600_000,
            Granularity::Day => 86_400_000,
        }
    }
}

/// What a STATS request asks for: clicks from `from_ms` (inclusive) to
/// `to_ms` (exclusive), Unix milliseconds, in buckets of `granularity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[non_exhaustive]
pub struct StatsQuery {
    /// Start of the range, inclusive.
    pub from_ms: u64,
    /// End of the range, exclusive.
    pub to_ms: u64,
    /// Bucket width.
    pub granularity: Granularity,
}

impl StatsQuery {
    /// A query for `[from_ms, to_ms)` in buckets of `granularity`.
    pub const fn new(from_ms: u64, to_ms: u64, granularity: Granularity) -> Self {
        Self {
            from_ms,
            to_ms,
            granularity,
        }
    }
}

/// One bucket of a click series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Bucket {
    /// The bucket's start, Unix milliseconds.
    pub start_ms: u64,
    /// Clicks in it.
    pub count: u64,
}

/// One referring host and its (approximate) click count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Referrer<'a> {
    /// The host of the `Referer` header.
    pub host: &'a str,
    /// Clicks it sent.
    pub count: u64,
}

/// A link's click statistics: the body of the STATS reply (protocol
/// version 2).
///
/// The series holds at most [`MAX_STATS_BUCKETS`] buckets (buckets without
/// clicks may be left out), the referrers at most [`MAX_REFERRERS`], most
/// clicks first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[non_exhaustive]
pub struct LinkStats<'a> {
    /// Clicks in total (tag 13), all time.
    pub total: u64,
    /// Clicks by people (tag 14).
    pub human: u64,
    /// Clicks by bots (tag 15).
    pub bot: u64,
    /// First click (tag 19).
    pub first_click_at_ms: Option<u64>,
    /// Last click (tag 16).
    pub last_click_at_ms: Option<u64>,
    /// The series' bucket width (tag 22).
    pub granularity: Option<Granularity>,
    /// The series (tag 20), oldest first.
    pub series: Vec<Bucket>,
    /// Top referring hosts (tag 21, once per host).
    pub referrers: Vec<Referrer<'a>>,
}

impl<'a> LinkStats<'a> {
    fn each(&self, f: &mut dyn FnMut(u8, Val<'_>)) {
        f(tag::CLICKS_TOTAL, Val::U64(self.total));
        f(tag::CLICKS_HUMAN, Val::U64(self.human));
        f(tag::CLICKS_BOT, Val::U64(self.bot));
        if let Some(v) = self.last_click_at_ms {
            f(tag::LAST_CLICK_AT, Val::U64(v));
        }
        if let Some(v) = self.first_click_at_ms {
            f(tag::FIRST_CLICK_AT, Val::U64(v));
        }
        // Packed into one value; a series too long for it is refused by
        // `encode` (the bucket limit keeps it far below 64 KiB).
        let mut series = Vec::with_capacity(self.series.len() * 16);
        for b in self.series.iter().take(MAX_STATS_BUCKETS + 1) {
            series.extend_from_slice(&b.start_ms.to_le_bytes());
            series.extend_from_slice(&b.count.to_le_bytes());
        }
        f(tag::SERIES, Val::Bytes(&series));
        for r in &self.referrers {
            let mut value = Vec::with_capacity(8 + r.host.len());
            value.extend_from_slice(&r.count.to_le_bytes());
            value.extend_from_slice(r.host.as_bytes());
            f(tag::REFERRER, Val::Bytes(&value));
        }
        if let Some(g) = self.granularity {
            f(tag::GRANULARITY, Val::U8(g.to_u8()));
        }
    }

    /// Reads a STATS reply body.
    ///
    /// # Errors
    /// [`Error::InvalidTlv`]: see [`TlvProblem`]; more than
    /// [`MAX_STATS_BUCKETS`] buckets or [`MAX_REFERRERS`] referrers, or a
    /// host over [`MAX_HOST_LEN`] bytes, is [`TlvProblem::ValueTooLong`].
    pub fn parse(list: &'a [u8]) -> Result<Self, Error> {
        let (mut total, mut human, mut bot, mut series) = (None, None, None, None);
        let mut s = Self::default();
        for field in TlvReader::new(list) {
            let (t, v) = field?;
            match t {
                tag::CLICKS_TOTAL => set(&mut total, t, u64_of(t, v)?)?,
                tag::CLICKS_HUMAN => set(&mut human, t, u64_of(t, v)?)?,
                tag::CLICKS_BOT => set(&mut bot, t, u64_of(t, v)?)?,
                tag::LAST_CLICK_AT => set(&mut s.last_click_at_ms, t, u64_of(t, v)?)?,
                tag::FIRST_CLICK_AT => set(&mut s.first_click_at_ms, t, u64_of(t, v)?)?,
                tag::GRANULARITY => {
                    let g = v
                        .first()
                        .and_then(|&g| Granularity::from_u8(g))
                        .filter(|_| v.len() == 1)
                        .ok_or(bad(t, TlvProblem::BadValue))?;
                    set(&mut s.granularity, t, g)?;
                }
                tag::SERIES => {
                    if v.len() % 16 != 0 {
                        return Err(bad(t, TlvProblem::BadValue));
                    }
                    if v.len() / 16 > MAX_STATS_BUCKETS {
                        return Err(bad(t, TlvProblem::ValueTooLong));
                    }
                    let buckets = v
                        .chunks_exact(16)
                        .map(|pair| {
                            let (start, count) = pair.split_at(8);
                            Ok(Bucket {
                                start_ms: u64_of(t, start)?,
                                count: u64_of(t, count)?,
                            })
                        })
                        .collect::<Result<Vec<_>, Error>>()?;
                    set(&mut series, t, buckets)?;
                }
                tag::REFERRER => {
                    if s.referrers.len() == MAX_REFERRERS {
                        return Err(bad(t, TlvProblem::ValueTooLong));
                    }
                    let (count, host) =
                        v.split_at_checked(8).ok_or(bad(t, TlvProblem::BadValue))?;
                    if host.len() > MAX_HOST_LEN {
                        return Err(bad(t, TlvProblem::ValueTooLong));
                    }
                    s.referrers.push(Referrer {
                        host: url_of(t, host)?,
                        count: u64_of(t, count)?,
                    });
                }
                other => not_allowed(other)?,
            }
        }
        s.total = required(total, tag::CLICKS_TOTAL)?;
        s.human = required(human, tag::CLICKS_HUMAN)?;
        s.bot = required(bot, tag::CLICKS_BOT)?;
        s.series = required(series, tag::SERIES)?;
        Ok(s)
    }

    /// The length of the encoded list.
    pub fn encoded_len(&self) -> usize {
        len_of(|f| self.each(f))
    }

    /// Appends the TLV list to `dst`.
    ///
    /// # Errors
    /// What [`parse`](Self::parse) would refuse; nothing is written then.
    pub fn encode<M: BufMut>(&self, dst: &mut M) -> Result<(), Error> {
        encode_checked(dst, |f| self.each(f), |b| LinkStats::parse(b).map(drop))
    }

    /// The encoded list, for [`Reply::Stats`](crate::Reply::Stats).
    ///
    /// # Errors
    /// As [`encode`](Self::encode).
    pub fn to_vec(&self) -> Result<Vec<u8>, Error> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode(&mut out)?;
        Ok(out)
    }
}

//! What a link is (docs/round3-design.md §2): its options, their
//! validation, their encoding as an option list ([`crate::log::tlv`]), and
//! edits ([`LinkPatch`]).
//!
//! A plain generated link has no options at all ([`LinkMeta::is_plain`]):
//! its log record stays the format-2 bytes, so a generated link costs the
//! same on disk and in the key directory as before options existed.
//!
//! Pure: times come from the caller (`now_ms`, Unix milliseconds from the
//! serving node's clock).

use std::fmt;

use bytes::BufMut;
use shorty_protocol::ErrorCode;

use crate::codes::{parse_code, RESERVED_WORDS};
use crate::log::tlv::{self, TlvError};
use crate::url::{UrlError, UrlPolicy};

/// The longest alias.
pub const MAX_ALIAS_LEN: usize = 64;

/// The longest title, in bytes: a label for people, not a document.
pub const MAX_TITLE_BYTES: usize = 512;

/// The longest text option (an option's length field is a `u16`).
pub const MAX_OPTION_TEXT: usize = u16::MAX as usize;

/// The redirect statuses a link may choose.
pub const REDIRECT_STATUSES: [u16; 4] = [301, 302, 307, 308];

/// The latest expiry accepted: the last millisecond of the year 9999
/// (RFC 3339 cannot write a later one).
pub const MAX_EXPIRES_AT_MS: u64 = 253_402_300_799_999;

/// 409: the alias is taken, or quarantined after a delete.
pub const CONFLICT: ErrorCode = ErrorCode(409);
/// 410: expired, click limit reached, or disabled.
pub const GONE: ErrorCode = ErrorCode(410);
/// 403: the caller may not touch this link.
pub const FORBIDDEN: ErrorCode = ErrorCode(403);
/// 422: an option's value is refused.
pub const UNPROCESSABLE: ErrorCode = ErrorCode(422);

/// A link's options and bookkeeping: everything but its key and URL.
/// `None`/`false` everywhere is a plain generated link.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkMeta {
    /// Orders mutations of one key (design §4); 0 for a link never changed.
    pub version: u64,
    /// When it was made (Unix ms); plain generated links do not record it.
    pub created_at_ms: Option<u64>,
    /// After this instant (Unix ms) the link is gone.
    pub expires_at_ms: Option<u64>,
    /// After this many clicks the link is gone.
    pub max_clicks: Option<u64>,
    /// Its own redirect status (301, 302, 307, 308) instead of the
    /// server's `--redirect-status`.
    pub redirect_status: Option<u16>,
    /// Where a visitor goes once it is gone by expiry or click limit,
    /// instead of a 410 page.
    pub expired_url: Option<Box<str>>,
    /// Disabled: 410 "This link has been disabled".
    pub disabled: bool,
    /// The API key that made it.
    pub owner_key_id: Option<u32>,
    /// A label for people.
    pub title: Option<Box<str>>,
    /// Forward the visitor's query (`None`: the server's default).
    pub forward_query: Option<bool>,
    /// The custom alias it was made under, if it was.
    pub alias: Option<Box<str>>,
}

/// Why a link serves no redirect any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gone {
    /// Past its expiry time.
    Expired,
    /// Its click limit is reached.
    ClickLimit,
    /// Disabled by its owner.
    Disabled,
}

impl Gone {
    /// The text of the 410 page.
    pub fn message(self) -> &'static str {
        match self {
            Gone::Expired => "This link has expired",
            Gone::ClickLimit => "This link has reached its click limit",
            Gone::Disabled => "This link has been disabled",
        }
    }
}

impl LinkMeta {
    /// `true` for a link without any option: stored as a format-2 record.
    pub fn is_plain(&self) -> bool {
        *self == Self::default()
    }

    /// Whether the link is gone at `now_ms` after `clicks` counted clicks
    /// (the click about to be served not included). Disabled wins over the
    /// others: the owner's decision is the one a visitor should read.
    pub fn gone(&self, now_ms: u64, clicks: u64) -> Option<Gone> {
        if self.disabled {
            Some(Gone::Disabled)
        } else if self.expires_at_ms.is_some_and(|at| now_ms >= at) {
            Some(Gone::Expired)
        } else if self.max_clicks.is_some_and(|max| clicks >= max) {
            Some(Gone::ClickLimit)
        } else {
            None
        }
    }

    /// Appends the option list (empty for a plain link).
    pub fn encode(&self, dst: &mut impl BufMut) {
        let u64s = [
            (tlv::VERSION, (self.version != 0).then_some(self.version)),
            (tlv::CREATED_AT, self.created_at_ms),
            (tlv::EXPIRES_AT, self.expires_at_ms),
            (tlv::MAX_CLICKS, self.max_clicks),
        ];
        for (tag, value) in u64s {
            if let Some(v) = value {
                tlv::put(dst, tag, &v.to_le_bytes());
            }
        }
        if let Some(status) = self.redirect_status {
            tlv::put(dst, tlv::REDIRECT_STATUS, &status.to_le_bytes());
        }
        if self.disabled {
            tlv::put(dst, tlv::DISABLED, &[]);
        }
        if let Some(owner) = self.owner_key_id {
            tlv::put(dst, tlv::OWNER, &owner.to_le_bytes());
        }
        if let Some(forward) = self.forward_query {
            tlv::put(dst, tlv::FORWARD_QUERY, &[u8::from(forward)]);
        }
        let texts = [
            (tlv::EXPIRED_URL, &self.expired_url),
            (tlv::TITLE, &self.title),
            (tlv::ALIAS, &self.alias),
        ];
        for (tag, value) in texts {
            if let Some(text) = value {
                tlv::put(dst, tag, text.as_bytes());
            }
        }
    }

    /// The option list's encoded size.
    pub fn encoded_len(&self) -> usize {
        let entry = |present: bool, len: usize| {
            if present {
                tlv::ENTRY_HEADER_LEN + len
            } else {
                0
            }
        };
        let text = |t: &Option<Box<str>>| t.as_ref().map_or(0, |t| entry(true, t.len()));
        entry(self.version != 0, 8)
            + entry(self.created_at_ms.is_some(), 8)
            + entry(self.expires_at_ms.is_some(), 8)
            + entry(self.max_clicks.is_some(), 8)
            + entry(self.redirect_status.is_some(), 2)
            + entry(self.disabled, 0)
            + entry(self.owner_key_id.is_some(), 4)
            + entry(self.forward_query.is_some(), 1)
            + text(&self.expired_url)
            + text(&self.title)
            + text(&self.alias)
    }

    /// Decodes an option list.
    ///
    /// # Errors
    /// A malformed list, or a value outside its field's range (a redirect
    /// status not in [`REDIRECT_STATUSES`], a forward flag not 0/1).
    pub fn decode(list: &[u8]) -> Result<Self, TlvError> {
        let mut meta = Self::default();
        for entry in tlv::entries(list) {
            let (tag, value) = entry?;
            let u64_value = || tlv::u64_of(value).ok_or(TlvError::BadValue(tag));
            // `entries` checked UTF-8 for the text tags.
            let text = || Some(String::from_utf8_lossy(value).into());
            match tag {
                tlv::VERSION => meta.version = u64_value()?,
                tlv::CREATED_AT => meta.created_at_ms = Some(u64_value()?),
                tlv::EXPIRES_AT => meta.expires_at_ms = Some(u64_value()?),
                tlv::MAX_CLICKS => meta.max_clicks = Some(u64_value()?),
                tlv::REDIRECT_STATUS => {
                    let status = u16::from_le_bytes([value[0], value[1]]);
                    if !REDIRECT_STATUSES.contains(&status) {
                        return Err(TlvError::BadValue(tag));
                    }
                    meta.redirect_status = Some(status);
                }
                tlv::DISABLED => meta.disabled = true,
                tlv::OWNER => {
                    meta.owner_key_id =
                        Some(u32::from_le_bytes([value[0], value[1], value[2], value[3]]))
                }
                tlv::FORWARD_QUERY => {
                    meta.forward_query = Some(match value[0] {
                        0 => false,
                        1 => true,
                        _ => return Err(TlvError::BadValue(tag)),
                    })
                }
                tlv::EXPIRED_URL => meta.expired_url = text(),
                tlv::TITLE => meta.title = text(),
                tlv::ALIAS => meta.alias = text(),
                // `entries` yields known tags only.
                _ => return Err(TlvError::UnknownTag(tag)),
            }
        }
        Ok(meta)
    }
}

/// Why a link's options or alias are refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkError {
    /// The alias is empty or longer than [`MAX_ALIAS_LEN`].
    AliasLength(usize),
    /// The alias holds a character outside `[A-Za-z0-9_-]`.
    AliasCharacter,
    /// The alias is one of the service's route words.
    AliasReserved,
    /// Not one of [`REDIRECT_STATUSES`].
    RedirectStatus(u16),
    /// The expiry time is not in the future.
    ExpiryInPast,
    /// The expiry time is past [`MAX_EXPIRES_AT_MS`] (year 9999): no
    /// client can show it, and it is surely a mistake.
    ExpiryTooFar,
    /// The expired-URL is refused by the URL policy.
    ExpiredUrl(UrlError),
    /// The title is longer than [`MAX_TITLE_BYTES`].
    TitleTooLong,
    /// A click limit of zero: the link could never be clicked.
    ZeroClicks,
}

impl LinkError {
    /// The protocol (and HTTP) status for this refusal.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            LinkError::ExpiredUrl(err) => err.error_code(),
            _ => UNPROCESSABLE,
        }
    }
}

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkError::AliasLength(n) => {
                write!(f, "an alias has 1 to {MAX_ALIAS_LEN} characters, not {n}")
            }
            LinkError::AliasCharacter => {
                f.write_str("an alias may only hold letters, digits, '_' and '-'")
            }
            LinkError::AliasReserved => f.write_str("this alias is reserved by the service"),
            LinkError::ExpiryTooFar => f.write_str(
                "the expiry is past the year 9999 (omit it for a link that never expires)",
            ),
            LinkError::RedirectStatus(s) => {
                write!(f, "redirect status {s} is not one of 301, 302, 307, 308")
            }
            LinkError::ExpiryInPast => f.write_str("the expiry time is not in the future"),
            LinkError::ExpiredUrl(err) => write!(f, "expired URL: {err}"),
            LinkError::TitleTooLong => {
                write!(f, "the title is longer than {MAX_TITLE_BYTES} bytes")
            }
            LinkError::ZeroClicks => f.write_str("max clicks must be at least 1"),
        }
    }
}

impl std::error::Error for LinkError {}

/// Checks an alias: 1–64 characters of `[A-Za-z0-9_-]`, not a route word.
/// Case-sensitive, like codes; route words are refused in any case, since
/// some clients and proxies fold the case of paths.
///
/// # Errors
/// Why the alias is refused.
pub fn check_alias(alias: &str) -> Result<(), LinkError> {
    if alias.is_empty() || alias.len() > MAX_ALIAS_LEN {
        return Err(LinkError::AliasLength(alias.chars().count()));
    }
    if !alias
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(LinkError::AliasCharacter);
    }
    if RESERVED_WORDS.iter().any(|w| w.eq_ignore_ascii_case(alias)) {
        return Err(LinkError::AliasReserved);
    }
    Ok(())
}

/// Where an alias lives: an alias spelled like a code (7 base62
/// characters, or a canonical longer code) is a key of the main key
/// directory, found by a RESOLVE like any code (the generator skips it as
/// it skips imported codes); any other alias lives in the alias side map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AliasHome {
    /// The code key it decodes to.
    Key(u64),
    /// Not a code: the side map.
    Side,
}

/// Where `alias` (already [`check_alias`]ed) lives.
pub fn alias_home(alias: &str) -> AliasHome {
    parse_code(alias.as_bytes()).map_or(AliasHome::Side, AliasHome::Key)
}

impl LinkMeta {
    /// Checks options set by a caller at `now_ms` (the alias separately,
    /// with [`check_alias`]).
    ///
    /// # Errors
    /// The first option refused.
    pub fn check(&self, now_ms: u64, policy: &UrlPolicy) -> Result<(), LinkError> {
        self.check_at(Some(now_ms), policy)
    }

    /// [`check`](Self::check) for the options of a link made before now (an
    /// import): an expiry already past is kept, as it was made.
    ///
    /// # Errors
    /// The first option refused.
    pub fn check_made(&self, policy: &UrlPolicy) -> Result<(), LinkError> {
        self.check_at(None, policy)
    }

    fn check_at(&self, now_ms: Option<u64>, policy: &UrlPolicy) -> Result<(), LinkError> {
        if let Some(status) = self.redirect_status {
            if !REDIRECT_STATUSES.contains(&status) {
                return Err(LinkError::RedirectStatus(status));
            }
        }
        if let (Some(at), Some(now)) = (self.expires_at_ms, now_ms) {
            if at <= now {
                return Err(LinkError::ExpiryInPast);
            }
        }
        if self.expires_at_ms.is_some_and(|at| at > MAX_EXPIRES_AT_MS) {
            return Err(LinkError::ExpiryTooFar);
        }
        if self.max_clicks == Some(0) {
            return Err(LinkError::ZeroClicks);
        }
        if let Some(url) = &self.expired_url {
            // An option's value has a `u16` length: a longer URL (possible
            // with a large `--max-url-bytes`) is refused, never cut.
            if url.len() > MAX_OPTION_TEXT {
                return Err(LinkError::ExpiredUrl(UrlError::TooLong {
                    len: url.len(),
                    max: MAX_OPTION_TEXT,
                }));
            }
            // Never one of this server's own URLs: an expired link sent
            // to itself (or to another expired link that sends back)
            // would be a redirect loop.
            policy
                .check(url.as_bytes(), |_| true)
                .map_err(LinkError::ExpiredUrl)?;
        }
        if self
            .title
            .as_ref()
            .is_some_and(|t| t.len() > MAX_TITLE_BYTES)
        {
            return Err(LinkError::TitleTooLong);
        }
        Ok(())
    }
}

/// Who asks (docs/round3-design.md §1): an API key's id and what it may
/// do. Scope checks happen once, in the operation, never in the fronts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Principal {
    /// The API key, `None` for an unauthenticated caller.
    pub key_id: Option<u32>,
    /// What it may do.
    pub scopes: Scopes,
}

/// A set of scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Scopes(pub u8);

impl Scopes {
    /// Read links (info).
    pub const LINKS_READ: Scopes = Scopes(1);
    /// Create links; change and delete its own.
    pub const LINKS_WRITE: Scopes = Scopes(2);
    /// Change and delete any link.
    pub const LINKS_ALL: Scopes = Scopes(4);
    /// Read any link's click statistics (`stats:read`).
    pub const STATS_READ: Scopes = Scopes(8);
    /// Every scope.
    pub const ALL: Scopes = Scopes(15);

    /// `true` when every scope of `other` is in `self`.
    pub fn contains(self, other: Scopes) -> bool {
        self.0 & other.0 == other.0
    }
}

impl Principal {
    /// An unauthenticated caller of a server that lets anyone do
    /// anything (loopback-only, no keys: the seed client keeps working).
    pub const ANYONE: Principal = Principal {
        key_id: None,
        scopes: Scopes::ALL,
    };

    /// An unauthenticated caller of a server whose `--auth` is
    /// `required`: it may follow redirects and RESOLVE (which ask no
    /// principal) and nothing else, so every write needs a key.
    pub const NOBODY: Principal = Principal {
        key_id: None,
        scopes: Scopes(0),
    };

    /// The caller that presented no key: [`Principal::ANYONE`] unless
    /// `auth_required`, then [`Principal::NOBODY`].
    pub fn unauthenticated(auth_required: bool) -> Principal {
        if auth_required {
            Principal::NOBODY
        } else {
            Principal::ANYONE
        }
    }

    /// The code a refused request is answered with: 401 (a key is needed)
    /// for a caller without one, 403 for a key lacking the right.
    pub fn refusal(&self) -> ErrorCode {
        if self.key_id.is_none() {
            ErrorCode::UNAUTHORIZED
        } else {
            FORBIDDEN
        }
    }

    /// May it create links?
    pub fn may_create(&self) -> bool {
        self.scopes.contains(Scopes::LINKS_WRITE) || self.scopes.contains(Scopes::LINKS_ALL)
    }

    /// May it change or delete a link owned by `owner`? `links:all` any;
    /// `links:write` only its own.
    pub fn may_change(&self, owner: Option<u32>) -> bool {
        self.scopes.contains(Scopes::LINKS_ALL)
            || (self.scopes.contains(Scopes::LINKS_WRITE)
                && self.key_id.is_some()
                && self.key_id == owner)
    }

    /// May it read a link owned by `owner`?
    pub fn may_read(&self, owner: Option<u32>) -> bool {
        self.scopes.contains(Scopes::LINKS_READ) || self.may_change(owner)
    }

    /// May it read the click statistics of a link owned by `owner`?
    /// `stats:read` any link's; whoever may change the link, its.
    pub fn may_read_stats(&self, owner: Option<u32>) -> bool {
        self.scopes.contains(Scopes::STATS_READ) || self.may_change(owner)
    }
}

/// One field of a [`LinkPatch`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Field<T> {
    /// Leave it as it is.
    #[default]
    Keep,
    /// Set it to this.
    Set(T),
    /// Remove it.
    Clear,
}

impl<T> Field<T> {
    fn apply(self, to: &mut Option<T>) {
        match self {
            Field::Keep => {}
            Field::Set(v) => *to = Some(v),
            Field::Clear => *to = None,
        }
    }
}

/// An edit of a link: each field kept, set or cleared. The alias, the
/// owner and the creation time are not editable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkPatch {
    /// A new URL.
    pub url: Option<String>,
    /// Expiry time (Unix ms).
    pub expires_at_ms: Field<u64>,
    /// Click limit.
    pub max_clicks: Field<u64>,
    /// Own redirect status.
    pub redirect_status: Field<u16>,
    /// Where visitors go after expiry.
    pub expired_url: Field<Box<str>>,
    /// Disabled (`Clear` enables).
    pub disabled: Field<()>,
    /// Title.
    pub title: Field<Box<str>>,
    /// Query forwarding.
    pub forward_query: Field<bool>,
}

impl LinkPatch {
    /// `meta` with this patch applied, at `version`. Only the fields the
    /// patch sets are checked (an old option a newer rule would refuse
    /// stays as it is: its owner did not touch it).
    ///
    /// # Errors
    /// A field set to a refused value.
    pub fn apply(
        self,
        meta: &LinkMeta,
        version: u64,
        now_ms: u64,
        policy: &UrlPolicy,
    ) -> Result<LinkMeta, LinkError> {
        let mut set = LinkMeta::default();
        let mut out = meta.clone();
        if let Field::Set(v) = &self.expires_at_ms {
            set.expires_at_ms = Some(*v);
        }
        if let Field::Set(v) = &self.max_clicks {
            set.max_clicks = Some(*v);
        }
        if let Field::Set(v) = &self.redirect_status {
            set.redirect_status = Some(*v);
        }
        if let Field::Set(v) = &self.expired_url {
            set.expired_url = Some(v.clone());
        }
        if let Field::Set(v) = &self.title {
            set.title = Some(v.clone());
        }
        set.check(now_ms, policy)?;
        self.expires_at_ms.apply(&mut out.expires_at_ms);
        self.max_clicks.apply(&mut out.max_clicks);
        self.redirect_status.apply(&mut out.redirect_status);
        self.expired_url.apply(&mut out.expired_url);
        self.title.apply(&mut out.title);
        self.forward_query.apply(&mut out.forward_query);
        match self.disabled {
            Field::Keep => {}
            Field::Set(()) => out.disabled = true,
            Field::Clear => out.disabled = false,
        }
        out.version = version;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> UrlPolicy {
        UrlPolicy::new(2048, url::Url::parse("http://short.example/").unwrap())
    }

    fn full() -> LinkMeta {
        LinkMeta {
            version: 3,
            created_at_ms: Some(1_700_000_000_000),
            expires_at_ms: Some(1_800_000_000_000),
            max_clicks: Some(10),
            redirect_status: Some(307),
            expired_url: Some("https://e.com/over".into()),
            disabled: true,
            owner_key_id: Some(42),
            title: Some("tïtle".into()),
            forward_query: Some(false),
            alias: Some("my-alias".into()),
        }
    }

    #[test]
    fn options_round_trip_and_a_plain_link_has_none() {
        let meta = full();
        let mut list = Vec::new();
        meta.encode(&mut list);
        assert_eq!(list.len(), meta.encoded_len());
        assert_eq!(LinkMeta::decode(&list), Ok(meta));
        let plain = LinkMeta::default();
        assert!(plain.is_plain());
        assert_eq!(plain.encoded_len(), 0);
        assert!(!full().is_plain());
    }

    #[test]
    fn out_of_range_values_are_refused_when_decoding() {
        let mut list = Vec::new();
        tlv::put(&mut list, tlv::REDIRECT_STATUS, &303u16.to_le_bytes());
        assert_eq!(
            LinkMeta::decode(&list),
            Err(TlvError::BadValue(tlv::REDIRECT_STATUS))
        );
        let mut list = Vec::new();
        tlv::put(&mut list, tlv::FORWARD_QUERY, &[2]);
        assert!(LinkMeta::decode(&list).is_err());
    }

    #[test]
    fn aliases_are_checked() {
        assert_eq!(check_alias("my_Alias-1"), Ok(()));
        assert_eq!(check_alias(&"a".repeat(64)), Ok(()));
        assert_eq!(check_alias(""), Err(LinkError::AliasLength(0)));
        assert_eq!(
            check_alias(&"a".repeat(65)),
            Err(LinkError::AliasLength(65))
        );
        for bad in ["a b", "a/b", "é", "a.b", "a?"] {
            assert_eq!(check_alias(bad), Err(LinkError::AliasCharacter), "{bad}");
        }
        for word in ["healthz", "API", "Metrics", "static", "s"] {
            assert_eq!(check_alias(word), Err(LinkError::AliasReserved), "{word}");
        }
        assert!(matches!(alias_home("abcdefg"), AliasHome::Key(_)));
        assert_eq!(alias_home("abcdef"), AliasHome::Side);
        assert_eq!(alias_home("abc-efg"), AliasHome::Side);
        assert!(matches!(alias_home("abcdefgh"), AliasHome::Key(_)));
        assert_eq!(alias_home("0abcdefg"), AliasHome::Side, "not canonical");
    }

    #[test]
    fn options_are_checked_against_now_and_the_policy() {
        let now = 1_000;
        let ok = LinkMeta {
            expires_at_ms: Some(now + 1),
            redirect_status: Some(308),
            expired_url: Some("https://e.com/".into()),
            ..LinkMeta::default()
        };
        assert_eq!(ok.check(now, &policy()), Ok(()));
        let cases = [
            (
                LinkMeta {
                    expires_at_ms: Some(now),
                    ..ok.clone()
                },
                LinkError::ExpiryInPast,
            ),
            (
                LinkMeta {
                    redirect_status: Some(200),
                    ..ok.clone()
                },
                LinkError::RedirectStatus(200),
            ),
            (
                LinkMeta {
                    max_clicks: Some(0),
                    ..ok.clone()
                },
                LinkError::ZeroClicks,
            ),
            (
                LinkMeta {
                    title: Some("x".repeat(MAX_TITLE_BYTES + 1).into()),
                    ..ok.clone()
                },
                LinkError::TitleTooLong,
            ),
        ];
        for (meta, want) in cases {
            assert_eq!(meta.check(now, &policy()), Err(want));
        }
        let long = LinkMeta {
            expired_url: Some(format!("https://e.com/{}", "x".repeat(MAX_OPTION_TEXT)).into()),
            ..ok.clone()
        };
        let wide = UrlPolicy::new(1 << 20, url::Url::parse("http://short.example/").unwrap());
        assert!(matches!(
            long.check(now, &wide),
            Err(LinkError::ExpiredUrl(UrlError::TooLong { .. }))
        ));
        // The review's finds: an expired-URL that is this server's own
        // link (a redirect loop once it expires) and an expiry of u64::MAX.
        let own = LinkMeta {
            expired_url: Some("http://short.example/lp".into()),
            ..ok.clone()
        };
        assert_eq!(
            own.check(now, &wide),
            Err(LinkError::ExpiredUrl(UrlError::AlreadyShort))
        );
        let far = LinkMeta {
            expires_at_ms: Some(u64::MAX),
            ..ok.clone()
        };
        assert_eq!(far.check(now, &policy()), Err(LinkError::ExpiryTooFar));
        let bad_url = LinkMeta {
            expired_url: Some("ftp://x/".into()),
            ..ok
        };
        assert!(matches!(
            bad_url.check(now, &policy()),
            Err(LinkError::ExpiredUrl(_))
        ));
    }

    #[test]
    fn gone_follows_disabled_then_expiry_then_clicks() {
        let meta = LinkMeta {
            expires_at_ms: Some(100),
            max_clicks: Some(2),
            ..LinkMeta::default()
        };
        assert_eq!(meta.gone(99, 1), None);
        assert_eq!(meta.gone(100, 0), Some(Gone::Expired));
        assert_eq!(meta.gone(50, 2), Some(Gone::ClickLimit));
        let disabled = LinkMeta {
            disabled: true,
            ..meta
        };
        assert_eq!(disabled.gone(100, 5), Some(Gone::Disabled));
    }

    #[test]
    fn scopes_decide_who_changes_what() {
        let own = Principal {
            key_id: Some(3),
            scopes: Scopes::LINKS_WRITE,
        };
        assert!(own.may_create());
        assert!(own.may_change(Some(3)));
        assert!(!own.may_change(Some(4)));
        assert!(!own.may_change(None));
        assert!(own.may_read(Some(3)) && !own.may_read(Some(4)));
        let admin = Principal {
            key_id: Some(1),
            scopes: Scopes::LINKS_ALL,
        };
        assert!(admin.may_change(Some(4)) && admin.may_change(None));
        let reader = Principal {
            key_id: Some(2),
            scopes: Scopes::LINKS_READ,
        };
        assert!(!reader.may_create() && !reader.may_change(Some(2)) && reader.may_read(Some(9)));
        assert!(Principal::ANYONE.may_change(Some(9)));
    }

    #[test]
    fn a_patch_keeps_sets_and_clears() {
        let before = full();
        let patch = LinkPatch {
            expires_at_ms: Field::Clear,
            max_clicks: Field::Set(99),
            disabled: Field::Clear,
            title: Field::Keep,
            ..LinkPatch::default()
        };
        let after = patch.apply(&before, 4, 0, &policy()).unwrap();
        assert_eq!(after.expires_at_ms, None);
        assert_eq!(after.max_clicks, Some(99));
        assert!(!after.disabled);
        assert_eq!(after.title, before.title);
        assert_eq!(after.alias, before.alias);
        assert_eq!(after.version, 4);
        let refused = LinkPatch {
            redirect_status: Field::Set(200),
            ..LinkPatch::default()
        };
        assert_eq!(
            refused.apply(&before, 4, 0, &policy()),
            Err(LinkError::RedirectStatus(200))
        );
    }
}

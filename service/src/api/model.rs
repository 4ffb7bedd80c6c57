//! The JSON shapes of the API (camelCase, unknown fields refused) and
//! their validation into typed, checked values.

use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize};

use super::problem::{FieldError, Problem};

/// Longest alias (`slug`).
pub const MAX_ALIAS_LEN: usize = 64;
/// Longest title, in bytes.
pub const MAX_TITLE_BYTES: usize = 1024;
/// Most links in one bulk creation.
pub const MAX_BULK: usize = 100;

/// A field of a PATCH: absent keeps it, `null` clears it, a value sets it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Patch<T> {
    /// Absent: unchanged.
    #[default]
    Keep,
    /// `null`: cleared (back to the server's default).
    Clear,
    /// A new value.
    Set(T),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Patch<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Only called for a field that is present (absent ones take the
        // default, `Keep`), so `None` here is an explicit `null`.
        Ok(Option::<T>::deserialize(d)?.map_or(Patch::Clear, Patch::Set))
    }
}

/// `POST /api/v1/links` as sent.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateBody {
    url: String,
    #[serde(default)]
    slug: Option<String>,
    #[serde(default)]
    expires_at: Option<String>,
    #[serde(default)]
    max_clicks: Option<u64>,
    #[serde(default)]
    expired_url: Option<String>,
    #[serde(default)]
    redirect_status: Option<u16>,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    forward_query: Option<bool>,
}

/// `POST /api/v1/links/bulk` as sent.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkBody {
    links: Vec<serde_json::Value>,
}

/// `PATCH /api/v1/links/{code}` as sent.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PatchBody {
    #[serde(default)]
    url: Patch<String>,
    #[serde(default)]
    expires_at: Patch<String>,
    #[serde(default)]
    max_clicks: Patch<u64>,
    #[serde(default)]
    expired_url: Patch<String>,
    #[serde(default)]
    redirect_status: Patch<u16>,
    #[serde(default)]
    title: Patch<String>,
    #[serde(default)]
    disabled: Patch<bool>,
    #[serde(default)]
    forward_query: Patch<bool>,
}

/// A checked creation. URLs are checked against the URL policy where the
/// link is made (the shard), as for SHORTEN.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CreateLink {
    /// The long URL.
    pub url: String,
    /// The alias asked for.
    pub alias: Option<String>,
    /// Expiry, Unix ms.
    pub expires_at_ms: Option<u64>,
    /// Redirects allowed before the link is gone (at least 1).
    pub max_clicks: Option<u64>,
    /// Where an expired link sends visitors instead of 410.
    pub expired_url: Option<String>,
    /// 301, 302, 307 or 308.
    pub redirect_status: Option<u16>,
    /// A title for people.
    pub title: Option<String>,
    /// Forward a visitor's query into the redirect (`None`: the server's
    /// `--forward-query`).
    pub forward_query: Option<bool>,
}

impl CreateLink {
    /// `true` when nothing but the URL is asked for: what SHORTEN does.
    pub fn is_plain(&self) -> bool {
        *self
            == Self {
                url: self.url.clone(),
                ..Self::default()
            }
    }
}

/// A checked update: each field kept, cleared or set.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LinkPatch {
    /// A new URL (it cannot be cleared).
    pub url: Option<String>,
    /// Expiry, Unix ms.
    pub expires_at_ms: Patch<u64>,
    /// Click limit.
    pub max_clicks: Patch<u64>,
    /// URL for visitors of an expired link.
    pub expired_url: Patch<String>,
    /// Redirect status.
    pub redirect_status: Patch<u16>,
    /// Title.
    pub title: Patch<String>,
    /// Disabled or enabled (it cannot be cleared).
    pub disabled: Option<bool>,
    /// Query forwarding (`null` clears it: the server's default again).
    pub forward_query: Patch<bool>,
}

/// Click totals of a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Clicks {
    /// Every redirect.
    pub total: u64,
    /// Those not from known bots.
    pub human: u64,
    /// Those from known bots.
    pub bot: u64,
}

/// A link as the API shows it. Fields the serving core does not know yet
/// are `null`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LinkView {
    /// The code (or alias).
    pub code: String,
    /// `--public-url` + code.
    pub short_url: String,
    /// The long URL.
    pub url: String,
    /// RFC 3339.
    pub created_at: Option<String>,
    /// RFC 3339.
    pub expires_at: Option<String>,
    /// Click limit.
    pub max_clicks: Option<u64>,
    /// URL for visitors of an expired link.
    pub expired_url: Option<String>,
    /// Redirect status (`null`: the server's default).
    pub redirect_status: Option<u16>,
    /// Disabled links answer 410.
    pub disabled: bool,
    /// Title.
    pub title: Option<String>,
    /// Query forwarding of its own (`null`: the server's `--forward-query`).
    pub forward_query: Option<bool>,
    /// Click totals.
    pub clicks: Option<Clicks>,
    /// RFC 3339.
    pub last_click_at: Option<String>,
    /// Why `clicks` is `null` when the statistics could not be read (the
    /// store did not answer): a `null` `clicks` alone means they are not
    /// shown to this key, never "unknown" passed off as that.
    pub clicks_error: Option<String>,
}

impl LinkView {
    /// A link known only by its code and URL (what today's store holds).
    pub fn plain(code: &str, public_url: &str, url: &str) -> Self {
        Self {
            code: code.to_owned(),
            short_url: format!("{public_url}{code}"),
            url: url.to_owned(),
            created_at: None,
            expires_at: None,
            max_clicks: None,
            expired_url: None,
            redirect_status: None,
            disabled: false,
            title: None,
            forward_query: None,
            clicks: None,
            last_click_at: None,
            clicks_error: None,
        }
    }
}

/// Unix ms as RFC 3339 (UTC, milliseconds). RFC 3339 has four-digit
/// years: a time past the year 9999 (which no operation stores, but a
/// damaged or hand-made record could hold) is shown as the last
/// millisecond of 9999, never handed to `humantime`, whose `Display`
/// fails there and made `to_string` panic (review 23: one API read
/// aborted the server).
pub fn rfc3339_ms(ms: u64) -> String {
    let ms = ms.min(crate::link::MAX_EXPIRES_AT_MS);
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// RFC 3339 (UTC, `Z`) as Unix ms.
pub fn parse_rfc3339_ms(text: &str) -> Result<u64, String> {
    let at = humantime::parse_rfc3339(text)
        .map_err(|e| format!("not an RFC 3339 UTC time (2026-12-31T23:59:59Z): {e}"))?;
    let since = at
        .duration_since(UNIX_EPOCH)
        .map_err(|_| "before 1970".to_owned())?;
    u64::try_from(since.as_millis()).map_err(|_| "too far ahead".to_owned())
}

/// Checks an alias's syntax: 1 to 64 of `[A-Za-z0-9_-]`, not a route word.
pub fn check_alias(alias: &str) -> Result<(), String> {
    if alias.is_empty() || alias.len() > MAX_ALIAS_LEN {
        return Err(format!("must be 1 to {MAX_ALIAS_LEN} characters"));
    }
    if !alias
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err("may hold only A-Z, a-z, 0-9, '_' and '-'".into());
    }
    // Routes are matched exactly, but a word differing only in case would
    // still confuse people: refused too.
    if crate::codes::RESERVED_WORDS
        .iter()
        .any(|w| w.eq_ignore_ascii_case(alias))
    {
        return Err(format!("`{alias}` is a reserved word"));
    }
    Ok(())
}

fn check_status(status: u16) -> Result<u16, String> {
    match status {
        301 | 302 | 307 | 308 => Ok(status),
        _ => Err("must be 301, 302, 307 or 308".into()),
    }
}

fn check_title(title: String) -> Result<String, String> {
    if title.len() > MAX_TITLE_BYTES {
        return Err(format!("longer than {MAX_TITLE_BYTES} bytes"));
    }
    Ok(title)
}

fn check_clicks(n: u64) -> Result<u64, String> {
    if n == 0 {
        return Err("must be at least 1".into());
    }
    Ok(n)
}

/// Collects field errors while checking a body.
struct Checker {
    prefix: String,
    errors: Vec<FieldError>,
}

impl Checker {
    fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            errors: Vec::new(),
        }
    }

    fn check<T, U>(
        &mut self,
        field: &str,
        value: Option<T>,
        f: impl FnOnce(T) -> Result<U, String>,
    ) -> Option<U> {
        match f(value?) {
            Ok(v) => Some(v),
            Err(message) => {
                self.fail(field, message);
                None
            }
        }
    }

    fn fail(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(FieldError {
            field: format!("{}{field}", self.prefix),
            message: message.into(),
        });
    }

    fn patch<T, U>(
        &mut self,
        field: &str,
        value: Patch<T>,
        f: impl FnOnce(T) -> Result<U, String>,
    ) -> Patch<U> {
        match value {
            Patch::Keep => Patch::Keep,
            Patch::Clear => Patch::Clear,
            Patch::Set(v) => self
                .check(field, Some(v), f)
                .map_or(Patch::Keep, Patch::Set),
        }
    }

    fn finish<T>(self, value: T) -> Result<T, Problem> {
        if self.errors.is_empty() {
            Ok(value)
        } else {
            Err(Problem::invalid_fields(self.errors))
        }
    }
}

/// Parses `body` as JSON into `T`, naming the field at fault.
pub fn from_json<'a, T: Deserialize<'a>>(body: &'a [u8], prefix: &str) -> Result<T, Problem> {
    // Derived structs also accept arrays (fields by position): only an
    // object is a request body here.
    if body.trim_ascii_start().first() != Some(&b'{') {
        let field = if prefix.is_empty() {
            "body".to_owned()
        } else {
            prefix.trim_end_matches('.').to_owned()
        };
        return Err(Problem::invalid(field, "must be a JSON object"));
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed: Result<T, _> = serde_path_to_error::deserialize(&mut de);
    if let Ok(value) = parsed {
        return match de.end() {
            Ok(()) => Ok(value),
            Err(e) => Err(Problem::invalid(
                "body",
                format!("not valid JSON: trailing characters: {e}"),
            )),
        };
    }
    parsed.map_err(|err| {
        let path = err.path().to_string();
        let inner = err.inner();
        let message = inner.to_string();
        // Unknown and missing fields are reported at their parent object:
        // name the field itself.
        let named = ["unknown field `", "missing field `"]
            .iter()
            .find_map(|p| message.strip_prefix(p)?.split('`').next());
        // An unknown field's path already ends with its name; a missing
        // one's is its parent's.
        let syntax = matches!(
            inner.classify(),
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof
        );
        let field = match named {
            // Broken JSON is the body's fault, wherever it broke.
            _ if syntax && prefix.is_empty() => "body".to_owned(),
            Some(name) if path == "." => format!("{prefix}{name}"),
            Some(name) if !path.ends_with(name) => format!("{prefix}{path}.{name}"),
            None if path == "." && prefix.is_empty() => "body".to_owned(),
            None if path == "." => prefix.trim_end_matches('.').to_owned(),
            Some(_) | None => format!("{prefix}{path}"),
        };
        let message = if syntax {
            format!("not valid JSON: {message}")
        } else {
            message
        };
        Problem::invalid(field, message)
    })
}

/// Checks a creation body (`prefix` names its place in a bulk request).
pub fn create_link(body: CreateBody, prefix: &str) -> Result<CreateLink, Problem> {
    let mut c = Checker::new(prefix);
    if body.url.is_empty() {
        c.fail("url", "must not be empty");
    }
    let link = CreateLink {
        alias: c.check("slug", body.slug, |a| check_alias(&a).map(|()| a)),
        expires_at_ms: c.check("expiresAt", body.expires_at, |t| parse_rfc3339_ms(&t)),
        max_clicks: c.check("maxClicks", body.max_clicks, check_clicks),
        expired_url: body.expired_url,
        redirect_status: c.check("redirectStatus", body.redirect_status, check_status),
        title: c.check("title", body.title, check_title),
        forward_query: body.forward_query,
        url: body.url,
    };
    c.finish(link)
}

/// Checks a bulk body: one result per item.
pub fn bulk(body: &[u8]) -> Result<Vec<Result<CreateLink, Problem>>, Problem> {
    let bulk: BulkBody = from_json(body, "")?;
    if bulk.links.is_empty() || bulk.links.len() > MAX_BULK {
        return Err(Problem::invalid(
            "links",
            format!("must hold 1 to {MAX_BULK} links"),
        ));
    }
    Ok(bulk
        .links
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let prefix = format!("links[{i}].");
            let text = item.to_string();
            let body: CreateBody = from_json(text.as_bytes(), &prefix)?;
            create_link(body, &prefix)
        })
        .collect())
}

/// Checks a PATCH body.
pub fn patch(body: PatchBody) -> Result<LinkPatch, Problem> {
    let mut c = Checker::new("");
    let url = match body.url {
        Patch::Keep => None,
        Patch::Clear => {
            c.fail("url", "cannot be cleared");
            None
        }
        Patch::Set(url) if url.is_empty() => {
            c.fail("url", "must not be empty");
            None
        }
        Patch::Set(url) => Some(url),
    };
    let disabled = match body.disabled {
        Patch::Keep => None,
        Patch::Clear => {
            c.fail("disabled", "must be true or false");
            None
        }
        Patch::Set(d) => Some(d),
    };
    let patch = LinkPatch {
        url,
        expires_at_ms: c.patch("expiresAt", body.expires_at, |t| parse_rfc3339_ms(&t)),
        max_clicks: c.patch("maxClicks", body.max_clicks, check_clicks),
        expired_url: body.expired_url,
        redirect_status: c.patch("redirectStatus", body.redirect_status, check_status),
        title: c.patch("title", body.title, check_title),
        disabled,
        forward_query: body.forward_query,
    };
    if patch == LinkPatch::default() {
        c.fail("body", "names no field to change");
    }
    c.finish(patch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_past_the_year_9999_is_shown_not_panicked_on() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        let last = "9999-12-31T23:59:59.999Z";
        assert_eq!(rfc3339_ms(crate::link::MAX_EXPIRES_AT_MS), last);
        assert_eq!(rfc3339_ms(crate::link::MAX_EXPIRES_AT_MS + 1), last);
        assert_eq!(rfc3339_ms(u64::MAX), last);
    }
}

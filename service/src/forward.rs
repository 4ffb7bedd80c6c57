//! Query forwarding: `GET /CODE?utm_source=mail` redirects to the link's
//! URL with the visitor's query added, as campaign links expect (Shlink's
//! `forwardQuery`, Dub's `utm_*` pass-through).
//!
//! The rules, all in [`merge`]:
//! - the visitor's parameters are appended to the target's own query, in
//!   the visitor's order;
//! - on a name clash (names are compared decoded, so `utm%5Fsource`
//!   clashes with `utm_source`) the target's value stays by default
//!   ([`Clash::KeepTarget`]: the link's owner chose it) and the visitor's
//!   parameter is dropped; with [`Clash::VisitorWins`]
//!   (`--forward-query-clash visitor-wins`) the visitor's parameters of that
//!   name take the place of the target's, where the target had it;
//! - the target's fragment stays at the end; the visitor's never reaches
//!   the server;
//! - bytes a query may not hold (non-ASCII, `#`, `"`, `<`...) are
//!   percent-encoded, so the result is a valid URL and a valid header;
//! - a result longer than the limit is not made: the redirect goes to the
//!   target without the visitor's query rather than failing.
//!
//! Whether to forward at all is the caller's: a link's own option (tag 8,
//! `forward_query`) when it has one, else the server's `--forward-query`.

//!
//! The redirect writes the merged URL straight into its response
//! ([`merge_into`]): no intermediate `String`, the target and the
//! visitor's query scanned byte by byte, and a target without a query of
//! its own (no clash possible) costs a check and a copy of the visitor's
//! query. [`merge`] is the same rules returning the URL.

use std::borrow::Cow;

use bytes::{BufMut, BytesMut};

/// Whose value a query parameter keeps when the target's query and the
/// visitor's both name it (`--forward-query-clash`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Clash {
    /// The target's value stays; the visitor's parameter is dropped.
    #[default]
    KeepTarget,
    /// The visitor's parameters of that name replace the target's, at the
    /// place of the target's first one; the target's other parameters keep
    /// their order.
    VisitorWins,
}

/// The bytes that may stand for themselves in a query (RFC 3986 §3.4:
/// `pchar / "/" / "?"`; `%` is judged by its escape, so not here). A
/// table: one load a byte on the redirect path.
const QUERY_SAFE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = matches!(b as u8, b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.'
            | b'_' | b'~' | b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b','
            | b';' | b'=' | b':' | b'@' | b'/' | b'?');
        b += 1;
    }
    table
};

/// The `&`-separated segments of a query, empty ones included (as
/// `str::split('&')`, by a byte scan: queries are short).
fn segments(query: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(query);
    std::iter::from_fn(move || {
        let left = rest?;
        match left.bytes().position(|b| b == b'&') {
            Some(i) => {
                rest = Some(&left[i + 1..]);
                Some(&left[..i])
            }
            None => {
                rest = None;
                Some(left)
            }
        }
    })
}

/// Appends `raw` to `out`, percent-encoding what a query may not hold. A
/// `%` that starts a valid escape is kept; any other is encoded.
fn push_escaped(out: &mut BytesMut, raw: &str) {
    let bytes = raw.as_bytes();
    // The usual parameter (`utm_source=mail`) needs no escaping at all.
    if bytes.iter().all(|&b| QUERY_SAFE[usize::from(b)]) {
        return out.put_slice(bytes);
    }
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for (i, &b) in bytes.iter().enumerate() {
        let escape = b == b'%'
            && bytes
                .get(i + 1..i + 3)
                .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit));
        if QUERY_SAFE[usize::from(b)] || escape {
            out.put_u8(b);
        } else {
            out.put_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
    }
}

/// The raw name of one `name=value` pair.
fn raw_name(pair: &str) -> &str {
    pair.bytes()
        .position(|b| b == b'=')
        .map_or(pair, |i| &pair[..i])
}

/// Whether a raw name reads differently decoded (`%` escapes, `+`).
fn encoded(raw: &str) -> bool {
    raw.bytes().any(|b| b == b'%' || b == b'+')
}

/// The decoded name of one `name=value` pair (`+` is a space, as forms
/// encode it).
fn name(pair: &str) -> Cow<'_, str> {
    let raw = raw_name(pair);
    if !encoded(raw) {
        return raw.into();
    }
    url::form_urlencoded::parse(raw.as_bytes())
        .next()
        .map(|(name, _)| name)
        .unwrap_or_default()
}

/// Whether pairs `a` and `b` have the same decoded name: compared raw
/// unless either is encoded (the usual `utm_source` never is).
fn same_name(a: &str, b: &str) -> bool {
    let (raw_a, raw_b) = (raw_name(a), raw_name(b));
    if !encoded(raw_a) && !encoded(raw_b) {
        return raw_a == raw_b;
    }
    name(a) == name(b)
}

/// The URL to redirect to: `target` with the visitor's raw query
/// `visitor` (without `?` or fragment) forwarded into it, when `forward`
/// says so, by the rules of this module, a name clash settled by `clash`.
/// The result is at most `max_len` bytes, or `target` itself.
///
/// ```
/// use shorty_service::forward::{merge, Clash};
///
/// let to = "https://shop.example/p?id=7&utm_source=site#top";
/// let visitor = Some("utm_source=mail&utm_medium=email");
/// assert_eq!(
///     merge(to, visitor, true, Clash::KeepTarget, 8192),
///     "https://shop.example/p?id=7&utm_source=site&utm_medium=email#top"
/// );
/// assert_eq!(
///     merge(to, visitor, true, Clash::VisitorWins, 8192),
///     "https://shop.example/p?id=7&utm_source=mail&utm_medium=email#top"
/// );
/// assert_eq!(merge(to, visitor, false, Clash::KeepTarget, 8192), to);
/// assert_eq!(merge(to, visitor, true, Clash::KeepTarget, to.len()), to, "too long");
/// ```
pub fn merge<'a>(
    target: &'a str,
    visitor: Option<&str>,
    forward: bool,
    clash: Clash,
    max_len: usize,
) -> Cow<'a, str> {
    let mut out = BytesMut::new();
    if !merge_into(
        &mut out,
        target,
        visitor.filter(|_| forward),
        clash,
        max_len,
    ) {
        return target.into();
    }
    // Only whole `&str` pieces and ASCII were written: valid UTF-8.
    match String::from_utf8(out.to_vec()) {
        Ok(url) => url.into(),
        Err(_) => target.into(),
    }
}

/// [`merge`] written to the end of `out` (a response being rendered): the
/// merged URL, or `target` as it is when there is nothing to forward or
/// the result would be longer than `max_len`. Returns whether the
/// visitor's query was forwarded. Forwarding is on: the caller passes
/// `None` when it is off.
pub fn merge_into(
    out: &mut BytesMut,
    target: &str,
    visitor: Option<&str>,
    clash: Clash,
    max_len: usize,
) -> bool {
    let Some(visitor) = visitor.filter(|q| !q.is_empty()) else {
        out.put_slice(target.as_bytes());
        return false;
    };
    let start = out.len();
    let cut = memchr::memchr(b'#', target.as_bytes());
    let (base, fragment) = target.split_at(cut.unwrap_or(target.len()));
    let own_at = memchr::memchr(b'?', base.as_bytes());
    let own = own_at.map(|i| &base[i + 1..]);
    // The target's non-empty pairs' names, the only ones a visitor's can
    // clash with; none (no query, the usual campaign link) means no clash.
    let names = Names::of(own);
    let rebuilt = clash == Clash::VisitorWins
        && !names.is_empty()
        && segments(visitor).any(|p| !p.is_empty() && names.has(raw_name(p)));
    let separator: &[u8] = if let (true, Some(at)) = (rebuilt, own_at) {
        rebuild(out, &base[..at], &base[at + 1..], visitor)
    } else {
        out.put_slice(base.as_bytes());
        match own {
            None => b"?",
            Some(query) if query.is_empty() || query.ends_with('&') => b"",
            Some(_) => b"&",
        }
    };
    append_new_pairs(out, visitor, separator, &names);
    let len = out.len() - start;
    if (!rebuilt && len == base.len()) || len + fragment.len() > max_len {
        // Nothing to add, or too long: the target as it is.
        out.truncate(start);
        out.put_slice(target.as_bytes());
        return false;
    }
    out.put_slice(fragment.as_bytes());
    true
}

/// A byte's roles in a visitor's query: makes a name read differently
/// decoded, must be escaped. Most bytes (letters, digits, `_`, `=`, `&`)
/// have none.
const ENC: u8 = 1;
const UNSAFE: u8 = 2;
const CLASS: [u8; 256] = {
    let mut table = [0; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = match b as u8 {
            b'+' => ENC,
            // Kept only when it starts a valid escape: `push_escaped` judges.
            b'%' => ENC | UNSAFE,
            _ if QUERY_SAFE[b] => 0,
            _ => UNSAFE,
        };
        b += 1;
    }
    table
};

/// Appends the visitor's non-empty pairs whose names the target's query
/// does not have (`names`), in order, escaped, the first after
/// `separator`. Kept pairs that need no escaping and stood side by side in
/// the visitor's query are copied at once: the usual `utm_*` query to a
/// target without a query is one pass over its bytes (no early exit, so
/// it runs unbranched) and one copy.
fn append_new_pairs(out: &mut BytesMut, visitor: &str, mut separator: &[u8], names: &Names<'_>) {
    let bytes = visitor.as_bytes();
    let class = bytes.iter().fold(0, |acc, &b| acc | CLASS[usize::from(b)]);
    // The run of visitor bytes to copy as they are, not yet written.
    let mut run: Option<(usize, usize)> = None;
    let flush = |out: &mut BytesMut, run: Option<(usize, usize)>, separator: &mut &[u8]| {
        if let Some((from, to)) = run {
            out.put_slice(separator);
            *separator = b"&";
            out.put_slice(&bytes[from..to]);
        }
    };
    let mut pair_start = 0;
    let ends = memchr::memchr_iter(b'&', bytes).chain(std::iter::once(bytes.len()));
    for end in ends {
        let start = std::mem::replace(&mut pair_start, end + 1);
        let pair = &visitor[start..end];
        if pair.is_empty() {
            continue;
        }
        if !names.is_empty() {
            let name = raw_name(pair);
            if names.has_name(name, class & ENC != 0 && encoded(name)) {
                continue;
            }
        }
        let plain =
            class & UNSAFE == 0 || !pair.bytes().any(|b| CLASS[usize::from(b)] & UNSAFE != 0);
        if plain {
            run = match run {
                // Side by side: the `&` between them is copied too.
                Some((from, to)) if to + 1 == start => Some((from, end)),
                _ => {
                    flush(out, run, &mut separator);
                    Some((start, end))
                }
            };
        } else {
            flush(out, run.take(), &mut separator);
            out.put_slice(separator);
            separator = b"&";
            push_escaped(out, pair);
        }
    }
    flush(out, run, &mut separator);
}

/// The names of the target's non-empty query pairs, raw, each with
/// whether it reads differently decoded (a few: held in place).
struct Names<'a>(smallvec::SmallVec<[(&'a str, bool); 8]>);

impl<'a> Names<'a> {
    fn of(own: Option<&'a str>) -> Self {
        let pairs = own.into_iter().flat_map(segments).filter(|p| !p.is_empty());
        Self(pairs.map(raw_name).map(|raw| (raw, encoded(raw))).collect())
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether the target has a pair named `raw` (a raw name).
    fn has(&self, raw: &str) -> bool {
        self.has_name(raw, encoded(raw))
    }

    /// [`Names::has`], `encoded` known: names compare decoded, raw unless
    /// either is encoded (the usual `utm_source` never is).
    fn has_name(&self, raw: &str, encoded: bool) -> bool {
        self.0.iter().any(|&(own, own_encoded)| {
            if encoded || own_encoded {
                name(own) == name(raw)
            } else {
                own == raw
            }
        })
    }
}

/// With [`Clash::VisitorWins`] and a clash: writes `path?` and the
/// target's `query` again segment by segment (empty ones too, as the
/// target has them), its clashing pairs replaced by the visitor's.
/// Returns the separator the visitor's other pairs follow with.
fn rebuild(out: &mut BytesMut, path: &str, query: &str, visitor: &str) -> &'static [u8] {
    out.put_slice(path.as_bytes());
    out.put_u8(b'?');
    let mut written = false;
    let mut last_empty = true;
    let mut segment = |out: &mut BytesMut, pair: &str, escape: bool| {
        if written {
            out.put_u8(b'&');
        }
        written = true;
        last_empty = pair.is_empty();
        if escape {
            push_escaped(out, pair);
        } else {
            out.put_slice(pair.as_bytes());
        }
    };
    for (i, pair) in segments(query).enumerate() {
        let sent = |p: &&str| !p.is_empty() && same_name(p, pair);
        if pair.is_empty() || !segments(visitor).any(|p| sent(&p)) {
            segment(out, pair, false);
        } else if !segments(query).take(i).any(|p| sent(&p)) {
            // The first of the target's pairs of this name: the
            // visitor's take its place; the target's later ones go.
            for theirs in segments(visitor).filter(sent) {
                segment(out, theirs, true);
            }
        }
    }
    if last_empty {
        b""
    } else {
        b"&"
    }
}

#[cfg(test)]
mod tests {
    //! Properties over arbitrary targets and visitor queries.
    use proptest::prelude::*;

    use super::{merge, merge_into, Clash};

    const KEEP: Clash = Clash::KeepTarget;
    const WINS: Clash = Clash::VisitorWins;

    /// The non-empty `&`-separated pairs of a query.
    fn pairs(query: &str) -> Vec<&str> {
        query.split('&').filter(|p| !p.is_empty()).collect()
    }

    /// The decoded name of a pair.
    fn name(pair: &str) -> String {
        url::form_urlencoded::parse(pair.as_bytes())
            .next()
            .map(|(n, _)| n.into_owned())
            .unwrap_or_default()
    }

    /// `url` split into (before the query, query, fragment with its `#`).
    fn split(url: &str) -> (&str, Option<&str>, &str) {
        let (base, fragment) = url.split_at(url.find('#').unwrap_or(url.len()));
        match base.split_once('?') {
            Some((path, query)) => (path, Some(query), fragment),
            None => (base, None, fragment),
        }
    }

    /// A query pair drawn from names that often clash and arbitrary text.
    fn pair() -> impl Strategy<Value = String> {
        let name = prop_oneof![
            Just("utm_source".to_owned()),
            Just("utm%5Fsource".to_owned()),
            Just("id".to_owned()),
            Just("a+b".to_owned()),
            "[a-z]{1,4}",
            "[a-zA-Z0-9%+~é#<> \"]{0,6}",
        ];
        (name, proptest::option::of("[a-zA-Z0-9%+/?=é#]{0,8}")).prop_map(|(n, v)| match v {
            Some(v) => format!("{n}={v}"),
            None => n,
        })
    }

    fn query() -> impl Strategy<Value = String> {
        proptest::collection::vec(pair(), 0..6).prop_map(|p| p.join("&"))
    }

    /// Targets as links hold them: a scheme, host and path, maybe a query
    /// (possibly empty or ending in `&`), maybe a fragment.
    fn target() -> impl Strategy<Value = String> {
        (
            "https?://[a-z]{1,8}\\.example(:[0-9]{2,4})?(/[a-z0-9é]{0,6}){0,3}",
            proptest::option::of(prop_oneof![
                query(),
                Just(String::new()),
                query().prop_map(|q| q + "&")
            ]),
            proptest::option::of("[a-z0-9?/=]{0,8}"),
        )
            .prop_map(|(base, query, fragment)| {
                let mut url = base;
                if let Some(query) = query {
                    url.push('?');
                    url.push_str(&query);
                }
                if let Some(fragment) = fragment {
                    url.push('#');
                    url.push_str(&fragment);
                }
                url
            })
    }

    proptest! {
        #[test]
        fn off_or_without_a_query_the_target_is_unchanged(
            target in target(),
            visitor in query(),
            clash in clash(),
        ) {
            prop_assert_eq!(merge(&target, Some(&visitor), false, clash, 8192), target.as_str());
            prop_assert_eq!(merge(&target, None, true, clash, 8192), target.as_str());
            prop_assert_eq!(merge(&target, Some(""), true, clash, 8192), target.as_str());
        }

        #[test]
        fn the_target_keeps_its_query_and_fragment_and_gains_the_visitors_other_names(
            target in target(),
            visitor in query(),
        ) {
            let merged = merge(&target, Some(&visitor), true, KEEP, usize::MAX);
            let (path, own, fragment) = split(&target);
            let (m_path, m_query, m_fragment) = split(&merged);
            prop_assert_eq!(m_path, path);
            prop_assert_eq!(m_fragment, fragment, "the target's fragment stays, last");
            let own_pairs = pairs(own.unwrap_or_default());
            let merged_pairs = pairs(m_query.unwrap_or_default());
            prop_assert!(merged_pairs.starts_with(&own_pairs), "the target's own pairs first, unchanged");
            let own_names: Vec<String> = own_pairs.iter().map(|p| name(p)).collect();
            let expected: Vec<String> = pairs(&visitor)
                .into_iter()
                .filter(|p| !own_names.contains(&name(p)))
                .map(name)
                .collect();
            let added: Vec<String> = merged_pairs[own_pairs.len()..].iter().map(|p| name(p)).collect();
            prop_assert_eq!(added, expected, "the visitor's pairs, in order, minus clashing names");
            if expected_is_empty(&visitor, &own_names) {
                prop_assert_eq!(merged.as_ref(), target.as_str());
            }
        }

        #[test]
        fn the_result_is_a_bounded_valid_url(
            target in target(),
            visitor in query(),
            max in 0usize..200,
            clash in clash(),
        ) {
            let merged = merge(&target, Some(&visitor), true, clash, max);
            prop_assert!(merged == target || merged.len() <= max, "{} bytes over a limit of {}", merged.len(), max);
            prop_assert!(merged.is_ascii() || !target.is_ascii() || merged == target, "added bytes are ASCII");
            prop_assert_eq!(merged.matches(' ').count(), target.matches(' ').count(), "no space added");
            let parsed = url::Url::parse(&merged);
            prop_assert!(parsed.is_ok() == url::Url::parse(&target).is_ok(), "{}", merged);
            // Nothing the visitor sent can add a fragment or end the header.
            prop_assert_eq!(merged.matches('#').count(), target.matches('#').count());
            prop_assert!(!merged.contains(['\r', '\n']));
        }

        #[test]
        fn forwarding_twice_adds_nothing_more(target in target(), visitor in query()) {
            let once = merge(&target, Some(&visitor), true, KEEP, 8192).into_owned();
            prop_assert_eq!(merge(&once, Some(&visitor), true, KEEP, 8192), once.as_str());
        }

        #[test]
        fn never_panics_on_anything(
            target in "\\PC{0,40}",
            visitor in "\\PC{0,40}",
            max in 0usize..100,
            clash in clash(),
        ) {
            let _ = merge(&target, Some(&visitor), true, clash, max);
        }

        #[test]
        fn visitor_wins_replaces_clashing_values_in_place_and_appends_the_rest(
            target in target(),
            visitor in query(),
        ) {
            let merged = merge(&target, Some(&visitor), true, WINS, usize::MAX);
            let (path, own, fragment) = split(&target);
            let (m_path, m_query, m_fragment) = split(&merged);
            prop_assert_eq!(m_path, path);
            prop_assert_eq!(m_fragment, fragment, "the target's fragment stays, last");
            // Compared decoded: the visitor's bytes may have been escaped.
            let own = decoded(own.unwrap_or_default());
            let theirs = decoded(&visitor);
            let names = |pairs: &[(String, String)]| pairs.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
            let (own_names, their_names) = (names(&own), names(&theirs));
            let mut expected = Vec::new();
            for (i, (name, value)) in own.iter().enumerate() {
                if !their_names.contains(name) {
                    expected.push((name.clone(), value.clone()));
                } else if !own_names[..i].contains(name) {
                    expected.extend(theirs.iter().filter(|(n, _)| n == name).cloned());
                }
            }
            expected.extend(theirs.iter().filter(|(n, _)| !own_names.contains(n)).cloned());
            prop_assert_eq!(
                decoded(m_query.unwrap_or_default()),
                expected,
                "the target's order, clashing values the visitor's, then the visitor's other pairs in order"
            );
            if theirs.is_empty() {
                prop_assert_eq!(merged.as_ref(), target.as_str());
            }
        }

        #[test]
        fn merge_into_appends_the_merged_url_after_what_is_written(
            target in target(),
            visitor in query(),
            max in 0usize..200,
            clash in clash(),
            before in "[ -~]{0,20}",
        ) {
            // The redirect merges into the response it is writing: what
            // is there stays, whether the visitor's query fits or not.
            let mut out = bytes::BytesMut::from(before.as_bytes());
            let forwarded = merge_into(&mut out, &target, Some(&visitor), clash, max);
            let merged = merge(&target, Some(&visitor), true, clash, max);
            prop_assert_eq!(&out[..before.len()], before.as_bytes());
            prop_assert_eq!(&out[before.len()..], merged.as_bytes());
            if !forwarded {
                prop_assert_eq!(merged.as_ref(), target.as_str());
            }
        }

        #[test]
        fn visitor_wins_twice_adds_nothing_more(target in target(), visitor in query()) {
            // With one value per name (two values of one name are grouped
            // the first time).
            let mut names = Vec::new();
            let visitor: Vec<&str> = pairs(&visitor)
                .into_iter()
                .filter(|p| {
                    let name = name(p);
                    let first = !names.contains(&name);
                    names.push(name);
                    first
                })
                .collect();
            let visitor = visitor.join("&");
            let once = merge(&target, Some(&visitor), true, WINS, 8192).into_owned();
            prop_assert_eq!(merge(&once, Some(&visitor), true, WINS, 8192), once.as_str());
        }
    }

    fn clash() -> impl Strategy<Value = Clash> {
        prop_oneof![Just(KEEP), Just(WINS)]
    }

    /// The decoded (name, value) pairs of a query.
    fn decoded(query: &str) -> Vec<(String, String)> {
        url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect()
    }

    fn expected_is_empty(visitor: &str, own_names: &[String]) -> bool {
        pairs(visitor).iter().all(|p| own_names.contains(&name(p)))
    }

    #[test]
    fn the_rules_by_example() {
        let t = "https://e.example/p?utm_source=site&x=1#frag";
        assert_eq!(
            merge(
                t,
                Some("utm_source=mail&utm_medium=email"),
                true,
                KEEP,
                8192
            ),
            "https://e.example/p?utm_source=site&x=1&utm_medium=email#frag"
        );
        assert_eq!(
            merge("https://e.example/p", Some("a=1&b"), true, KEEP, 8192),
            "https://e.example/p?a=1&b"
        );
        assert_eq!(
            merge("https://e.example/p?", Some("a=1"), true, KEEP, 8192),
            "https://e.example/p?a=1"
        );
        assert_eq!(
            merge("https://e.example/p?z&", Some("a=1"), true, KEEP, 8192),
            "https://e.example/p?z&a=1"
        );
        assert_eq!(
            merge(
                "https://e.example/",
                Some("q=caf\u{e9} \"x\"#<b>&p=100%25&r=%zz"),
                true,
                KEEP,
                8192
            ),
            "https://e.example/?q=caf%C3%A9%20%22x%22%23%3Cb%3E&p=100%25&r=%25zz"
        );
        assert_eq!(
            merge(t, Some("utm%5Fsource=mail"), true, KEEP, 8192),
            t,
            "names compare decoded"
        );
        // Visitor wins: in place, every pair of the name, the target's
        // later pairs of the name gone, new names last.
        assert_eq!(
            merge(
                "https://e.example/p?a=0&b=1&a=9&c#f",
                Some("x=1&a=%C3%A9&a=2&b=&y"),
                true,
                WINS,
                8192
            ),
            "https://e.example/p?a=%C3%A9&a=2&b=&c&x=1&y#f"
        );
        assert_eq!(
            merge(
                "https://e.example/p?&a=0&&",
                Some("a=1&b"),
                true,
                WINS,
                8192
            ),
            "https://e.example/p?&a=1&&b",
            "empty pairs kept, as when the target's value stays"
        );
        assert_eq!(
            merge("https://e.example/p?z&", Some("a=1"), true, WINS, 8192),
            "https://e.example/p?z&a=1",
            "no clash: as when the target's value stays"
        );
        assert_eq!(
            merge("https://e.example/p?a=1", Some("a=2"), true, WINS, 22),
            "https://e.example/p?a=1",
            "too long: the target"
        );
    }
}

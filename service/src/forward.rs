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

use std::borrow::Cow;
use std::fmt::Write as _;

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

/// Whether byte `b` may stand for itself in a query (RFC 3986 §3.4:
/// `pchar / "/" / "?"`, `%` handled by the caller).
fn query_safe(b: u8) -> bool {
    matches!(b, b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~'
        | b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
        | b':' | b'@' | b'/' | b'?')
}

/// Appends `raw` to `out`, percent-encoding what a query may not hold. A
/// `%` that starts a valid escape is kept; any other is encoded.
fn push_escaped(out: &mut String, raw: &str) {
    let bytes = raw.as_bytes();
    // The usual parameter (`utm_source=mail`) needs no escaping at all.
    if bytes.iter().all(|&b| query_safe(b)) {
        return out.push_str(raw);
    }
    for (i, &b) in bytes.iter().enumerate() {
        let escape = b == b'%'
            && bytes
                .get(i + 1..i + 3)
                .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit));
        if query_safe(b) || escape {
            out.push(char::from(b));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{b:02X}");
        }
    }
}

/// The decoded name of one `name=value` pair (`+` is a space, as forms
/// encode it).
fn name(pair: &str) -> Cow<'_, str> {
    let raw = pair.split_once('=').map_or(pair, |(name, _)| name);
    if !raw.bytes().any(|b| b == b'%' || b == b'+') {
        return raw.into();
    }
    url::form_urlencoded::parse(raw.as_bytes())
        .next()
        .map(|(name, _)| name)
        .unwrap_or_default()
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
    let Some(visitor) = visitor.filter(|q| forward && !q.is_empty()) else {
        return target.into();
    };
    let (base, fragment) = target.split_at(target.find('#').unwrap_or(target.len()));
    let own = base.split_once('?').map(|(_, query)| query);
    // Queries are short: comparing each pair with the target's few is
    // cheaper than collecting the target's names.
    let taken = |wanted: &str| {
        own.is_some_and(|query| query.split('&').any(|p| !p.is_empty() && name(p) == wanted))
    };
    let mut url = String::with_capacity(target.len() + visitor.len() + 2);
    let rebuilt = clash == Clash::VisitorWins
        && own.is_some()
        && visitor.split('&').any(|p| !p.is_empty() && taken(&name(p)));
    let mut separator = if rebuilt {
        // The target's query is written again segment by segment (empty
        // ones too, as the target has them), its clashing pairs replaced
        // by the visitor's.
        let (path, query) = base.split_once('?').unwrap_or((base, ""));
        url.push_str(path);
        url.push('?');
        let mut written = false;
        let mut last_empty = true;
        let mut segment = |url: &mut String, pair: &str, escape: bool| {
            if written {
                url.push('&');
            }
            written = true;
            last_empty = pair.is_empty();
            if escape {
                push_escaped(url, pair);
            } else {
                url.push_str(pair);
            }
        };
        for (i, pair) in query.split('&').enumerate() {
            let pair_name = name(pair);
            let sent = |p: &&str| !p.is_empty() && name(p) == pair_name;
            if pair.is_empty() || !visitor.split('&').any(|p| sent(&p)) {
                segment(&mut url, pair, false);
            } else if !query.split('&').take(i).any(|p| sent(&p)) {
                // The first of the target's pairs of this name: the
                // visitor's take its place; the target's later ones go.
                for theirs in visitor.split('&').filter(sent) {
                    segment(&mut url, theirs, true);
                }
            }
        }
        if last_empty {
            ""
        } else {
            "&"
        }
    } else {
        url.push_str(base);
        match own {
            None => "?",
            Some(query) if query.is_empty() || query.ends_with('&') => "",
            Some(_) => "&",
        }
    };
    for pair in visitor.split('&').filter(|p| !p.is_empty()) {
        if taken(&name(pair)) {
            continue;
        }
        url.push_str(separator);
        separator = "&";
        push_escaped(&mut url, pair);
    }
    if (!rebuilt && url.len() == base.len()) || url.len() + fragment.len() > max_len {
        // Nothing to add, or too long: the target as it is.
        return target.into();
    }
    url.push_str(fragment);
    url.into()
}

#[cfg(test)]
mod tests {
    //! Properties over arbitrary targets and visitor queries.
    use proptest::prelude::*;

    use super::{merge, Clash};

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

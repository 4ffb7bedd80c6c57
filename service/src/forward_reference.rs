//! The query-forwarding merge as first written (str splits, a `String`
//! for the result), kept for tests only: the oracle [`crate::forward`]'s
//! byte-level version must agree with, byte for byte, on arbitrary input
//! (`differential::same_as_old`). Its rules are documented there.
#![allow(dead_code)]

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whose value a query parameter keeps when the target's query and the
/// visitor's both name it (`--forward-query-clash`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Clash {
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
pub(crate) fn merge<'a>(
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
mod differential {
    use proptest::prelude::*;
    proptest! {
        #[test]
        fn same_as_old(
            target in "https?://[a-z]{1,3}\\.ex(/[a-zé]{0,3}){0,2}(\\?([a-zA-Z0-9%+=&~é#<>\" ]|utm_source|id){0,12})?(#[a-z?&=]{0,4})?",
            visitor in "([a-zA-Z0-9%+=&~é#<> \"]|utm_source|utm%5Fsource|id|%2|%41|&&){0,14}",
            any_t in "\\PC{0,30}",
            any_v in "\\PC{0,30}",
            max in 0usize..120,
            wins in any::<bool>(),
        ) {
            for (t, v) in [(&target, &visitor), (&any_t, &any_v), (&target, &any_v)] {
                for forward in [true, false] {
                    let (old, new) = if wins {
                        (super::merge(t, Some(v), forward, super::Clash::VisitorWins, max),
                         crate::forward::merge(t, Some(v), forward, crate::forward::Clash::VisitorWins, max))
                    } else {
                        (super::merge(t, Some(v), forward, super::Clash::KeepTarget, max),
                         crate::forward::merge(t, Some(v), forward, crate::forward::Clash::KeepTarget, max))
                    };
                    prop_assert_eq!(old.as_ref(), new.as_ref());
                    let (old, new) = (super::merge(t, Some(v), forward, super::Clash::KeepTarget, 10_000),
                         crate::forward::merge(t, Some(v), forward, crate::forward::Clash::KeepTarget, 10_000));
                    prop_assert_eq!(old.as_ref(), new.as_ref());
                }
            }
        }
    }
}

//! Destination blocklist (`--blocklist FILE`): domains whose links are
//! refused with 403 naming the rule, on both fronts. Sans-IO: the runtime
//! reads the file (at start and on `SIGHUP`) and installs a new
//! [`Blocklist`] in the [`BlocklistRing`] every core reads.
//!
//! One rule a line, `#` starts a comment. `example.com` blocks that host
//! and every name under it (`www.example.com`); `.example.com` (or
//! `*.example.com`) only the names under it; an IP address only itself.
//! Host names are compared in their ASCII (punycode), lower-case form, as
//! the `url` crate normalises them, so `EXAMPLE.com.` and `exämple.com`
//! match their rules however they are written.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// One rule, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// As written in the file.
    pub text: String,
    /// Its line (1-based).
    pub line: usize,
}

/// The rules.
#[derive(Debug, Clone, Default)]
pub struct Blocklist {
    /// Domain → (rule, whether the domain itself is blocked too).
    domains: HashMap<String, (Rule, bool)>,
}

impl Blocklist {
    /// Parses a blocklist file's text.
    ///
    /// # Errors
    /// A line that is not a domain or an address, naming it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut domains = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let rule = line.split('#').next().unwrap_or_default().trim();
            if rule.is_empty() {
                continue;
            }
            let (name, itself) = match rule.strip_prefix("*.").or_else(|| rule.strip_prefix('.')) {
                Some(name) => (name, false),
                None => (rule, true),
            };
            let host = url::Host::parse(name)
                .map_err(|e| format!("line {}: `{rule}` is not a domain: {e}", i + 1))?;
            let key = host_key(&host);
            domains.insert(
                key,
                (
                    Rule {
                        text: rule.to_owned(),
                        line: i + 1,
                    },
                    itself,
                ),
            );
        }
        Ok(Self { domains })
    }

    /// Rules in the list.
    pub fn len(&self) -> usize {
        self.domains.len()
    }

    /// `true` when nothing is blocked.
    pub fn is_empty(&self) -> bool {
        self.domains.is_empty()
    }

    /// The rule blocking `url` (an accepted URL), if any.
    pub fn blocks(&self, url: &str) -> Option<&Rule> {
        if self.domains.is_empty() {
            return None;
        }
        let parsed = url::Url::parse(url).ok()?;
        let host = host_key(&parsed.host()?);
        let mut name = host.as_str();
        let mut exact = true;
        loop {
            if let Some((rule, itself)) = self.domains.get(name) {
                if *itself || !exact {
                    return Some(rule);
                }
            }
            // An IP address has no parent domains.
            if parsed
                .host_str()
                .is_some_and(|h| h.parse::<std::net::IpAddr>().is_ok() || h.starts_with('['))
            {
                return None;
            }
            name = name.split_once('.')?.1;
            exact = false;
        }
    }
}

/// The form a host is compared in, for rules and URLs alike: lower case,
/// without trailing dots, and an IPv4-mapped IPv6 literal
/// (`[::ffff:10.1.2.3]`, which reaches the IPv4 address) as its IPv4
/// address (review 23 went round an IPv4 rule with a mapped URL; review
/// 24 found a rule written mapped then matched neither spelling).
fn host_key<S: AsRef<str>>(host: &url::Host<S>) -> String {
    match host {
        url::Host::Ipv6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => host.to_string(),
        },
        url::Host::Ipv4(v4) => v4.to_string(),
        url::Host::Domain(name) => name.as_ref().trim_end_matches('.').to_ascii_lowercase(),
    }
}

/// The list every core reads, swapped whole on `SIGHUP`.
#[derive(Debug, Default)]
pub struct BlocklistRing(RwLock<Arc<Blocklist>>);

impl BlocklistRing {
    /// The rules now.
    pub fn current(&self) -> Arc<Blocklist> {
        // Only ever replaced whole: a poisoned lock still holds a list.
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Installs new rules.
    pub fn install(&self, list: Blocklist) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(list);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_block_themselves_and_below_suffixes_only_below() {
        let list = Blocklist::parse(
            "# phishing\nevil.example\n.tracker.example # subdomains only\n*.cdn.example\n192.0.2.7\n\n",
        )
        .unwrap();
        assert_eq!(list.len(), 4);
        let rule = |url: &str| list.blocks(url).map(|r| r.line);
        assert_eq!(rule("https://evil.example/x"), Some(2));
        assert_eq!(rule("https://WWW.Evil.Example./x"), Some(2));
        assert_eq!(rule("https://notevil.example/"), None);
        assert_eq!(rule("https://tracker.example/"), None);
        assert_eq!(rule("https://a.b.tracker.example/"), Some(3));
        assert_eq!(rule("https://x.cdn.example/"), Some(4));
        assert_eq!(rule("http://192.0.2.7:8080/"), Some(5));
        assert_eq!(rule("http://192.0.2.8/"), None);
        assert_eq!(rule("https://example.com/"), None);
        assert!(Blocklist::parse("not a domain!\n").is_err());
    }

    #[test]
    fn an_ipv4_mapped_ipv6_literal_is_judged_as_its_ipv4_address() {
        let list = Blocklist::parse("10.1.2.3\n").unwrap();
        assert!(list.blocks("https://10.1.2.3/").is_some());
        assert!(list.blocks("https://[::ffff:10.1.2.3]/").is_some());
        assert!(list.blocks("https://[::ffff:a01:203]/x").is_some());
        assert!(list.blocks("https://[::ffff:10.1.2.4]/").is_none());
        assert!(list.blocks("https://[2001:db8::1]/").is_none());
        // The rule written mapped blocks both spellings too (review 24).
        let list = Blocklist::parse("[::ffff:10.9.9.9]\n[2001:DB8::1]\n").unwrap();
        assert!(list.blocks("http://[::ffff:10.9.9.9]/").is_some());
        assert!(list.blocks("http://10.9.9.9/").is_some());
        assert!(list.blocks("http://[::ffff:a09:909]/").is_some());
        assert!(list.blocks("http://10.9.9.8/").is_none());
        assert!(list.blocks("http://[2001:db8:0::1]/").is_some());
    }

    #[test]
    fn international_names_match_their_punycode() {
        let list = Blocklist::parse("bücher.example\n").unwrap();
        assert!(list.blocks("https://BÜCHER.example/").is_some());
        assert!(list.blocks("https://xn--bcher-kva.example/").is_some());
    }
}

//! Bot detection: the `isbot` crate's list (a port of the widely used
//! omrilotan/isbot patterns: link previewers, crawlers, monitors, HTTP
//! tools), behind a per-core cache of verdicts so that a user agent seen
//! before costs one hash and no allocation (the crate lowercases each user
//! agent it is asked about into a new string, then runs one large regex).

use std::collections::HashMap;
use std::hash::Hasher;
use std::sync::{Arc, OnceLock};

/// Verdicts one core remembers; past it the cache starts over (a flood of
/// distinct user agents costs the regex, never memory).
const CACHE_ENTRIES: usize = 4096;

/// The compiled list, built once per process (compiling it takes a few
/// milliseconds).
fn shared_list() -> Arc<isbot::Bots> {
    static LIST: OnceLock<Arc<isbot::Bots>> = OnceLock::new();
    LIST.get_or_init(|| Arc::new(isbot::Bots::default()))
        .clone()
}

/// One core's bot detector.
#[derive(Debug)]
pub struct BotDetector {
    list: Option<Arc<isbot::Bots>>,
    /// Hash of a user agent → bot?
    // foldhash over the (already hashed) user agent: cheaper than std's
    // SipHash on every click, and seeded per process, so user agents cannot
    // be chosen offline to collide in this cache.
    verdicts: HashMap<u64, bool, foldhash::fast::RandomState>,
}

impl Default for BotDetector {
    fn default() -> Self {
        Self::new()
    }
}

impl BotDetector {
    /// A detector over the default list. The list is compiled at the
    /// first [`BotDetector::is_bot`], so a server with `--stats off` never
    /// pays for it.
    pub fn new() -> Self {
        Self {
            list: None,
            verdicts: HashMap::with_capacity_and_hasher(CACHE_ENTRIES, Default::default()),
        }
    }

    /// Compiles the list now (at start, off the serving cores) rather than
    /// at the first user agent a core meets.
    pub fn warm() {
        drop(shared_list());
    }

    /// Whether `user_agent` is a bot's. A request without a `User-Agent`
    /// counts as a human's (the list's own rule for the empty string).
    pub fn is_bot(&mut self, user_agent: Option<&str>) -> bool {
        let Some(ua) = user_agent.filter(|ua| !ua.is_empty()) else {
            return false;
        };
        let mut hasher = siphasher::sip::SipHasher13::new_with_keys(0x5348_4f52, 0x5459);
        hasher.write(ua.as_bytes());
        let hash = hasher.finish();
        if let Some(&verdict) = self.verdicts.get(&hash) {
            return verdict;
        }
        let verdict = self.list.get_or_insert_with(shared_list).is_bot(ua);
        if self.verdicts.len() >= CACHE_ENTRIES {
            self.verdicts.clear();
        }
        self.verdicts.insert(hash, verdict);
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previewers_crawlers_and_tools_are_bots() {
        let mut d = BotDetector::new();
        for ua in [
            "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
            "Slackbot 1.0 (+https://api.slack.com/robots)",
            "Twitterbot/1.0",
            "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
            "WhatsApp/2.23.20.0 A",
            "Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)",
            "TelegramBot (like TwitterBot)",
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
            "curl/8.5.0",
            "Wget/1.21.4",
            "python-requests/2.31.0",
        ] {
            assert!(d.is_bot(Some(ua)), "{ua} should be a bot");
            // The cached verdict agrees.
            assert!(d.is_bot(Some(ua)), "{ua} (cached) should be a bot");
        }
    }

    #[test]
    fn browsers_and_no_user_agent_are_human() {
        let mut d = BotDetector::new();
        for ua in [
            None,
            Some(""),
            Some(
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like \
                 Gecko) Chrome/120.0.0.0 Safari/537.36",
            ),
            Some(
                "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 \
                 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
            ),
            Some("Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0"),
        ] {
            assert!(!d.is_bot(ua), "{ua:?} should be human");
        }
    }

    #[test]
    fn the_cache_stays_bounded() {
        let mut d = BotDetector::new();
        for i in 0..(CACHE_ENTRIES * 2 + 3) {
            d.is_bot(Some(&format!("Mozilla/5.0 Browser/{i}")));
        }
        assert!(d.verdicts.len() <= CACHE_ENTRIES);
    }
}

//! Rate limits: GCRA (`governor`) per client address and per API key,
//! separately for new links and for redirects. Sans-IO: the caller passes
//! `now`, which advances the limiters' clock ([`LimitClock`]); nothing
//! here reads a clock.
//!
//! **Bounded memory.** Each limiter keeps its per-client state in a
//! `quick_cache` of at most `--rate-max-clients` entries (CLOCK-Pro
//! eviction), not in an unbounded map: a spray of addresses evicts the
//! coldest entries instead of growing memory. An evicted client starts
//! again with a full burst, which gains a sprayer nothing (each of its
//! addresses is new anyway). IPv6 clients are limited per /64 (one
//! subscriber's whole network), IPv4 per address; an IPv4-mapped IPv6
//! address counts as its IPv4 address. Memory per entry is measured by the
//! `limits` integration test (a counting allocator under a 100,000-address
//! spray).
//!
//! The limiters are shared by every core (their state is atomic), so a
//! client's connections spread over cores by `SO_REUSEPORT` share one
//! budget.

use std::collections::HashMap;
use std::convert::Infallible;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed, StateStore};
use governor::{Quota, RateLimiter};

/// Default `--rate-max-clients`: client entries each limiter keeps.
pub const DEFAULT_MAX_CLIENTS: usize = 100_000;

/// A client, as limits count them: an IPv4 address or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Client {
    /// An IPv4 address.
    V4([u8; 4]),
    /// The first 64 bits of an IPv6 address.
    V6([u8; 8]),
}

impl Client {
    /// The client of peer address `ip`.
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Client::V4(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Client::V4(v4.octets()),
                None => {
                    let mut prefix = [0; 8];
                    prefix.copy_from_slice(&v6.octets()[..8]);
                    Client::V6(prefix)
                }
            },
        }
    }
}

thread_local! {
    /// The `now` of the check running on this thread: each core passes its
    /// own, so the clock costs no shared write (a shared atomic would
    /// bounce one cache line between every core on every redirect).
    static NOW: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
}

/// The limiters' clock: the `now` the caller of [`Limits::check`] passed
/// (on this thread), as nanoseconds since the limits were made. Cores'
/// clocks differ by microseconds at most, which GCRA tolerates (a request
/// seen slightly early is judged slightly strictly).
#[derive(Debug, Clone)]
pub struct LimitClock {
    epoch: Instant,
}

impl LimitClock {
    fn new(epoch: Instant) -> Self {
        Self { epoch }
    }

    fn advance_to(&self, now: Instant) {
        NOW.with(|cell| cell.set(Some(now)));
    }
}

impl Clock for LimitClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        let now = NOW.with(std::cell::Cell::get).unwrap_or(self.epoch);
        let nanos = now.saturating_duration_since(self.epoch).as_nanos();
        Nanos::from(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

/// A keyed state store that holds at most a fixed number of keys.
#[derive(Debug)]
pub struct BoundedStore<K: Eq + Hash + Clone>(Arc<Entries<K>>);

type Entries<K> = quick_cache::sync::Cache<K, Arc<InMemoryState>>;

impl<K: Eq + Hash + Clone> BoundedStore<K> {
    fn new(max_keys: usize) -> Self {
        Self(Arc::new(quick_cache::sync::Cache::new(max_keys.max(1))))
    }
}

impl<K: Eq + Hash + Clone> StateStore for BoundedStore<K> {
    type Key = K;

    fn measure_and_replace<T, F, E>(&self, key: &K, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let state = match self
            .0
            .get_or_insert_with(key, || Ok::<_, Infallible>(Arc::default()))
        {
            Ok(state) => state,
            Err(never) => match never {},
        };
        state.measure_and_replace(&NotKeyed::NonKey, f)
    }
}

type Limiter<K> = RateLimiter<K, BoundedStore<K>, LimitClock, NoOpMiddleware<Nanos>>;

/// The limiter of one key with a limit of its own.
type KeyLimiter = RateLimiter<NotKeyed, InMemoryState, LimitClock, NoOpMiddleware<Nanos>>;

/// A limiter, and its entries' count for [`Limits::entries`].
fn limiter<K: Eq + Hash + Clone + Send + Sync + 'static>(
    rate: Option<Rate>,
    max: usize,
    clock: &LimitClock,
    sizes: &mut Vec<Box<dyn Fn() -> usize + Send + Sync>>,
) -> Option<Limiter<K>> {
    let quota = rate?.quota()?;
    let store = BoundedStore::new(max);
    let entries = store.0.clone();
    sizes.push(Box::new(move || entries.len()));
    Some(RateLimiter::new(quota, store, clock.clone()))
}

/// A limit as configured: `N/s`, `N/min`, `N/h` (N requests per unit, in
/// bursts of up to N), or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Requests per `per`.
    pub count: NonZeroU32,
    /// The period.
    pub per: Duration,
}

impl Rate {
    /// Parses `60/min`; `off` is `None`.
    ///
    /// # Errors
    /// Text that is neither.
    pub fn parse(text: &str) -> Result<Option<Self>, String> {
        if text.eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        let err = || format!("`{text}`: expected N/s, N/min, N/h or off");
        let (count, unit) = text.split_once('/').ok_or_else(err)?;
        let count: NonZeroU32 = count.trim().parse().map_err(|_| err())?;
        let per = match unit.trim() {
            "s" | "sec" => Duration::from_secs(1),
            "min" | "m" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            _ => return Err(err()),
        };
        Ok(Some(Self { count, per }))
    }

    fn quota(self) -> Option<Quota> {
        Quota::with_period(self.per / self.count.get()).map(|q| q.allow_burst(self.count))
    }
}

/// What limits are configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitSettings {
    /// New links (SHORTEN, API creations) per client address.
    pub create_per_client: Option<Rate>,
    /// New links per API key.
    pub create_per_key: Option<Rate>,
    /// Redirects per client address.
    pub redirect_per_client: Option<Rate>,
    /// Client entries each limiter keeps at most.
    pub max_clients: usize,
    /// Limit loopback clients too (off: local tools and benchmarks are
    /// never limited).
    pub loopback: bool,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            create_per_client: None,
            create_per_key: None,
            redirect_per_client: None,
            max_clients: DEFAULT_MAX_CLIENTS,
            loopback: false,
        }
    }
}

/// What is being done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// A new link.
    Create,
    /// A redirect.
    Redirect,
}

/// A refusal: how long until the client may try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    /// The burst the limit allows (`RateLimit-Limit`).
    pub limit: u32,
    /// When the next request would pass (`Retry-After`, rounded up to
    /// whole seconds by the front).
    pub retry_after: Duration,
}

impl Limited {
    /// `Retry-After` in whole seconds (at least 1).
    pub fn retry_after_secs(&self) -> u64 {
        self.retry_after.as_secs() + u64::from(self.retry_after.subsec_nanos() > 0)
    }

    /// The HTTP headers of a 429.
    pub fn headers(&self) -> [(&'static str, String); 4] {
        let secs = self.retry_after_secs().max(1).to_string();
        [
            ("Retry-After", secs.clone()),
            ("RateLimit-Limit", self.limit.to_string()),
            ("RateLimit-Remaining", "0".to_owned()),
            ("RateLimit-Reset", secs),
        ]
    }

    /// What to tell the client.
    pub fn message(&self) -> String {
        format!(
            "rate limited: retry in {} s",
            self.retry_after_secs().max(1)
        )
    }
}

/// Every limiter of the process.
pub struct Limits {
    clock: LimitClock,
    loopback: bool,
    create_client: Option<Limiter<Client>>,
    create_key: Option<Limiter<u32>>,
    redirect_client: Option<Limiter<Client>>,
    /// Keys with a creation limit of their own (`keys create
    /// --rate-create`), each with its limiter. Bounded by the key table
    /// (an operator's keys, not clients').
    key_rates: RwLock<HashMap<u32, (Rate, Arc<KeyLimiter>)>>,
    sizes: Vec<Box<dyn Fn() -> usize + Send + Sync>>,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("entries", &self.entries())
            .finish_non_exhaustive()
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::new(&LimitSettings::default(), Instant::now())
    }
}

impl Limits {
    /// The limiters of `settings`, with `epoch` as their time zero.
    pub fn new(settings: &LimitSettings, epoch: Instant) -> Self {
        let clock = LimitClock::new(epoch);
        let max = settings.max_clients;
        let mut sizes = Vec::new();
        Self {
            create_client: limiter(settings.create_per_client, max, &clock, &mut sizes),
            redirect_client: limiter(settings.redirect_per_client, max, &clock, &mut sizes),
            create_key: limiter(settings.create_per_key, max, &clock, &mut sizes),
            clock,
            loopback: settings.loopback,
            key_rates: RwLock::default(),
            sizes,
        }
    }

    /// The limiter of key `id` with its own `rate`, made on its first use
    /// (and made again should its rate differ).
    fn key_limiter(&self, id: u32, rate: Rate) -> Option<Arc<KeyLimiter>> {
        // Only ever inserted into whole: a poisoned lock still holds whole
        // entries.
        if let Some((r, limiter)) = self
            .key_rates
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
        {
            if *r == rate {
                return Some(limiter.clone());
            }
        }
        let limiter = Arc::new(RateLimiter::direct_with_clock(
            rate.quota()?,
            self.clock.clone(),
        ));
        self.key_rates
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, (rate, limiter.clone()));
        Some(limiter)
    }

    /// `true` when no limit is configured (the fronts skip the checks).
    pub fn is_off(&self) -> bool {
        self.create_client.is_none() && self.create_key.is_none() && self.redirect_client.is_none()
    }

    /// Counts one `action` by `peer` (and by key `key_id`) at `now`.
    ///
    /// # Errors
    /// [`Limited`] when a limit is reached; nothing is counted then
    /// against the key.
    pub fn check(
        &self,
        action: Action,
        peer: Option<IpAddr>,
        key_id: Option<u32>,
        now: Instant,
    ) -> Result<(), Limited> {
        self.check_with(action, peer, key_id, None, now)
    }

    /// As [`Limits::check`], for a key with a creation limit of its own
    /// (`key_rate`, from `keys create --rate-create`): a creation made with
    /// it counts against that limit alone, neither against
    /// `--rate-create-key` nor against its client address's
    /// `--rate-create` — the operator said how much this key may do, and a
    /// service creating links for many users comes from few addresses.
    ///
    /// # Errors
    /// [`Limited`] when a limit is reached.
    pub fn check_with(
        &self,
        action: Action,
        peer: Option<IpAddr>,
        key_id: Option<u32>,
        key_rate: Option<Rate>,
        now: Instant,
    ) -> Result<(), Limited> {
        let limited = |n: governor::NotUntil<Nanos>, clock: &LimitClock| Limited {
            limit: n.quota().burst_size().get(),
            retry_after: n.wait_time_from(clock.now()),
        };
        if let (Action::Create, Some(id), Some(rate)) = (action, key_id, key_rate) {
            let Some(limiter) = self.key_limiter(id, rate) else {
                return Ok(());
            };
            self.clock.advance_to(now);
            return limiter.check().map_err(|n| limited(n, &self.clock));
        }
        let client_limiter = match action {
            Action::Create => &self.create_client,
            Action::Redirect => &self.redirect_client,
        };
        // The redirect path with limits off ends here.
        if client_limiter.is_none() && (action == Action::Redirect || self.create_key.is_none()) {
            return Ok(());
        }
        let client = peer
            .filter(|ip| self.loopback || !ip.is_loopback())
            .map(Client::of);
        if client.is_none() && (action == Action::Redirect || key_id.is_none()) {
            return Ok(());
        }
        self.clock.advance_to(now);
        if let (Some(limiter), Some(client)) = (client_limiter, client) {
            limiter
                .check_key(&client)
                .map_err(|n| limited(n, &self.clock))?;
        }
        if let (Action::Create, Some(limiter), Some(id)) = (action, &self.create_key, key_id) {
            limiter
                .check_key(&id)
                .map_err(|n| limited(n, &self.clock))?;
        }
        Ok(())
    }

    /// Entries held by the limiters, all together (for tests and
    /// metrics).
    pub fn entries(&self) -> usize {
        let keys = self
            .key_rates
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len();
        self.sizes.iter().map(|size| size()).sum::<usize>() + keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(text: &str) -> Option<Rate> {
        Rate::parse(text).unwrap()
    }

    #[test]
    fn rates_parse() {
        assert_eq!(rate("off"), None);
        let r = rate("60/min").unwrap();
        assert_eq!((r.count.get(), r.per), (60, Duration::from_secs(60)));
        assert!(Rate::parse("60").is_err() && Rate::parse("0/s").is_err());
        assert!(Rate::parse("5/week").is_err());
    }

    #[test]
    fn a_client_gets_its_burst_then_waits() {
        let t0 = Instant::now();
        let limits = Limits::new(
            &LimitSettings {
                create_per_client: rate("3/min"),
                loopback: true,
                ..LimitSettings::default()
            },
            t0,
        );
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..3 {
            limits.check(Action::Create, Some(a), None, t0).unwrap();
        }
        let refused = limits.check(Action::Create, Some(a), None, t0).unwrap_err();
        assert_eq!(refused.limit, 3);
        assert_eq!(refused.retry_after_secs(), 20, "one cell per 20 s");
        assert!(
            limits.check(Action::Create, Some(b), None, t0).is_ok(),
            "per client"
        );
        assert!(
            limits.check(Action::Redirect, Some(a), None, t0).is_ok(),
            "per action"
        );
        let later = t0 + Duration::from_secs(20);
        assert!(limits.check(Action::Create, Some(a), None, later).is_ok());
        assert!(limits.check(Action::Create, Some(a), None, later).is_err());
    }

    #[test]
    fn ipv6_counts_per_64_and_loopback_is_exempt_by_default() {
        let t0 = Instant::now();
        let settings = LimitSettings {
            create_per_client: rate("1/h"),
            ..LimitSettings::default()
        };
        let limits = Limits::new(&settings, t0);
        let one: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let same64: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other64: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        limits.check(Action::Create, Some(one), None, t0).unwrap();
        assert!(limits
            .check(Action::Create, Some(same64), None, t0)
            .is_err());
        assert!(limits
            .check(Action::Create, Some(other64), None, t0)
            .is_ok());
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        for _ in 0..5 {
            limits.check(Action::Create, Some(lo), None, t0).unwrap();
        }
        assert_eq!(
            Client::of("::ffff:192.0.2.7".parse().unwrap()),
            Client::of("192.0.2.7".parse().unwrap())
        );
    }

    #[test]
    fn keys_have_their_own_budget() {
        let t0 = Instant::now();
        let limits = Limits::new(
            &LimitSettings {
                create_per_key: rate("2/min"),
                ..LimitSettings::default()
            },
            t0,
        );
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        limits.check(Action::Create, Some(ip), Some(1), t0).unwrap();
        limits.check(Action::Create, Some(ip), Some(1), t0).unwrap();
        assert!(limits.check(Action::Create, Some(ip), Some(1), t0).is_err());
        assert!(limits.check(Action::Create, Some(ip), Some(2), t0).is_ok());
        assert!(
            limits.check(Action::Create, Some(ip), None, t0).is_ok(),
            "no key: no key limit"
        );
    }

    #[test]
    fn a_key_s_own_rate_replaces_the_defaults_lower_or_higher() {
        let t0 = Instant::now();
        let limits = Limits::new(
            &LimitSettings {
                create_per_client: rate("3/min"),
                create_per_key: rate("3/min"),
                loopback: true,
                ..LimitSettings::default()
            },
            t0,
        );
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let low = rate("1/min");
        limits
            .check_with(Action::Create, Some(ip), Some(1), low, t0)
            .unwrap();
        let refused = limits
            .check_with(Action::Create, Some(ip), Some(1), low, t0)
            .unwrap_err();
        assert_eq!(
            (refused.limit, refused.retry_after_secs()),
            (1, 60),
            "the key's own limit, where the defaults allow 3"
        );
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let high = rate("100/min");
        for i in 0..50 {
            assert!(
                limits
                    .check_with(Action::Create, Some(other), Some(2), high, t0)
                    .is_ok(),
                "request {i}: a higher limit is not held to the defaults"
            );
        }
        for _ in 0..3 {
            limits
                .check(Action::Create, Some(other), Some(3), t0)
                .unwrap_or_else(|_| panic!("the override did not count against the address"));
        }
        assert!(limits
            .check(Action::Create, Some(other), Some(3), t0)
            .is_err());
    }
}

/// An address block (`10.0.0.0/8`, `2001:db8::/32`, or one address), for
/// `--trusted-proxies`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    bits: u8,
}

impl Cidr {
    /// Parses `ADDRESS[/BITS]`.
    ///
    /// # Errors
    /// Not an address, or more bits than it has.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (addr, bits) = match text.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (text, None),
        };
        let net: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("`{text}`: not an IP address or CIDR block"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            None => max,
            Some(b) => b
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|&b| b <= max)
                .ok_or_else(|| format!("`{text}`: prefix length must be 0 to {max}"))?,
        };
        Ok(Self { net, bits })
    }

    /// `true` when `ip` is in the block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let (a, b, width) = match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => {
                (u128::from(u32::from(n)), u128::from(u32::from(i)), 32)
            }
            (IpAddr::V6(n), IpAddr::V6(i)) => (u128::from(n), u128::from(i), 128),
            _ => return false,
        };
        let shift = width - u32::from(self.bits);
        shift >= 128 || (a >> shift) == (b >> shift)
    }
}

/// Which request header a trusted proxy names the client in
/// (`--client-ip-header`). Only that one is read: were both read, a client
/// behind a proxy that sets only `Forwarded` could pick its own address
/// with an `X-Forwarded-For` the proxy passes through (nginx's
/// `real_ip_header` is one header for the same reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientIpHeader {
    /// `X-Forwarded-For: client, proxy1, …` (nginx, HAProxy, most load
    /// balancers). The default.
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client, for=proxy1`.
    Forwarded,
}

impl ClientIpHeader {
    /// Parses the flag's value: `x-forwarded-for` or `forwarded`.
    ///
    /// # Errors
    /// Any other name.
    pub fn parse(name: &str) -> Result<Self, String> {
        match name.to_ascii_lowercase().as_str() {
            "x-forwarded-for" => Ok(Self::XForwardedFor),
            "forwarded" => Ok(Self::Forwarded),
            other => Err(format!(
                "`{other}` is not a client address header: x-forwarded-for or forwarded"
            )),
        }
    }
}

/// The client behind `peer`: `peer` itself, unless it is a trusted proxy;
/// then the rightmost address of the `which` header (`x_forwarded_for` or
/// `forwarded`, the other is ignored) that is not a trusted proxy. A
/// header that does not parse is ignored (the peer is counted): a client
/// cannot pick its own address by sending one, since only what trusted
/// proxies appended is read.
pub fn client_behind(
    peer: Option<IpAddr>,
    x_forwarded_for: Option<&[u8]>,
    forwarded: Option<&[u8]>,
    which: ClientIpHeader,
    trusted: &[Cidr],
) -> Option<IpAddr> {
    let peer_ip = peer?;
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer_ip) {
        return peer;
    }
    let list: Option<Vec<IpAddr>> = match (which, x_forwarded_for, forwarded) {
        (ClientIpHeader::XForwardedFor, Some(xff), _) => std::str::from_utf8(xff)
            .ok()
            .and_then(|t| t.split(',').map(|a| a.trim().parse().ok()).collect()),
        (ClientIpHeader::Forwarded, _, Some(fwd)) => std::str::from_utf8(fwd).ok().and_then(|t| {
            t.split(',')
                .filter_map(|element| {
                    element.split(';').find_map(|pair| {
                        let (k, v) = pair.split_once('=')?;
                        k.trim()
                            .eq_ignore_ascii_case("for")
                            .then(|| v.trim().trim_matches('"'))
                    })
                })
                .map(forwarded_node)
                .collect()
        }),
        _ => None,
    };
    let Some(list) = list.filter(|l| !l.is_empty()) else {
        return peer;
    };
    list.iter()
        .rev()
        .find(|ip| !is_trusted(**ip))
        .or_else(|| list.first())
        .copied()
}

/// An RFC 7239 node: `192.0.2.1`, `192.0.2.1:80`, `[2001:db8::1]:4711`.
fn forwarded_node(node: &str) -> Option<IpAddr> {
    if let Some(rest) = node.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    node.split(':').next()?.parse().ok()
}

#[cfg(test)]
mod proxy_tests {
    use super::*;

    const XFF: ClientIpHeader = ClientIpHeader::XForwardedFor;
    const FWD: ClientIpHeader = ClientIpHeader::Forwarded;

    /// Behind a proxy that sets only `Forwarded`, an `X-Forwarded-For` the
    /// client sent (and the proxy passed on) names nobody; and the reverse.
    #[test]
    fn only_the_configured_header_names_the_client() {
        let trusted = [Cidr::parse("127.0.0.1").unwrap()];
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let spoof = Some(&b"1.1.1.7"[..]);
        let fwd = Some(&b"for=10.0.0.1"[..]);
        assert_eq!(
            client_behind(ip("127.0.0.1"), spoof, fwd, FWD, &trusted),
            ip("10.0.0.1")
        );
        assert_eq!(
            client_behind(ip("127.0.0.1"), spoof, None, FWD, &trusted),
            ip("127.0.0.1"),
            "no Forwarded: the proxy itself is counted"
        );
        assert_eq!(
            client_behind(ip("127.0.0.1"), None, Some(b"for=1.1.1.8"), XFF, &trusted),
            ip("127.0.0.1")
        );
        assert_eq!(ClientIpHeader::parse("Forwarded"), Ok(FWD));
        assert!(ClientIpHeader::parse("x-real-ip").is_err());
    }

    #[test]
    fn only_trusted_proxies_name_the_client() {
        let trusted = [
            Cidr::parse("10.0.0.0/8").unwrap(),
            Cidr::parse("::1").unwrap(),
        ];
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let xff = Some(&b"198.51.100.7, 10.1.1.1"[..]);
        // An untrusted peer is the client, whatever it claims.
        assert_eq!(
            client_behind(ip("192.0.2.1"), xff, None, XFF, &trusted),
            ip("192.0.2.1")
        );
        // A trusted one: the rightmost untrusted hop.
        assert_eq!(
            client_behind(ip("10.0.0.2"), xff, None, XFF, &trusted),
            ip("198.51.100.7")
        );
        assert_eq!(
            client_behind(
                ip("::1"),
                Some(b"spoofed, 203.0.113.5"),
                None,
                XFF,
                &trusted
            ),
            ip("::1"),
            "garbage is ignored"
        );
        let fwd = Some(&b"for=192.0.2.60;proto=http, for=\"[2001:db8:cafe::17]:4711\""[..]);
        assert_eq!(
            client_behind(ip("10.0.0.2"), None, fwd, FWD, &trusted),
            ip("2001:db8:cafe::17")
        );
        assert_eq!(
            client_behind(ip("10.0.0.2"), None, None, XFF, &trusted),
            ip("10.0.0.2")
        );
        assert!(Cidr::parse("10.0.0.0/33").is_err() && Cidr::parse("x").is_err());
        assert!(Cidr::parse("0.0.0.0/0")
            .unwrap()
            .contains("1.2.3.4".parse().unwrap()));
        assert!(!Cidr::parse("10.0.0.0/8")
            .unwrap()
            .contains("::1".parse().unwrap()));
    }
}

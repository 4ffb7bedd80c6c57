//! Short codes: unique, short, and not sequential to the eye.
//!
//! Every stored URL gets a 64-bit *id* from a counter. Ids are handed out in
//! blocks of [`BLOCK_SIZE`]: each shard (thread) claims a block with one
//! atomic add and then counts through it alone, so the hot path takes no
//! lock and two shards can never hand out the same id.
//!
//! The id is not shown as is: a keyed Feistel network permutes the first
//! `62^7` ids among themselves (cycle-walking keeps the result in range), and
//! the permuted value is written in base62, padded to 7 characters. Knowing
//! one code tells nothing about the next one without the key, which lives in
//! the data directory. Because a permutation is a bijection, distinct ids
//! always give distinct codes: no collision check, no retry. The few ids
//! whose code spells a [reserved word](RESERVED_WORDS) are skipped.
//!
//! Ids from `62^7` on (3.5 trillion URLs in) get 8 or more characters and are
//! not permuted; at 10,000 new URLs a second that point is 11 years away.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use siphasher::sip::SipHasher13;

/// Ids a shard claims at a time. Unused ids of a block are skipped after a
/// restart, which costs nothing but a gap.
pub const BLOCK_SIZE: u64 = 1024;

/// Number of characters of a code for the first `62^7` ids.
pub const CODE_LEN: usize = 7;

/// `62^7`: ids below this get 7-character, permuted codes.
pub const PERMUTED_IDS: u64 = 62u64.pow(7);

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The bit set in every side-map alias's statistics key
/// ([`Codec::alias_stats_key`]); no code of up to 10 characters has it.
pub const ALIAS_STATS_TAG: u64 = 1 << 63;

/// Longest code: `u64::MAX` in base62 has 11 digits.
pub const MAX_CODE_LEN: usize = 11;

/// The secret that makes codes unguessable. 16 bytes, kept in the data
/// directory (`code.key`) so codes stay stable across restarts.
#[derive(Clone, PartialEq, Eq)]
pub struct CodeKey(pub [u8; 16]);

impl std::fmt::Debug for CodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CodeKey(..)")
    }
}

/// A keyed permutation of `[0, domain)` built from a balanced Feistel
/// network over `2 * half_bits` bits with cycle-walking.
///
/// Hand-written because it is the product: no maintained crate offers a
/// format-preserving permutation over an arbitrary integer range.
#[derive(Debug, Clone)]
pub struct Permutation {
    hasher_keys: (u64, u64),
    half_bits: u32,
    domain: u64,
}

/// Rounds of the Feistel network. Four give a pseudo-random permutation in
/// theory (Luby–Rackoff); eight leave margin at a cost of ~100 ns per code.
const ROUNDS: u64 = 8;

impl Permutation {
    /// The permutation of `[0, 62^7)` used for codes.
    pub fn for_codes(key: &CodeKey) -> Self {
        // 62^7 < 2^42: two 21-bit halves, and cycle-walking needs on average
        // 2^42 / 62^7 ≈ 1.25 rounds of the network.
        Self::new(key, 21, PERMUTED_IDS)
    }

    /// A permutation of `[0, domain)`; `domain` must be at most
    /// `2^(2 * half_bits)` and `half_bits` at most 31.
    pub fn new(key: &CodeKey, half_bits: u32, domain: u64) -> Self {
        assert!(half_bits <= 31 && domain <= 1u64 << (2 * half_bits));
        let (k0, k1) = key.0.split_at(8);
        let word = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap_or_default());
        Self {
            hasher_keys: (word(k0), word(k1)),
            half_bits,
            domain,
        }
    }

    fn round(&self, round: u64, half: u64) -> u64 {
        use std::hash::Hasher;
        let mut h = SipHasher13::new_with_keys(self.hasher_keys.0, self.hasher_keys.1);
        h.write_u64(round);
        h.write_u64(half);
        h.finish() & self.mask()
    }

    fn mask(&self) -> u64 {
        (1u64 << self.half_bits) - 1
    }

    fn network(&self, x: u64, forward: bool) -> u64 {
        let (mut left, mut right) = (x >> self.half_bits, x & self.mask());
        if forward {
            for r in 0..ROUNDS {
                (left, right) = (right, left ^ self.round(r, right));
            }
        } else {
            for r in (0..ROUNDS).rev() {
                (left, right) = (right ^ self.round(r, left), left);
            }
        }
        (left << self.half_bits) | right
    }

    /// Applies the permutation. `x` must be below the domain.
    pub fn apply(&self, x: u64) -> u64 {
        debug_assert!(x < self.domain);
        let mut y = self.network(x, true);
        // Cycle-walking: the network permutes [0, 2^bits); following the
        // cycle from x until it re-enters [0, domain) gives a permutation of
        // [0, domain). It terminates because x's own cycle contains x.
        while y >= self.domain {
            y = self.network(y, true);
        }
        y
    }

    /// Inverts [`apply`](Self::apply).
    pub fn invert(&self, y: u64) -> u64 {
        let mut x = self.network(y, false);
        while x >= self.domain {
            x = self.network(x, false);
        }
        x
    }
}

/// Writes `value` in base62, left-padded with `0` to at least `min_len`
/// characters, and returns the characters used.
fn base62(mut value: u64, min_len: usize, out: &mut [u8; MAX_CODE_LEN]) -> &str {
    let mut pos = MAX_CODE_LEN;
    while value > 0 || MAX_CODE_LEN - pos < min_len {
        pos -= 1;
        out[pos] = ALPHABET[(value % 62) as usize];
        value /= 62;
    }
    // Only ASCII from ALPHABET was written.
    std::str::from_utf8(&out[pos..]).unwrap_or_default()
}

fn base62_digit(c: u8) -> Option<u64> {
    Some(u64::from(match c {
        b'0'..=b'9' => c - b'0',
        b'A'..=b'Z' => c - b'A' + 10,
        b'a'..=b'z' => c - b'a' + 36,
        _ => return None,
    }))
}

/// Turns ids into codes and codes back into index keys.
///
/// The index is keyed by the code's numeric value (the permuted id), so a
/// RESOLVE needs no inverse permutation: it parses the base62 and looks up.
#[derive(Debug, Clone)]
pub struct Codec {
    perm: Permutation,
}

impl Codec {
    /// A codec with the given secret.
    pub fn new(key: &CodeKey) -> Self {
        Self {
            perm: Permutation::for_codes(key),
        }
    }

    /// The index key of an id: its code's numeric value.
    pub fn key_of(&self, id: u64) -> u64 {
        if id < PERMUTED_IDS {
            self.perm.apply(id)
        } else {
            id
        }
    }

    /// The key a new link with id `id` gets, or `None` when that key is
    /// [reserved](is_reserved) and the id must be skipped. Every store's
    /// generator goes through this, so no store hands out a route's word.
    pub fn new_key(&self, id: u64) -> Option<u64> {
        let key = self.key_of(id);
        (!is_reserved(key)).then_some(key)
    }

    /// The id behind an index key (inverse of [`key_of`](Self::key_of)).
    pub fn id_of(&self, key: u64) -> u64 {
        if key < PERMUTED_IDS {
            self.perm.invert(key)
        } else {
            key
        }
    }

    /// Writes the code of index key `key` into `out`.
    pub fn code<'a>(&self, key: u64, out: &'a mut [u8; MAX_CODE_LEN]) -> &'a str {
        format_code(key, out)
    }

    /// Parses a code into its index key (see [`parse_code`]).
    pub fn parse(&self, code: &[u8]) -> Option<u64> {
        parse_code(code)
    }

    /// The click statistics' key of a side-map alias (one not spelled like
    /// a code) whose link was created at `created_at_ms`: a SipHash of both
    /// under the code secret, with [`ALIAS_STATS_TAG`] set.
    ///
    /// Why this identity: the statistics are keyed by a `u64` like code
    /// keys. The tag keeps it apart from every generated code (42 bits) and
    /// every code of up to 10 characters (`62^10 < 2^63`); only an
    /// 11-character code-spelled alias can take a value with bit 63 set,
    /// and the secret key makes hitting one a 2^-63 chance that nobody can
    /// aim for. The creation time is part of it so that an alias deleted
    /// and claimed again after its quarantine starts from zero instead of
    /// inheriting the old link's clicks; it never changes on update. Every
    /// node of a shared store holds the same secret, so all count alike.
    pub fn alias_stats_key(&self, alias: &str, created_at_ms: u64) -> u64 {
        use std::hash::Hasher;
        let (k0, k1) = self.perm.hasher_keys;
        let mut h = SipHasher13::new_with_keys(k0, k1);
        // A domain of its own: the permutation's rounds hash two u64s.
        h.write(b"shorty alias stats");
        h.write_u64(created_at_ms);
        h.write_usize(alias.len());
        h.write(alias.as_bytes());
        let key = h.finish() | ALIAS_STATS_TAG;
        // `u64::MAX` is the log's marker for "a side-map alias", never a
        // statistics key.
        key.min(u64::MAX - 1)
    }
}

/// Writes the code of key `key` (a code's numeric value) into `out`. Needs
/// no secret: the secret only decides which id gets which key.
pub fn format_code(key: u64, out: &mut [u8; MAX_CODE_LEN]) -> &str {
    base62(key, CODE_LEN, out)
}

/// Parses a code into its key. Only the canonical spelling is accepted
/// (exactly 7 characters below `62^7`, no leading `0` above), so every key
/// has exactly one code.
pub fn parse_code(code: &[u8]) -> Option<u64> {
    if code.len() < CODE_LEN || code.len() > MAX_CODE_LEN {
        return None;
    }
    let mut value: u64 = 0;
    for &c in code {
        value = value.checked_mul(62)?.checked_add(base62_digit(c)?)?;
    }
    let canonical = if value < PERMUTED_IDS {
        code.len() == CODE_LEN
    } else {
        code.first() != Some(&b'0')
    };
    canonical.then_some(value)
}

/// Words the service keeps for its own paths and will not hand out as
/// codes: the HTTP fronts' routes (`/healthz` is routed before any code,
/// so a link under code `healthz` could never be reached), and names
/// clients, crawlers and future API versions ask for at the root. Only the
/// words that are valid codes (7 base62 characters, like `healthz` and
/// `metrics`) could ever collide; the rest are listed so that custom
/// aliases, which will not be limited to 7 characters, check the same list.
pub const RESERVED_WORDS: &[&str] = &[
    "healthz",
    "readyz",
    "metrics",
    "api",
    "favicon.ico",
    "robots.txt",
    "static",
    "s",
];

/// `true` when `key` is the code of a reserved word, so no new link may
/// take it.
pub fn is_reserved(key: u64) -> bool {
    static KEYS: std::sync::LazyLock<Vec<u64>> = std::sync::LazyLock::new(|| {
        RESERVED_WORDS
            .iter()
            .filter_map(|w| parse_code(w.as_bytes()))
            .collect()
    });
    KEYS.contains(&key)
}

/// How many ids ahead of the one handed out [`KeysAhead`] computes keys.
pub const KEYS_AHEAD: usize = 4;

/// The keys of the ids a shard hands out next, computed [`KEYS_AHEAD`]
/// ids early so their key-directory slots can be prefetched while the
/// requests between are served (`ops::create::new_code`).
///
/// A cache keyed by id: a key is a pure function of its id, so an entry
/// is either the right key or not used. It computes each id's key once,
/// as the generator did before, only earlier.
#[derive(Debug, Default)]
pub struct KeysAhead {
    ring: [Option<(u64, Option<u64>)>; KEYS_AHEAD],
}

impl KeysAhead {
    /// The key [`Codec::new_key`] gives `id`, computed ahead if it was.
    pub fn key(&self, codec: &Codec, id: u64) -> Option<u64> {
        match self.ring[id as usize % KEYS_AHEAD] {
            Some((ahead, key)) if ahead == id => key,
            _ => codec.new_key(id),
        }
    }

    /// Computes `id`'s key now, for a later [`key`](Self::key), and
    /// returns it.
    pub fn compute(&mut self, codec: &Codec, id: u64) -> Option<u64> {
        let key = codec.new_key(id);
        self.ring[id as usize % KEYS_AHEAD] = Some((id, key));
        key
    }
}

/// The id counter shared by all shards.
#[derive(Debug)]
pub struct IdSpace {
    next_block: AtomicU64,
    /// Each allocator's next id ([`NO_CURSOR`] while it holds no block),
    /// for [`floor`](Self::floor). One store per id handed out, by its
    /// own shard: no contention.
    cursors: std::sync::Mutex<Vec<Arc<AtomicU64>>>,
}

/// A cursor of an allocator that holds no block: its next block comes
/// from the counter, past [`IdSpace::next_free`].
const NO_CURSOR: u64 = u64::MAX;

impl IdSpace {
    /// A space whose first block starts at or after `first_free`, rounded up
    /// to a block boundary (recovery passes one past the largest stored id).
    pub fn new(first_free: u64) -> Self {
        let block = first_free.div_ceil(BLOCK_SIZE);
        Self {
            next_block: AtomicU64::new(block),
            cursors: std::sync::Mutex::default(),
        }
    }

    /// One past the largest id handed out so far (in whole blocks: a
    /// block claimed is counted whole), for the high-water mark.
    pub fn next_free(&self) -> u64 {
        self.next_block
            .load(Ordering::SeqCst)
            .saturating_mul(BLOCK_SIZE)
    }

    /// An id below which no allocator will ever hand one out again: the
    /// lowest id any allocator has still to count through, or
    /// [`next_free`](Self::next_free) if none holds a block. A code whose
    /// id is below it is never generated again, whatever the key directory
    /// holds: what lets a merge forget a deleted code's tombstone
    /// (`log::merge`).
    pub fn floor(&self) -> u64 {
        let cursors = self
            .cursors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // The cursors first: an allocator publishes a lower bound of its
        // next block before it claims it, so a claim between the two
        // reads is still counted.
        let lowest = cursors
            .iter()
            .map(|c| c.load(Ordering::SeqCst))
            .min()
            .unwrap_or(NO_CURSOR);
        lowest.min(self.next_free())
    }

    fn cursor(&self) -> Arc<AtomicU64> {
        let cursor = Arc::new(AtomicU64::new(NO_CURSOR));
        self.cursors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(cursor.clone());
        cursor
    }

    fn claim(&self) -> (u64, u64) {
        let block = self.next_block.fetch_add(1, Ordering::SeqCst);
        let start = block.saturating_mul(BLOCK_SIZE);
        (start, start.saturating_add(BLOCK_SIZE))
    }
}

impl Drop for IdAllocator {
    fn drop(&mut self) {
        // It hands nothing out any more: it no longer holds the floor down.
        self.cursor.store(NO_CURSOR, Ordering::SeqCst);
    }
}

/// One shard's id source: counts through its current block alone.
#[derive(Debug)]
pub struct IdAllocator {
    space: Arc<IdSpace>,
    next: u64,
    end: u64,
    /// `next`, published for [`IdSpace::floor`].
    cursor: Arc<AtomicU64>,
}

impl IdAllocator {
    /// An allocator that claims blocks from `space` as it needs them.
    pub fn new(space: Arc<IdSpace>) -> Self {
        let cursor = space.cursor();
        Self {
            space,
            next: 0,
            end: 0,
            cursor,
        }
    }

    /// Its space's [`IdSpace::floor`].
    pub fn floor(&self) -> u64 {
        self.space.floor()
    }

    /// The id [`next_id`](Self::next_id) will return `ahead` calls from
    /// now, if it lies in the block this allocator holds (beyond it, the
    /// next block is not known yet). Hands nothing out.
    pub fn peek(&self, ahead: u64) -> Option<u64> {
        let id = self.next.checked_add(ahead)?;
        (id < self.end).then_some(id)
    }

    /// The next unused id.
    pub fn next_id(&mut self) -> u64 {
        if self.next == self.end {
            // A lower bound of the block about to be claimed, published
            // before the claim (see `IdSpace::floor`).
            self.cursor.store(self.space.next_free(), Ordering::SeqCst);
            (self.next, self.end) = self.space.claim();
        }
        let id = self.next;
        self.next += 1;
        // Relaxed would do for the counter alone; the floor needs this
        // store seen before a later claim's (SeqCst, one store an id).
        self.cursor.store(self.next, Ordering::SeqCst);
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    fn key(seed: u8) -> CodeKey {
        CodeKey([seed; 16])
    }

    #[test]
    fn small_domain_permutation_is_a_bijection() {
        // Exhaustive on a domain that is not a power of two, so cycle-walking
        // is exercised: 5-bit halves (1024 values), domain 1000.
        for seed in 0..8 {
            let p = Permutation::new(&key(seed), 5, 1000);
            let images: HashSet<u64> = (0..1000).map(|x| p.apply(x)).collect();
            assert_eq!(images.len(), 1000);
            assert!(images.iter().all(|&y| y < 1000));
            assert!((0..1000).all(|x| p.invert(p.apply(x)) == x));
        }
    }

    #[test]
    fn alias_stats_keys_are_apart_from_codes_and_from_a_reclaimed_alias() {
        let codec = Codec::new(&key(3));
        let t = 1_700_000_000_000;
        let k = codec.alias_stats_key("spring-sale", t);
        // Stable, tagged, never a 10-character code's value nor u64::MAX.
        assert_eq!(k, codec.alias_stats_key("spring-sale", t));
        assert!(k & ALIAS_STATS_TAG != 0 && k != u64::MAX);
        assert!(62u64.pow(10) < ALIAS_STATS_TAG);
        // The same alias created again (after a delete and its quarantine)
        // counts apart, and so does another alias or another secret.
        assert_ne!(k, codec.alias_stats_key("spring-sale", t + 1));
        assert_ne!(k, codec.alias_stats_key("spring-salf", t));
        assert_ne!(k, Codec::new(&key(4)).alias_stats_key("spring-sale", t));
        let keys: HashSet<u64> = (0..10_000)
            .map(|i| codec.alias_stats_key(&format!("promo-{i}"), t))
            .collect();
        assert_eq!(keys.len(), 10_000);
    }

    #[test]
    fn the_ids_of_reserved_words_get_no_key() {
        let codec = Codec::new(&key(7));
        let mut seen = 0;
        for word in RESERVED_WORDS {
            let Some(k) = parse_code(word.as_bytes()) else {
                continue;
            };
            seen += 1;
            let id = codec.id_of(k);
            assert_eq!(codec.key_of(id), k);
            assert_eq!(codec.new_key(id), None, "{word}");
            assert!(codec.new_key(id + 1).is_some());
        }
        assert_eq!(seen, 2, "healthz and metrics are codes");
    }

    #[test]
    fn codes_are_not_sequential() {
        let codec = Codec::new(&key(7));
        let keys: Vec<u64> = (0..100).map(|id| codec.key_of(id)).collect();
        let adjacent = keys
            .windows(2)
            .filter(|w| w[0].abs_diff(w[1]) < 1000)
            .count();
        assert!(
            adjacent < 3,
            "consecutive ids should land far apart: {keys:?}"
        );
        assert_ne!(
            Codec::new(&key(8)).key_of(1),
            codec.key_of(1),
            "key matters"
        );
    }

    #[test]
    fn codes_are_seven_base62_characters() {
        let codec = Codec::new(&key(1));
        let mut buf = [0; MAX_CODE_LEN];
        for id in [0, 1, 2, 1000, PERMUTED_IDS - 1] {
            let code = codec.code(codec.key_of(id), &mut buf).to_owned();
            assert_eq!(code.len(), CODE_LEN, "{code}");
            assert!(code.bytes().all(|c| c.is_ascii_alphanumeric()));
            assert_eq!(codec.parse(code.as_bytes()), Some(codec.key_of(id)));
        }
        let big = codec.code(codec.key_of(PERMUTED_IDS), &mut buf).to_owned();
        assert_eq!(big, "10000000");
        assert_eq!(codec.parse(b"10000000"), Some(PERMUTED_IDS));
        assert_eq!(codec.parse(b"00000001"), None, "non-canonical");
        assert_eq!(codec.parse(b"000001"), None, "too short");
        assert_eq!(codec.parse(b"abc-def"), None);
        assert_eq!(codec.parse(b"zzzzzzzzzzz"), None, "overflows u64");
    }

    #[test]
    fn shards_never_share_an_id() {
        let space = Arc::new(IdSpace::new(0));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let space = space.clone();
                std::thread::spawn(move || {
                    let mut alloc = IdAllocator::new(space);
                    (0..5000).map(|_| alloc.next_id()).collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all = HashSet::new();
        for h in handles {
            for id in h.join().unwrap() {
                assert!(all.insert(id), "id {id} handed out twice");
            }
        }
        assert_eq!(all.len(), 20_000);
    }

    #[test]
    fn restart_never_reuses_ids() {
        let mut before = IdAllocator::new(Arc::new(IdSpace::new(0)));
        let used: Vec<u64> = (0..1500).map(|_| before.next_id()).collect();
        let max = *used.iter().max().unwrap();
        let mut after = IdAllocator::new(Arc::new(IdSpace::new(max + 1)));
        for _ in 0..5000 {
            assert!(after.next_id() > max);
        }
    }

    /// The floor is never above an id still to be handed out, while four
    /// shards claim blocks concurrently (what makes forgetting a deleted
    /// code's tombstone safe), and it rises as they count.
    #[test]
    fn no_id_below_the_floor_is_ever_handed_out() {
        let space = Arc::new(IdSpace::new(5000));
        assert_eq!(space.floor(), space.next_free(), "no allocator yet");
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let space = space.clone();
                std::thread::spawn(move || {
                    let mut alloc = IdAllocator::new(space.clone());
                    let mut low = u64::MAX;
                    for _ in 0..3000 {
                        // Read before the id is taken: it must not exceed it.
                        let floor = space.floor();
                        let id = alloc.next_id();
                        assert!(floor <= id, "floor {floor} above id {id}");
                        low = low.min(id);
                    }
                    (alloc, low)
                })
            })
            .collect();
        let watcher = {
            let (space, stop) = (space.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut last = 0;
                while !stop.load(Ordering::Relaxed) {
                    let floor = space.floor();
                    assert!(floor >= last, "the floor never falls: {last} then {floor}");
                    last = floor;
                }
            })
        };
        let allocs: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        stop.store(true, Ordering::Relaxed);
        watcher.join().unwrap();
        let floor = space.floor();
        assert!(floor > 5000, "{floor}");
        let mut allocs: Vec<_> = allocs
            .into_iter()
            .map(|(mut alloc, low)| {
                assert!(low >= 5120, "first block past 5000");
                assert!(alloc.next_id() >= floor);
                alloc
            })
            .collect();
        // A dropped allocator no longer holds the floor down.
        let held = space.floor();
        allocs.truncate(1);
        assert!(space.floor() >= held);
        drop(allocs);
        assert_eq!(space.floor(), space.next_free());
    }

    #[test]
    fn peek_sees_the_ids_next_id_hands_out_within_the_block() {
        let space = Arc::new(IdSpace::new(0));
        let mut ids = IdAllocator::new(space.clone());
        assert_eq!(ids.peek(0), None, "no block held yet");
        let first = ids.next_id();
        let peeked: Vec<_> = (0..3).map(|ahead| ids.peek(ahead)).collect();
        let floor = space.floor();
        let handed: Vec<_> = (0..3).map(|_| Some(ids.next_id())).collect();
        assert_eq!(peeked, handed);
        assert_eq!(floor, first + 1, "a peek hands nothing out");
        // At the end of the block: nothing to see beyond it.
        while ids.peek(1).is_some() {
            ids.next_id();
        }
        let last = ids.peek(0).expect("the block's last id");
        assert_eq!(last % BLOCK_SIZE, BLOCK_SIZE - 1);
        assert_eq!(ids.next_id(), last);
        assert_eq!(ids.peek(0), None);
    }

    proptest! {
        #[test]
        fn keys_ahead_always_gives_the_codec_s_key(
            seed: u8,
            steps in proptest::collection::vec((any::<bool>(), 0u64..64), 1..200),
        ) {
            let codec = Codec::new(&key(seed));
            let mut ahead = KeysAhead::default();
            for (compute, id) in steps {
                if compute {
                    prop_assert_eq!(ahead.compute(&codec, id), codec.new_key(id));
                }
                prop_assert_eq!(ahead.key(&codec, id), codec.new_key(id));
            }
        }
        #[test]
        fn permutation_round_trips_on_the_code_domain(id in 0..PERMUTED_IDS, seed: u8) {
            let codec = Codec::new(&key(seed));
            let k = codec.key_of(id);
            prop_assert!(k < PERMUTED_IDS);
            prop_assert_eq!(codec.id_of(k), id);
            let mut buf = [0; MAX_CODE_LEN];
            let code = codec.code(k, &mut buf).to_owned();
            prop_assert_eq!(codec.parse(code.as_bytes()), Some(k));
        }

        #[test]
        fn distinct_ids_give_distinct_codes(a in 0..PERMUTED_IDS, b in 0..PERMUTED_IDS) {
            let codec = Codec::new(&key(3));
            prop_assert_eq!(a == b, codec.key_of(a) == codec.key_of(b));
        }
    }
}

//! The Redis Cluster store (`--store redis://HOST:PORT[,HOST:PORT...]`):
//! stateless Shorty nodes over a cluster operators already run.
//!
//! **Where it runs.** One thread per process with its own tokio runtime
//! owns the `redis` crate's cluster client (MOVED/ASK, topology refresh,
//! reconnects after a failover). The cores hand it requests over channels
//! ([`crate::remote`]) and never block on it; answers come back over each
//! core's own channel. Both backends use it unchanged: glommio has no tokio
//! I/O to lend, and keeping one design keeps the backends identical. The
//! cost is a cross-thread hand-off per request that misses the cache (see
//! ARCHITECTURE.md for the measured figure).
//!
//! **Layout in the cluster.** `shorty:l:<code or alias>` holds a link: a
//! plain link's bare URL (operators can read it with `redis-cli`), or a
//! link with options / a deleted link in the tagged shapes of
//! [`crate::redis_link`]. `shorty:ids` is
//! the id counter: each process claims blocks of [`ID_BLOCK`] with one
//! `INCRBY`, so codes stay unique and non-sequential across every node.
//! `shorty:key` holds the permutation key, created once with `SET NX`, so
//! every node makes the same codes.
//!
//! **Semantics.** A SHORTEN is `SET shorty:l:<code> <url> NX` pipelined with
//! `WAIT <--store-replicas> <ms>` on the key's primary: acknowledged only
//! when the primary stored it and that many replicas confirmed. Both
//! replies are checked (`check_put`): an error reply (OOM, MISCONF,
//! NOREPLICAS, READONLY) comes back inside `Ok`, and the `WAIT` after a
//! failed `SET` counts the connection's earlier writes. A code
//! already taken (an imported link) moves on to the next id. A RESOLVE
//! (after the core's cache) is a `GET` (with `--store-read-replicas`, a
//! replica's miss is asked again of the primary); a miss is not cached, so
//! a link made on another node resolves at once. Writes and reads use separate
//! connections, because `WAIT` blocks its connection until replicas
//! answer. Every request is bounded by `--store-timeout`; failures answer
//! 503, never 404. The lifecycle's writes (an alias's `SET NX`, the update
//! and delete scripts) are `WAIT`ed and checked the same way
//! ([`crate::redis_link`]).
//!
//! The cores cache what they read for at most `--store-cache-ttl`, which
//! bounds how long another node's update or delete takes to be seen.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use redis::aio::ConnectionLike;
use redis::{Cmd, Pipeline, RedisResult, Value};
use shorty_protocol::ErrorCode;
use shorty_service::codes::{format_code, CodeKey, Codec, MAX_CODE_LEN};
use shorty_service::health::{Health, StorageHealth};
use shorty_service::link::{LinkMeta, CONFLICT};
use shorty_service::output::OpId;
use shorty_service::shard::{OpResult, RemoteReply, RemoteRequest};
use tokio::sync::mpsc;

use crate::config::RedisSpec;
use crate::redis_link::{self, Change, Stored};
use crate::remote::{Envelope, RemotePort};

/// Ids one process claims at a time from the cluster-wide counter.
pub const ID_BLOCK: u64 = 1024;
/// The counter key.
pub const IDS_KEY: &str = "shorty:ids";
/// The permutation key's key.
pub const CODE_KEY: &str = "shorty:key";
/// Prefix of link keys.
pub const LINK_PREFIX: &str = "shorty:l:";
/// Prefix of an API key's index of the links it made (a sorted set).
pub const OWNER_PREFIX: &str = "shorty:o:";

/// An owner index member: the creation time as 16 hex digits, `:`, the
/// code (fixed width, so the members sort by time, then code).
pub fn owner_member(created_at_ms: u64, code: &str) -> String {
    format!("{created_at_ms:016x}:{code}")
}

/// The key the idle probe writes while the store refuses writes.
const PROBE_KEY: &str = "shorty:probe";
/// Write connections to the store. `WAIT` blocks the connection it is sent
/// on until replicas confirm, so writes on one connection would wait for
/// each other's confirmations; this many can wait at once (Redis still
/// group-commits its fsync across them).
pub const WRITE_CONNECTIONS: usize = 16;

/// How often the store thread checks the store when idle (health).
const PING_EVERY: Duration = Duration::from_secs(1);

/// A connection to a cluster, or to a single Redis.
#[derive(Clone)]
pub enum Conn {
    /// Redis Cluster.
    Cluster(redis::cluster_async::ClusterConnection),
    /// One Redis (no cluster support). A connection manager, not a bare
    /// multiplexed connection: a multiplexed connection whose Redis
    /// restarted answers "broken pipe" for ever, so the server stayed
    /// unready until it was itself restarted (review 4, F1); the manager
    /// reconnects in the background after an I/O error (the request that
    /// met the error still fails: nothing is re-sent behind our back).
    Single(redis::aio::ConnectionManager),
}

/// What a `SET NX` of an imported link found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetOutcome {
    /// Stored.
    Stored,
    /// The code already holds this URL.
    Same,
    /// The code holds another URL: refused.
    Other,
}

impl Conn {
    /// Stores `value` under `name` unless the name exists, then says
    /// whether it holds the same value (for `import`).
    ///
    /// # Errors
    /// The store's error.
    pub async fn set_nx_or_compare(&mut self, name: &str, value: &[u8]) -> RedisResult<SetOutcome> {
        let set = self
            .query(redis::cmd("SET").arg(name).arg(value).arg("NX"))
            .await?;
        if !matches!(set, Value::Nil) {
            return Ok(SetOutcome::Stored);
        }
        let current = self.query(redis::cmd("GET").arg(name)).await?;
        Ok(if bytes_of(&current).as_deref() == Some(value) {
            SetOutcome::Same
        } else {
            SetOutcome::Other
        })
    }

    /// One command. An error reply (OOM, MISCONF, NOREPLICAS, READONLY,
    /// ...) is an `Err`: redis-rs hands it back as `Ok(Value::ServerError)`.
    pub async fn query(&mut self, cmd: &Cmd) -> RedisResult<Value> {
        let value = match self {
            Conn::Cluster(c) => c.req_packed_command(cmd).await,
            Conn::Single(c) => c.req_packed_command(cmd).await,
        };
        value.and_then(Value::extract_error)
    }

    /// Pipelined commands. Each reply may be a `Value::ServerError`: the
    /// caller checks every one (a failed command does not stop the rest).
    pub async fn pipeline(&mut self, pipe: &Pipeline, count: usize) -> RedisResult<Vec<Value>> {
        match self {
            Conn::Cluster(c) => c.req_packed_commands(pipe, 0, count).await,
            Conn::Single(c) => c.req_packed_commands(pipe, 0, count).await,
        }
    }
}

/// The first seed that answered, and what it is.
pub struct Probe {
    /// Its URL (one of the spec's nodes).
    pub node: String,
    /// A connection to it.
    conn: redis::aio::MultiplexedConnection,
    /// It runs in cluster mode.
    pub cluster: bool,
}

/// Finds a seed that answers, trying them in order: any one will do, since
/// a cluster's topology comes from the cluster itself (a seed may be down,
/// e.g. a primary that just failed over).
///
/// # Errors
/// No seed answers (every seed's error, in order).
pub async fn probe(spec: &RedisSpec, timeout: Duration) -> Result<Probe, String> {
    let config = single_config(timeout);
    let mut errors = Vec::new();
    for node in &spec.nodes {
        let attempt = async {
            let client = redis::Client::open(node.as_str())?;
            let mut conn = client
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            let cluster = cluster_enabled(&mut conn).await?;
            Ok::<_, redis::RedisError>(Probe {
                node: node.clone(),
                conn,
                cluster,
            })
        };
        match attempt.await {
            Ok(probe) => return Ok(probe),
            Err(err) => errors.push(format!("{}: {err}", redact(node))),
        }
    }
    Err(errors.join("; "))
}

/// A single node's connection settings: every connect and reply bounded
/// by `timeout`.
fn single_config(timeout: Duration) -> redis::AsyncConnectionConfig {
    redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
}

/// `node` without its password, for messages.
fn redact(node: &str) -> String {
    match node
        .split_once("//")
        .and_then(|(_, rest)| rest.rsplit_once('@'))
    {
        Some((_, host)) => format!("redis://{host}"),
        None => node.to_owned(),
    }
}

/// [`connect_with`], tried again 100 ms after each failure until
/// `deadline`: what a starting node does, so that a store slow for a
/// moment does not make it refuse to start.
///
/// # Errors
/// The last failure, when none succeeded by `deadline`.
pub async fn connect_patiently(
    probe: &Probe,
    spec: &RedisSpec,
    timeout: Duration,
    replicas_read: bool,
    deadline: tokio::time::Instant,
) -> Result<Conn, String> {
    loop {
        match connect_with(probe, spec, timeout, replicas_read).await {
            Ok(conn) => return Ok(conn),
            Err(e) if tokio::time::Instant::now() + Duration::from_millis(100) >= deadline => {
                return Err(e.to_string())
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Connects to what `probe` found (a cluster, through every seed, or the
/// single Redis it reached), with every request bounded by `timeout`.
///
/// # Errors
/// The store cannot be reached.
pub async fn connect_with(
    probe: &Probe,
    spec: &RedisSpec,
    timeout: Duration,
    replicas_read: bool,
) -> RedisResult<Conn> {
    if probe.cluster {
        let mut builder = redis::cluster::ClusterClientBuilder::new(spec.nodes.clone())
            .connection_timeout(timeout)
            .response_timeout(timeout)
            .retries(3)
            .min_retry_wait(50)
            .max_retry_wait(500);
        if replicas_read {
            builder =
                builder.read_routing_strategy(redis::cluster_read_routing::RandomReplicaStrategy);
        }
        Ok(Conn::Cluster(
            builder.build()?.get_async_connection().await?,
        ))
    } else {
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            // Reconnect attempts after an error, 50 ms to 1 s apart; a
            // Redis down for longer is tried again at the next request.
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1))
            .set_number_of_retries(5);
        let client = redis::Client::open(probe.node.as_str())?;
        Ok(Conn::Single(
            client.get_connection_manager_with_config(config).await?,
        ))
    }
}

/// Connects to `spec` (a cluster if the first seed that answers says so,
/// else a single Redis), with every request bounded by `timeout`.
///
/// # Errors
/// The store cannot be reached.
pub async fn connect(
    spec: &RedisSpec,
    timeout: Duration,
    replicas_read: bool,
) -> Result<Conn, String> {
    let probe = probe(spec, timeout).await?;
    connect_with(&probe, spec, timeout, replicas_read)
        .await
        .map_err(|e| e.to_string())
}

/// Slots in a Redis Cluster.
pub const SLOTS: usize = 16_384;

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NodeLine {
    id: String,
    /// `host:port`.
    addr: String,
    primary: bool,
    /// Flagged `fail` or `fail?`.
    failing: bool,
    /// A replica's primary's id.
    primary_id: Option<String>,
    /// Slot ranges served (inclusive).
    slots: Vec<(usize, usize)>,
}

fn parse_cluster_nodes(text: &str) -> Vec<NodeLine> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let flags = fields.get(2)?;
            let addr = fields.get(1)?.split(['@', ',']).next()?.to_owned();
            let slots = fields
                .iter()
                .skip(8)
                // `[slot->-id]`: a slot being migrated; its owner lists it
                // plainly too.
                .filter(|f| !f.starts_with('['))
                .filter_map(|range| match range.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => range.parse().ok().map(|s| (s, s)),
                })
                .collect();
            Some(NodeLine {
                id: (*fields.first()?).to_owned(),
                addr,
                primary: flags.split(',').any(|f| f == "master"),
                failing: flags.split(',').any(|f| f == "fail" || f == "fail?"),
                primary_id: fields
                    .get(3)
                    .filter(|m| **m != "-")
                    .map(|m| (*m).to_owned()),
                slots,
            })
        })
        .collect()
}

/// The primaries that serve slots, as long as together they serve every
/// slot and none is failing: a shard without a working primary is an
/// error, never skipped.
fn serving_primaries(nodes: &[NodeLine]) -> Result<Vec<&NodeLine>, String> {
    let serving: Vec<&NodeLine> = nodes
        .iter()
        .filter(|n| n.primary && !n.slots.is_empty())
        .collect();
    if let Some(failing) = serving.iter().find(|n| n.failing) {
        return Err(format!(
            "the primary {} is failing (its slots {} have no working primary)",
            failing.addr,
            failing
                .slots
                .iter()
                .map(|(a, b)| if a == b {
                    a.to_string()
                } else {
                    format!("{a}-{b}")
                })
                .collect::<Vec<_>>()
                .join(",")
        ));
    }
    let mut covered = vec![false; SLOTS];
    for (a, b) in serving.iter().flat_map(|n| &n.slots) {
        for slot in covered.iter_mut().take(b + 1).skip(*a) {
            *slot = true;
        }
    }
    if let Some(missing) = covered.iter().position(|c| !c) {
        let count = covered.iter().filter(|c| !**c).count();
        return Err(format!(
            "{count} of {SLOTS} slots (e.g. slot {missing}) are served by no primary"
        ));
    }
    Ok(serving)
}

/// Replicas, not failing, of each serving primary.
fn replica_counts(nodes: &[NodeLine]) -> Vec<(String, usize)> {
    nodes
        .iter()
        .filter(|n| n.primary && !n.slots.is_empty() && !n.failing)
        .map(|p| {
            let replicas = nodes
                .iter()
                .filter(|r| !r.failing && r.primary_id.as_deref() == Some(p.id.as_str()))
                .count();
            (p.addr.clone(), replicas)
        })
        .collect()
}

async fn cluster_nodes(conn: &mut redis::aio::MultiplexedConnection) -> RedisResult<String> {
    redis::cmd("CLUSTER").arg("NODES").query_async(conn).await
}

/// Checks, at start, that the store can confirm writes on `wanted`
/// replicas (`--store-replicas`): a single Redis must be a primary with
/// that many replicas online; in a cluster at least one primary must have
/// that many (a shard with fewer, e.g. after a failover, is warned about:
/// its codes are skipped until it has them).
///
/// # Errors
/// A line naming `--store-replicas` (or the replica the spec points at).
pub async fn check_replicas(probe: &mut Probe, wanted: u32) -> Result<(), String> {
    let wanted = wanted as usize;
    let node = redact(&probe.node);
    if probe.cluster {
        let text = cluster_nodes(&mut probe.conn)
            .await
            .map_err(|e| format!("{node}: CLUSTER NODES: {e}"))?;
        let counts = replica_counts(&parse_cluster_nodes(&text));
        let most = counts.iter().map(|(_, n)| *n).max().unwrap_or(0);
        if most < wanted {
            return Err(format!(
                "no primary of the cluster at {node} has {wanted} replicas (most: {most}), so no \
                 SHORTEN could be confirmed: add replicas, or lower --store-replicas"
            ));
        }
        for (addr, n) in counts.iter().filter(|(_, n)| *n < wanted) {
            tracing::warn!(
                primary = %addr,
                replicas = n,
                store_replicas = wanted,
                "a primary has fewer replicas than --store-replicas: new links avoid its slots"
            );
        }
        return Ok(());
    }
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query_async(&mut probe.conn)
        .await
        .map_err(|e| format!("{node}: INFO replication: {e}"))?;
    if !info.lines().any(|l| l.trim() == "role:master") {
        return Err(format!(
            "the store at {node} is a replica (read-only): point --store at its primary"
        ));
    }
    let online = info
        .lines()
        .filter(|l| l.starts_with("slave") && l.contains("state=online"))
        .count();
    if online < wanted {
        return Err(format!(
            "the store at {node} has {online} replica(s) online but --store-replicas is {wanted}, \
             so no SHORTEN could be confirmed: add a replica, or start with --store-replicas \
             {online} (a Redis without replicas can lose acknowledged links with its disk)"
        ));
    }
    Ok(())
}

/// The primaries to read every link from (for `export`): the one node, or
/// every serving primary of the cluster, as the cluster (any seed that
/// answers) describes itself.
///
/// # Errors
/// No seed answers, or some slot has no working primary (an export that
/// skipped it would silently miss links).
pub async fn primaries(spec: &RedisSpec) -> Result<Vec<String>, String> {
    let mut probe = probe(spec, Duration::from_secs(5)).await?;
    if !probe.cluster {
        return Ok(vec![probe.node]);
    }
    let text = cluster_nodes(&mut probe.conn)
        .await
        .map_err(|e| format!("{}: CLUSTER NODES: {e}", redact(&probe.node)))?;
    let nodes = parse_cluster_nodes(&text);
    let serving = serving_primaries(&nodes)?;
    let prefix = probe
        .node
        .split_once("//")
        .map(|(scheme, rest)| {
            let creds = rest
                .rsplit_once('@')
                .map(|(c, _)| format!("{c}@"))
                .unwrap_or_default();
            format!("{scheme}//{creds}")
        })
        .unwrap_or_else(|| "redis://".into());
    Ok(serving
        .into_iter()
        .map(|n| format!("{prefix}{}", n.addr))
        .collect())
}

/// `true` when the node `conn` reaches runs in cluster mode.
async fn cluster_enabled(conn: &mut redis::aio::MultiplexedConnection) -> RedisResult<bool> {
    let info: String = redis::cmd("INFO").arg("cluster").query_async(conn).await?;
    Ok(info.contains("cluster_enabled:1"))
}

fn bytes_of(value: &Value) -> Option<Vec<u8>> {
    match value {
        Value::BulkString(b) => Some(b.clone()),
        Value::SimpleString(s) => Some(s.clone().into_bytes()),
        _ => None,
    }
}

/// Reads the permutation key from the store, creating it (randomly) on the
/// very first start of any node.
///
/// # Errors
/// The store cannot be reached, or holds a damaged key.
pub async fn load_or_create_key(conn: &mut Conn) -> Result<CodeKey, String> {
    let mut key = [0u8; 16];
    getrandom::fill(&mut key).map_err(|e| e.to_string())?;
    // A refused SET (a full or read-only store) matters only if no key
    // exists yet: every later start merely reads it.
    let (created, stored) = put_key_unless_there(conn, &key)
        .await
        .map_err(|e| e.to_string())?;
    let stored = match (stored, created) {
        (Some(stored), _) => stored,
        (None, Err(err)) => return Err(format!("cannot create {CODE_KEY}: {err}")),
        (None, Ok(_)) => return Err("the store holds no code key".into()),
    };
    let key: [u8; 16] = stored
        .try_into()
        .map_err(|_| format!("{CODE_KEY} in the store is damaged (not 16 bytes)"))?;
    Ok(CodeKey(key))
}

/// `SET shorty:key KEY NX`, then what `shorty:key` holds (the key every
/// node makes codes with, whoever put it there first), with the `SET`'s
/// own answer beside it: at a node's start, and when a running node finds
/// the key gone (`Store::check_code_key`).
///
/// # Errors
/// The `GET` failed.
async fn put_key_unless_there(
    conn: &mut Conn,
    key: &[u8; 16],
) -> RedisResult<(RedisResult<Value>, Option<Vec<u8>>)> {
    let created = conn
        .query(redis::cmd("SET").arg(CODE_KEY).arg(&key[..]).arg("NX"))
        .await;
    let stored = conn.query(redis::cmd("GET").arg(CODE_KEY)).await?;
    Ok((created, bytes_of(&stored)))
}

/// The store's settings.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// Where.
    pub spec: RedisSpec,
    /// Replicas that must confirm a write (`WAIT`).
    pub replicas: u32,
    /// Bound on every request.
    pub timeout: Duration,
    /// Read from replicas too.
    pub read_from_replicas: bool,
    /// The stats writer's marker, with statistics on: a statistics read
    /// says which of this process's hand-overs the counts hold
    /// ([`crate::stats_redis`]).
    pub stats_marker: Option<crate::stats_redis::Marker>,
}

struct Ids {
    next: u64,
    end: u64,
}

/// Why [`Store::next_id`] gave no id.
enum IdError {
    /// The store's answer (or none).
    Store(redis::RedisError),
    /// The counter or the code key is not what this node left (below).
    Lost(String),
}

struct Store {
    settings: StoreSettings,
    codec: Codec,
    writes: Vec<Conn>,
    next_write: std::cell::Cell<usize>,
    reads: Conn,
    /// With `--store-read-replicas`: reads that go to primaries, for a
    /// code a replica does not have (yet).
    primary_reads: Option<Conn>,
    ids: tokio::sync::Mutex<Ids>,
    health: Arc<Health>,
    cores: usize,
    /// The store answered the last SHORTEN with refusals only (OOM,
    /// MISCONF, NOREPLICAS, READONLY): it is reachable but takes no links,
    /// which `/healthz` and `/readyz` must say, or a load balancer keeps
    /// sending SHORTENs that all fail. Cleared by a confirmed SHORTEN or by
    /// the idle probe's write.
    refusing: std::cell::Cell<bool>,
    /// The permutation key this node makes codes with.
    code_key: [u8; 16],
    /// Set for good (until a restart) once the id counter answered a block
    /// at or below one this node already had, or `shorty:key` was gone or
    /// another: the store was wiped (`FLUSHALL`) or restored from an older
    /// copy while the node ran, and the ids it would hand out next were
    /// handed out before, under codes that visitors still hold. New links
    /// are refused (503, and `/readyz` says the store refuses writes)
    /// rather than give such a code another URL (review 24: after a
    /// `FLUSHALL` a node gave three old codes new URLs).
    ids_lost: std::cell::RefCell<Option<String>>,
}

impl Store {
    /// Reports whether the store was reached; a reachable store that
    /// refuses writes stays reported as such.
    fn set_health(&self, reached: bool) {
        let refusing = self.refusing.get() || self.ids_lost.borrow().is_some();
        let state = match (reached, refusing) {
            (false, _) => StorageHealth::StoreUnreachable,
            (true, true) => StorageHealth::StoreRefusing,
            (true, false) => StorageHealth::Ok,
        };
        for core in 0..self.cores {
            self.health.set(core, state);
        }
    }

    fn set_refusing(&self, refusing: bool) {
        if self.refusing.replace(refusing) != refusing {
            if refusing {
                tracing::warn!("the store refuses writes; new links are refused");
            } else {
                tracing::info!("the store takes writes again");
            }
        }
        self.set_health(true);
    }

    /// While the store refuses writes: one small write (nothing a link
    /// uses) to see whether it takes them again. Any key's write is
    /// refused alike by OOM (`noeviction` refuses every write over the
    /// limit), MISCONF, READONLY and NOREPLICAS.
    async fn probe_write(&self) {
        let mut writes = self.writer();
        match writes.query(redis::cmd("SET").arg(PROBE_KEY).arg(1)).await {
            Ok(Value::Okay) => self.set_refusing(false),
            Err(err) if err.is_io_error() => self.set_health(false),
            // Still refused (an error reply), or an unexpected answer.
            _ => {}
        }
    }

    /// PINGs the store on the read connection and, with a single Redis, on
    /// every write connection too, all at once; true when every one
    /// answered. A single Redis's connection manager reconnects only after
    /// a request on that connection failed: after Redis restarted, each
    /// write connection still held its dead socket, so `/readyz` said ok
    /// (the read connection had reconnected) and the next 16 SHORTENs were
    /// each answered 503 "broken pipe" (review 6, F4). A failed PING is
    /// what makes that connection reconnect, so the writes after `/readyz`
    /// says ok find live connections; and a write is never re-sent. (A
    /// cluster connection reconnects to each node itself; its PING goes to
    /// a random node, so one is enough.)
    async fn ping_all(&self) -> bool {
        let mut conns = vec![self.reads.clone()];
        if matches!(self.reads, Conn::Single(_)) {
            conns.extend(self.writes.iter().cloned());
        }
        let timeout = self.settings.timeout;
        // Every PING is sent even when one fails: each failed one starts
        // its own connection's reconnect.
        let pings: Vec<_> = conns
            .into_iter()
            .map(|mut conn| {
                tokio::task::spawn_local(async move {
                    tokio::time::timeout(timeout, conn.query(&redis::cmd("PING")))
                        .await
                        .is_ok_and(|r| r.is_ok())
                })
            })
            .collect();
        let mut ok = true;
        for ping in pings {
            ok &= ping.await.unwrap_or(false);
        }
        ok
    }

    /// A write connection, round robin.
    fn writer(&self) -> Conn {
        let i = self.next_write.get();
        self.next_write.set((i + 1) % self.writes.len());
        self.writes[i].clone()
    }

    async fn next_id(&self) -> Result<u64, IdError> {
        let mut ids = self.ids.lock().await;
        if let Some(why) = self.ids_lost.borrow().as_ref() {
            return Err(IdError::Lost(why.clone()));
        }
        if ids.next == ids.end {
            let mut writes = self.writer();
            // The key first: a store that lost it lost the counter too,
            // and a block taken then would be wasted.
            self.check_code_key(&mut writes).await?;
            let end = writes
                .query(redis::cmd("INCRBY").arg(IDS_KEY).arg(ID_BLOCK))
                .await
                .map_err(IdError::Store)?;
            let Value::Int(end) = end else {
                let err = (redis::ErrorKind::Parse, "INCRBY did not answer a number");
                return Err(IdError::Store(err.into()));
            };
            // Every block this node takes ends above its last one: the
            // counter only grows while the store keeps it.
            match u64::try_from(end) {
                Ok(end) if end >= ID_BLOCK && end > ids.end => {
                    ids.end = end;
                    ids.next = end - ID_BLOCK;
                }
                _ => {
                    return Err(self.lose_ids(format!(
                        "the store's id counter {IDS_KEY} went back to {end} (this node had \
                         taken ids up to {}): the store was wiped or restored from an older \
                         copy, and its next ids were handed out before",
                        ids.end
                    )))
                }
            }
        }
        let id = ids.next;
        ids.next += 1;
        Ok(id)
    }

    /// Checks that `shorty:key` still holds the key this node makes codes
    /// with. A missing one is put back (`SET NX`: a node that put it back
    /// first put back the same, or another node made a new one, which the
    /// read after says).
    async fn check_code_key(&self, conn: &mut Conn) -> Result<(), IdError> {
        let (_, stored) = put_key_unless_there(conn, &self.code_key)
            .await
            .map_err(IdError::Store)?;
        if stored.as_deref() == Some(&self.code_key[..]) {
            return Ok(());
        }
        Err(self.lose_ids(format!(
            "the store's code key {CODE_KEY} is not the one this node makes codes with: the \
             store was wiped or restored, or another deployment shares it"
        )))
    }

    /// Refuses new links for good (see `ids_lost`), saying why once.
    fn lose_ids(&self, why: String) -> IdError {
        let why = format!(
            "{why}; new links are refused so that no code gets a second URL: set {IDS_KEY} \
             above every id handed out (the highest \"had taken ids up to\" in the nodes' logs), \
             then restart the nodes (README, \"Beyond one machine\")"
        );
        tracing::error!("{why}");
        *self.ids_lost.borrow_mut() = Some(why.clone());
        self.set_health(true);
        IdError::Lost(why)
    }

    fn unavailable(message: String) -> OpResult {
        OpResult::Failed(ErrorCode::OVERLOADED, message.into())
    }

    async fn put(&self, url: &[u8]) -> OpResult {
        match self.put_value(url).await {
            Ok(key) => OpResult::Stored(key),
            Err(failed) => failed,
        }
    }

    /// Stores `value` under a new generated code (`SET NX` + `WAIT`, the
    /// next id while the code is taken): its key once confirmed.
    async fn put_value(&self, url: &[u8]) -> Result<u64, OpResult> {
        // Each attempt waits this long for replicas; a slot whose primary
        // has lost its replica (after a failover) cannot confirm, and the
        // next attempt's random code most likely lands on another shard.
        let wait_ms = (self.settings.timeout.as_millis() as u64 / 8).clamp(20, 500);
        // Attempts stop with a quarter of --store-timeout to spare, so the
        // answer says why (the caller's own bound is the whole timeout).
        let deadline = tokio::time::Instant::now() + self.settings.timeout * 3 / 4;
        let mut why = None;
        let mut refusals = 0;
        loop {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            if remaining.is_zero() {
                break;
            }
            let id = match self.next_id().await {
                Ok(id) => id,
                Err(IdError::Lost(why)) => return Err(Self::unavailable(why)),
                // An error reply (OOM, MISCONF, READONLY, ...) to the id
                // counter's INCRBY: reachable, refusing writes.
                Err(IdError::Store(err)) if err.code().is_some() => {
                    self.set_refusing(true);
                    return Err(Self::unavailable(format!(
                        "the store refused the URL: {err}"
                    )));
                }
                Err(IdError::Store(err)) => {
                    return Err(Self::unavailable(format!(
                        "the store is unavailable: {err}"
                    )))
                }
            };
            let Some(key) = self.codec.new_key(id) else {
                continue;
            };
            let mut code = [0; MAX_CODE_LEN];
            let name = format!("{LINK_PREFIX}{}", format_code(key, &mut code));
            let mut pipe = redis::pipe();
            pipe.cmd("SET").arg(&name).arg(url).arg("NX");
            pipe.cmd("WAIT")
                .arg(self.settings.replicas)
                .arg(wait_ms.min(remaining.as_millis() as u64).max(1));
            let mut writes = self.writer();
            let replies = match writes.pipeline(&pipe, 2).await {
                Ok(values) => values,
                Err(err) => {
                    self.set_health(false);
                    return Err(Self::unavailable(format!(
                        "the store did not take the URL: {err}"
                    )));
                }
            };
            self.set_health(true);
            match check_put(&replies, self.settings.replicas) {
                PutReply::Confirmed => {
                    self.set_refusing(false);
                    return Ok(key);
                }
                // The code is taken (an imported link): the next id.
                PutReply::Taken => continue,
                PutReply::Refused(err) => {
                    // Nothing was stored (OOM, MISCONF, NOREPLICAS,
                    // READONLY, ...); another shard may take it, but a
                    // store that refuses everything is told at once.
                    refusals += 1;
                    why = Some(format!("the store refused the URL: {err}"));
                    if refusals >= 3 {
                        self.set_refusing(true);
                        break;
                    }
                }
                PutReply::Unconfirmed(detail) => {
                    // Stored but never acknowledged: take it back (best
                    // effort; a leftover is a link nobody was given) and
                    // try another code.
                    let _ = writes.query(redis::cmd("DEL").arg(&name)).await;
                    why = Some(format!(
                        "the URL was not confirmed by {} replica(s) within --store-timeout \
                         ({detail}); retry",
                        self.settings.replicas
                    ));
                }
            }
        }
        Err(Self::unavailable(why.unwrap_or_else(|| {
            "no free code found within --store-timeout".into()
        })))
    }

    /// A new link with options (version 0): under `alias` if that name is
    /// free (a live link or a deleted alias's quarantine holds it: 409),
    /// else under a generated code as for a SHORTEN.
    async fn create(&self, alias: Option<&str>, url: &[u8], options: &[u8]) -> RemoteReply {
        let value = redis_link::encode_link(0, url, options);
        let Some(alias) = alias else {
            return match self.put_value(&value).await {
                Ok(key) => {
                    let mut code = [0; MAX_CODE_LEN];
                    if let Err(failed) =
                        self.index_owner(options, format_code(key, &mut code)).await
                    {
                        return failed;
                    }
                    RemoteReply::Written {
                        key: Some(key),
                        version: 0,
                    }
                }
                Err(failed) => failed.into(),
            };
        };
        let name = format!("{LINK_PREFIX}{alias}");
        let mut pipe = redis::pipe();
        pipe.cmd("SET").arg(&name).arg(&value).arg("NX");
        pipe.cmd("WAIT")
            .arg(self.settings.replicas)
            .arg(self.wait_ms());
        let mut writes = self.writer();
        let replies = match writes.pipeline(&pipe, 2).await {
            Ok(values) => values,
            Err(err) => {
                self.set_health(false);
                return Self::unavailable(format!("the store did not take the link: {err}")).into();
            }
        };
        self.set_health(true);
        match check_put(&replies, self.settings.replicas) {
            PutReply::Confirmed => match self.index_owner(options, alias).await {
                Ok(()) => RemoteReply::Written {
                    key: None,
                    version: 0,
                },
                Err(failed) => failed,
            },
            PutReply::Taken => OpResult::Failed(
                CONFLICT,
                "this alias is taken (or was deleted less than --alias-quarantine ago)".into(),
            )
            .into(),
            PutReply::Refused(err) => {
                Self::unavailable(format!("the store refused the link: {err}")).into()
            }
            PutReply::Unconfirmed(detail) => {
                // Never acknowledged: take it back (best effort), as a
                // SHORTEN does.
                let _ = writes.query(redis::cmd("DEL").arg(&name)).await;
                Self::unavailable(format!(
                    "the link was not confirmed by {} replica(s) within --store-timeout \
                     ({detail}); retry",
                    self.settings.replicas
                ))
                .into()
            }
        }
    }

    /// Adds a link made with an API key to that key's index (a sorted set
    /// per key, [`OWNER_PREFIX`]; members `created_at:code` under one
    /// score, so they sort by creation time, then code). A separate
    /// command after the link's own write: in a cluster the two keys live
    /// in different slots. Its reply is checked: a link the listing would
    /// miss is answered 503 (it exists and resolves; the answer says so).
    async fn index_owner(&self, options: &[u8], code: &str) -> Result<(), RemoteReply> {
        let Some(owned) = shorty_service::owners::Ownership::of_options(options) else {
            return Ok(());
        };
        let key = format!("{OWNER_PREFIX}{}", owned.owner);
        let member = owner_member(owned.created_at_ms, code);
        let mut writes = self.writer();
        match writes
            .query(redis::cmd("ZADD").arg(&key).arg(0).arg(&member))
            .await
        {
            Ok(Value::Int(_)) => Ok(()),
            Ok(other) => Err(Self::unavailable(format!(
                "the link {code} was stored, but its key's listing answered {other:?}"
            ))
            .into()),
            Err(err) => Err(Self::unavailable(format!(
                "the link {code} was stored, but not added to its key's listing: {err}"
            ))
            .into()),
        }
    }

    /// A page of the links API key `owner` made, newest first, after the
    /// index member `after`: each read from its own key and kept only if
    /// it is still that key's (the same creation time and owner); entries
    /// of deleted or re-made links are dropped from the index on the way.
    async fn list(&self, owner: u32, after: Option<&str>, limit: u32) -> RemoteReply {
        let key = format!("{OWNER_PREFIX}{owner}");
        let max = after.map_or_else(|| "+".to_owned(), |a| format!("({a}"));
        let mut reads = match &self.primary_reads {
            Some(primary) => primary.clone(),
            None => self.reads.clone(),
        };
        let found = reads
            .query(
                redis::cmd("ZRANGE")
                    .arg(&key)
                    .arg(&max)
                    .arg("-")
                    .arg("BYLEX")
                    .arg("REV")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(limit),
            )
            .await;
        let members: Vec<String> = match found {
            Ok(Value::Array(items)) => items
                .iter()
                .filter_map(bytes_of)
                .filter_map(|b| String::from_utf8(b).ok())
                .collect(),
            Ok(other) => {
                return OpResult::Failed(
                    ErrorCode::INTERNAL,
                    format!("unexpected store reply to the listing: {other:?}").into(),
                )
                .into()
            }
            Err(err) => {
                self.set_health(false);
                return Self::unavailable(format!("the store cannot list the links: {err}")).into();
            }
        };
        self.set_health(true);
        let next = (members.len() == limit as usize)
            .then(|| members.last().map(|m| m.as_str().into()))
            .flatten();
        let mut links = Vec::with_capacity(members.len());
        for member in &members {
            let Some((time, code)) = member.split_once(':') else {
                continue;
            };
            let created_at_ms = u64::from_str_radix(time, 16).unwrap_or(u64::MAX);
            match self.read(code, true).await {
                RemoteReply::Link {
                    url,
                    meta: Some(mut meta),
                    version,
                } if meta.owner_key_id == Some(owner)
                    && meta.created_at_ms == Some(created_at_ms) =>
                {
                    meta.version = version;
                    links.push(shorty_service::shard::LinkView {
                        code: code.into(),
                        url,
                        meta,
                        // Read by the core next (`ops::stats`).
                        clicks: None,
                    });
                }
                // Gone, or another link now (an alias deleted and claimed
                // again): not this key's any more.
                RemoteReply::Link { .. } | RemoteReply::Done(OpResult::NotFound) => {
                    let mut writes = self.writer();
                    if let Err(err) = writes.query(redis::cmd("ZREM").arg(&key).arg(member)).await {
                        // Listed entries are checked anyway: it is
                        // dropped at the next listing.
                        tracing::debug!("dropping a dead listing entry: {err}");
                    }
                }
                // A page with a hole would look complete.
                failed => return failed,
            }
        }
        OpResult::Page { links, next }.into()
    }

    /// How long a write's `WAIT` waits for replicas.
    fn wait_ms(&self) -> u64 {
        (self.settings.timeout.as_millis() as u64 / 2).clamp(20, 5_000)
    }

    /// An update (`Some(body)`) or a delete (`None`, with its quarantine)
    /// of the live link `code`: one script on the key's slot, pipelined
    /// with `WAIT`, every reply checked.
    async fn change(
        &self,
        code: &str,
        update: Option<(Vec<u8>, u64)>,
        quarantine_ms: Option<u64>,
    ) -> RemoteReply {
        let name = format!("{LINK_PREFIX}{code}");
        let mut pipe = redis::pipe();
        match &update {
            Some((body, expected)) => pipe
                .cmd("EVAL")
                .arg(redis_link::UPDATE_SCRIPT.as_str())
                .arg(1)
                .arg(&name)
                .arg(body)
                .arg(expected.to_string()),
            None => {
                // PX takes at most ~292 million years; a quarantine past a
                // century is for ever.
                let px = match quarantine_ms {
                    Some(ms) if ms < 100 * 365 * 86_400_000 => ms.to_string(),
                    _ => String::new(),
                };
                pipe.cmd("EVAL")
                    .arg(redis_link::DELETE_SCRIPT.as_str())
                    .arg(1)
                    .arg(&name)
                    .arg(px)
            }
        };
        pipe.cmd("WAIT")
            .arg(self.settings.replicas)
            .arg(self.wait_ms());
        let mut writes = self.writer();
        let replies = match writes.pipeline(&pipe, 2).await {
            Ok(values) => values,
            Err(err) => {
                self.set_health(false);
                return Self::unavailable(format!("the store did not take the change: {err}"))
                    .into();
            }
        };
        self.set_health(true);
        match redis_link::check_change(&replies, self.settings.replicas) {
            Change::Confirmed(version) => RemoteReply::Written { key: None, version },
            Change::Gone => OpResult::NotFound.into(),
            Change::Changed => OpResult::Failed(
                shorty_protocol::ErrorCode::CONFLICT,
                "the link changed meanwhile (another change was applied first): retry".into(),
            )
            .into(),
            Change::Refused(err) => {
                Self::unavailable(format!("the store refused the change: {err}")).into()
            }
            // Applied on the primary but not confirmed: it cannot be taken
            // back without undoing a change another node may have made
            // since, so the answer says it may or may not last.
            Change::Unconfirmed(detail) => Self::unavailable(format!(
                "the change was not confirmed by {} replica(s) within --store-timeout \
                 ({detail}): it may or may not have been applied; read the link back",
                self.settings.replicas
            ))
            .into(),
        }
    }

    /// Removes a deleted limited link's click count (a key of its own, in
    /// another slot than the link's: not part of the delete's script).
    /// After the delete is confirmed, so a failure here leaves only a few
    /// bytes behind, logged; the link is gone either way, and a name
    /// claimed again starts another count (`created_at_ms` differs).
    async fn drop_count(&self, code: &str, created_at_ms: u64) {
        let mut cmd = redis::cmd("DEL");
        cmd.arg(redis_link::count_key(code, created_at_ms));
        if let Err(err) = self.writer().query(&cmd).await {
            tracing::warn!(
                code,
                "a deleted link's click count stays in the store: {err}"
            );
        }
    }

    /// Gives an updated link's click count (if it has one) the link's new
    /// expiry, or none: an update that extends the expiry keeps the count
    /// (the clicks taken still count against the limit), one that removes
    /// it keeps the count for good. After the update is confirmed, like
    /// [`drop_count`](Self::drop_count): a failure is logged, and leaves
    /// the count expiring at the old time (the link then gets its clicks
    /// back when that time passes).
    async fn retime_count(&self, code: &str, created_at_ms: u64, expires_at_ms: Option<u64>) {
        let name = redis_link::count_key(code, created_at_ms);
        let cmd = match expires_at_ms {
            Some(at) => {
                let mut cmd = redis::cmd("PEXPIREAT");
                cmd.arg(&name).arg(at);
                cmd
            }
            None => {
                let mut cmd = redis::cmd("PERSIST");
                cmd.arg(&name);
                cmd
            }
        };
        if let Err(err) = self.writer().query(&cmd).await {
            tracing::warn!(
                code,
                "an updated link's click count keeps its old expiry: {err}"
            );
        }
    }

    /// Takes (or looks for) one click of a limited link's life in the
    /// store's shared count ([`redis_link::COUNT_SCRIPT`]).
    async fn count(
        &self,
        code: &str,
        created_at_ms: u64,
        max: u64,
        take: bool,
        expires_at_ms: Option<u64>,
    ) -> RemoteReply {
        let name = redis_link::count_key(code, created_at_ms);
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(redis_link::COUNT_SCRIPT)
            .arg(1)
            .arg(&name)
            .arg(max)
            .arg(if take { "1" } else { "0" })
            .arg(expires_at_ms.unwrap_or(0));
        match self.writer().query(&cmd).await {
            Ok(Value::Int(n)) => {
                self.set_health(true);
                RemoteReply::Counted { left: n >= 0 }
            }
            Ok(other) => {
                self.set_health(true);
                Self::unavailable(format!("the store refused to count the click: {other:?}")).into()
            }
            Err(err) => {
                self.set_health(false);
                Self::unavailable(format!(
                    "the store cannot be reached to count the click: {err}"
                ))
                .into()
            }
        }
    }

    /// The click statistics of `keys` over `[from_ms, to_ms)`, each read
    /// in its own pipeline (a cluster takes one slot per pipeline, and a
    /// link's keys share its slot), all at once, on the read connection.
    /// Bounded by half of `--store-timeout`: the operation waiting for
    /// it already waited for the link's read, and its connection gives up
    /// at `--store-timeout`, so an unanswered read is still answered as
    /// one (the API's `clicksError`) rather than as the request's timeout.
    /// A slow statistics read says nothing of the links' health.
    async fn stats(
        &self,
        keys: Vec<u64>,
        from_ms: u64,
        to_ms: u64,
        granularity: shorty_service::stats::Granularity,
    ) -> RemoteReply {
        let bound = self.settings.timeout / 2;
        let reads: Vec<_> = keys
            .into_iter()
            .map(|key| {
                let mut conn = self.reads.clone();
                let marker = self.settings.stats_marker.clone();
                tokio::task::spawn_local(async move {
                    crate::stats_redis::read_stored(
                        &mut conn,
                        key,
                        from_ms,
                        to_ms,
                        granularity,
                        marker.as_ref(),
                    )
                    .await
                })
            })
            .collect();
        let all = async {
            let mut all = Vec::with_capacity(reads.len());
            for read in reads {
                all.push(read.await.map_err(std::io::Error::other)??);
            }
            Ok::<_, std::io::Error>(all)
        };
        let read = match tokio::time::timeout(bound, all).await {
            Ok(Ok(all)) => Ok(all),
            Ok(Err(err)) => Err(err.to_string().into()),
            Err(_) => Err(format!("the store did not answer within {bound:?}").into()),
        };
        RemoteReply::Stats(read)
    }

    async fn get(&self, key: u64) -> RemoteReply {
        let mut code = [0; MAX_CODE_LEN];
        self.read(format_code(key, &mut code), false).await
    }

    /// The link `code` (an alias or a code). A plain link read for a
    /// redirect (`!whole`) is its bare URL, as before the lifecycle.
    async fn read(&self, code: &str, whole: bool) -> RemoteReply {
        let name = format!("{LINK_PREFIX}{code}");
        // A lifecycle operation's read goes to the primary (a replica may
        // lag a change acknowledged a moment ago); a redirect may use a
        // replica.
        let mut reads = match (&self.primary_reads, whole) {
            (Some(primary), true) => primary.clone(),
            _ => self.reads.clone(),
        };
        let mut found = reads.query(redis::cmd("GET").arg(&name)).await;
        if let (Ok(Value::Nil) | Err(_), Some(primary)) = (&found, &self.primary_reads) {
            // A replica may lag its primary: only the primary's "no" is
            // a 404 (a link acknowledged a moment ago is there). A replica
            // that fails is not the last word either.
            found = primary.clone().query(redis::cmd("GET").arg(&name)).await;
        }
        match found {
            Ok(Value::Nil) => {
                self.set_health(true);
                OpResult::NotFound.into()
            }
            Ok(value) => {
                self.set_health(true);
                let Some(value) = bytes_of(&value) else {
                    return OpResult::Failed(ErrorCode::INTERNAL, "unexpected store reply".into())
                        .into();
                };
                match redis_link::decode(Bytes::from(value)) {
                    Ok(Stored::Link {
                        url, meta: None, ..
                    }) if !whole => OpResult::Url(url).into(),
                    Ok(Stored::Link { url, meta, version }) => {
                        RemoteReply::Link { url, meta, version }
                    }
                    Ok(Stored::Deleted(_)) => OpResult::NotFound.into(),
                    Err(reason) => {
                        tracing::error!(link = %name, "a stored link is damaged ({reason})");
                        OpResult::Failed(ErrorCode::INTERNAL, "the stored link is damaged".into())
                            .into()
                    }
                }
            }
            Err(err) => {
                self.set_health(false);
                // Unknown, not absent: never 404 for a code we cannot check.
                Self::unavailable(format!(
                    "the store cannot be reached to look the code up: {err}"
                ))
                .into()
            }
        }
    }
}

/// What the replies to a SHORTEN's `SET NX` + `WAIT` say.
#[derive(Debug, PartialEq, Eq)]
enum PutReply {
    /// Stored, and confirmed by enough replicas.
    Confirmed,
    /// The code already exists.
    Taken,
    /// The `SET` failed: nothing stored.
    Refused(String),
    /// Stored, but not confirmed (too few replicas, or `WAIT` failed).
    Unconfirmed(String),
}

/// Checks every reply of a SHORTEN's pipeline. `WAIT` counts replicas that
/// have every earlier write of the connection, so it proves something only
/// about a `SET` that succeeded.
fn check_put(replies: &[Value], replicas: u32) -> PutReply {
    match replies.first() {
        Some(Value::Okay) => {}
        Some(Value::SimpleString(s)) if s == "OK" => {}
        Some(Value::Nil) => return PutReply::Taken,
        Some(Value::ServerError(err)) => return PutReply::Refused(err.to_string()),
        other => return PutReply::Refused(format!("unexpected reply to SET: {other:?}")),
    }
    match replies.get(1) {
        Some(Value::Int(n)) if *n >= i64::from(replicas) => PutReply::Confirmed,
        Some(Value::Int(n)) => PutReply::Unconfirmed(format!("{n} confirmed")),
        Some(Value::ServerError(err)) => PutReply::Unconfirmed(format!("WAIT failed: {err}")),
        other => PutReply::Unconfirmed(format!("unexpected reply to WAIT: {other:?}")),
    }
}

/// The running store thread.
pub struct StoreThread {
    /// The permutation key, from the store.
    pub key: CodeKey,
    /// One port per core.
    pub ports: Vec<RemotePort>,
    /// The thread (it runs until the process exits).
    pub handle: std::thread::JoinHandle<()>,
}

/// Starts the store thread: connects, loads (or creates) the permutation
/// key, and serves the cores' requests.
///
/// # Errors
/// The store cannot be reached at start (a message naming it).
pub fn start(
    settings: StoreSettings,
    cores: usize,
    health: Arc<Health>,
) -> Result<StoreThread, String> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<CodeKey, String>>();
    let (requests_tx, mut requests_rx) = mpsc::unbounded_channel::<Envelope>();
    let mut reply_tx = Vec::new();
    let mut ports = Vec::new();
    for _ in 0..cores {
        let (tx, rx) = mpsc::unbounded_channel::<(OpId, RemoteReply)>();
        reply_tx.push(tx);
        ports.push(RemotePort {
            requests: requests_tx.clone(),
            replies: rx,
        });
    }
    drop(requests_tx);
    let handle = std::thread::Builder::new()
        .name("shorty-store".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("cannot start the store's runtime: {e}")));
                    return;
                }
            };
            let local = tokio::task::LocalSet::new();
            local.block_on(&runtime, async move {
                let timeout = settings.timeout;
                let started = tokio::time::Instant::now();
                let connected = async {
                    let mut probe = probe(&settings.spec, timeout).await?;
                    // A replica may be (re)connecting, or a new cluster's
                    // gossip not yet have reached the probed node: look
                    // again for a while before refusing.
                    let patience = tokio::time::Instant::now() + timeout;
                    while let Err(why) = check_replicas(&mut probe, settings.replicas).await {
                        if tokio::time::Instant::now() >= patience {
                            return Err(why);
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    let spec = &settings.spec;
                    // Each connection is tried again until the start's
                    // own deadline (below) rather than once: a store that
                    // answers slowly for a moment (a busy machine, a
                    // cluster still settling) must not make a node
                    // refuse to start (a CI run: one slow connect did).
                    let deadline = started + timeout * 4;
                    let connect = |replicas_read: bool| {
                        connect_patiently(&probe, spec, timeout, replicas_read, deadline)
                    };
                    let mut writes = Vec::with_capacity(WRITE_CONNECTIONS);
                    for _ in 0..WRITE_CONNECTIONS {
                        writes.push(connect(false).await?);
                    }
                    let reads = connect(settings.read_from_replicas).await?;
                    // A single Redis has no replicas to read from.
                    let primary_reads = if settings.read_from_replicas && probe.cluster {
                        Some(connect(false).await?)
                    } else {
                        None
                    };
                    let key = load_or_create_key(&mut writes[0]).await?;
                    Ok::<_, String>((writes, reads, primary_reads, key))
                };
                let nodes = || {
                    settings
                        .spec
                        .nodes
                        .iter()
                        .map(|n| redact(n))
                        .collect::<Vec<_>>()
                        .join(",")
                };
                let (writes, reads, primary_reads, key) =
                    match tokio::time::timeout(timeout * 5, connected).await {
                        Ok(Ok(c)) => c,
                        Ok(Err(e)) => {
                            let _ = ready_tx
                                .send(Err(format!("cannot use the store at {}: {e}", nodes())));
                            return;
                        }
                        Err(_) => {
                            let _ = ready_tx.send(Err(format!(
                                "cannot reach the store at {}: timed out",
                                nodes()
                            )));
                            return;
                        }
                    };
                let store = Rc::new(Store {
                    codec: Codec::new(&key),
                    settings,
                    writes,
                    next_write: std::cell::Cell::new(0),
                    reads,
                    primary_reads,
                    ids: tokio::sync::Mutex::new(Ids { next: 0, end: 0 }),
                    health,
                    cores,
                    refusing: std::cell::Cell::new(false),
                    code_key: key.0,
                    ids_lost: std::cell::RefCell::new(None),
                });
                let _ = ready_tx.send(Ok(key));
                // Health while idle: a PING to the store every second.
                let pinger = store.clone();
                tokio::task::spawn_local(async move {
                    loop {
                        tokio::time::sleep(PING_EVERY).await;
                        let ok = pinger.ping_all().await;
                        pinger.set_health(ok);
                        if ok && pinger.refusing.get() {
                            let _ =
                                tokio::time::timeout(pinger.settings.timeout, pinger.probe_write())
                                    .await;
                        }
                    }
                });
                let replies = Rc::new(RefCell::new(reply_tx));
                while let Some(Envelope { core, request }) = requests_rx.recv().await {
                    let (store, replies) = (store.clone(), replies.clone());
                    tokio::task::spawn_local(async move {
                        let limit = store.settings.timeout;
                        let op = request.op();
                        let work = async {
                            match request {
                                RemoteRequest::Get { key, .. } => store.get(key).await,
                                RemoteRequest::Put { url, .. } => store.put(&url).await.into(),
                                RemoteRequest::Read { code, .. } => store.read(&code, true).await,
                                RemoteRequest::Create {
                                    alias,
                                    url,
                                    options,
                                    ..
                                } => store.create(alias.as_deref(), &url, &options).await,
                                RemoteRequest::Update {
                                    code,
                                    url,
                                    options,
                                    expected,
                                    ..
                                } => {
                                    let body = redis_link::body(&url, &options);
                                    let reply =
                                        store.change(&code, Some((body, expected)), None).await;
                                    // The count (if the link is limited)
                                    // follows the new expiry.
                                    if let (Ok(meta), RemoteReply::Written { .. }) =
                                        (LinkMeta::decode(&options), &reply)
                                    {
                                        if meta.max_clicks.is_some() {
                                            store
                                                .retime_count(
                                                    &code,
                                                    meta.created_at_ms.unwrap_or(0),
                                                    meta.expires_at_ms,
                                                )
                                                .await;
                                        }
                                    }
                                    reply
                                }
                                RemoteRequest::Delete {
                                    code,
                                    quarantine_ms,
                                    count,
                                    ..
                                } => {
                                    let reply = store.change(&code, None, quarantine_ms).await;
                                    if let (Some(created_at_ms), RemoteReply::Written { .. }) =
                                        (count, &reply)
                                    {
                                        store.drop_count(&code, created_at_ms).await;
                                    }
                                    reply
                                }
                                RemoteRequest::Count {
                                    code,
                                    created_at_ms,
                                    max,
                                    take,
                                    expires_at_ms,
                                    ..
                                } => {
                                    store
                                        .count(&code, created_at_ms, max, take, expires_at_ms)
                                        .await
                                }
                                RemoteRequest::List {
                                    owner,
                                    after,
                                    limit,
                                    ..
                                } => store.list(owner, after.as_deref(), limit).await,
                                RemoteRequest::Stats {
                                    keys,
                                    from_ms,
                                    to_ms,
                                    granularity,
                                    ..
                                } => store.stats(keys, from_ms, to_ms, granularity).await,
                            }
                        };
                        let result = tokio::time::timeout(limit, work).await;
                        let result = result.unwrap_or_else(|_| {
                            store.set_health(false);
                            Store::unavailable(format!(
                                "the store did not answer within --store-timeout ({limit:?})"
                            ))
                            .into()
                        });
                        if let Some(tx) = replies.borrow().get(core) {
                            let _ = tx.send((op, result));
                        }
                    });
                }
            });
        })
        .map_err(|e| format!("cannot start the store thread: {e}"))?;
    let key = ready_rx
        .recv()
        .map_err(|_| "the store thread stopped".to_owned())??;
    Ok(StoreThread { key, ports, handle })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODES: &str = "\
a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
a2 127.0.0.1:7001@17001 master - 0 0 2 connected 5461-10922 [5461->-a3]
a3 127.0.0.1:7002@17002,host3 master - 0 0 3 connected 10923-16383
r1 127.0.0.1:7003@17003 slave a1 0 0 1 connected
r2 127.0.0.1:7004@17004 slave,fail a2 0 0 2 disconnected
r3 127.0.0.1:7005@17005 slave a3 0 0 3 connected
";

    #[test]
    fn cluster_nodes_parse_into_shards() {
        let nodes = parse_cluster_nodes(NODES);
        assert_eq!(nodes.len(), 6);
        assert_eq!(nodes[2].addr, "127.0.0.1:7002");
        assert_eq!(nodes[1].slots, [(5461, 10922)]);
        assert!(nodes[4].failing && !nodes[4].primary);
        let serving = serving_primaries(&nodes).unwrap();
        assert_eq!(serving.len(), 3);
        assert_eq!(
            replica_counts(&nodes),
            [
                ("127.0.0.1:7000".to_owned(), 1),
                ("127.0.0.1:7001".to_owned(), 0),
                ("127.0.0.1:7002".to_owned(), 1)
            ]
        );
    }

    #[test]
    fn export_needs_every_slot_and_no_failing_primary() {
        // A failing primary with slots is an error, whether `fail?` (one
        // node's suspicion) or `fail`.
        for flag in ["master,fail?", "master,fail"] {
            let text = NODES.replacen("master - 0 0 2", &format!("{flag} - 0 0 2"), 1);
            let err = serving_primaries(&parse_cluster_nodes(&text)).unwrap_err();
            assert!(
                err.contains("127.0.0.1:7001") && err.contains("5461-10922"),
                "{err}"
            );
        }
        // A shard missing from the list (only one seed's partial view).
        let text: String = NODES
            .lines()
            .filter(|l| !l.starts_with("a3"))
            .map(|l| format!("{l}\n"))
            .collect();
        let err = serving_primaries(&parse_cluster_nodes(&text)).unwrap_err();
        assert!(
            err.contains("5461 of 16384 slots (e.g. slot 10923)"),
            "{err}"
        );
        // A failed old primary that lost its slots in a failover is fine.
        let text = format!("{NODES}old 127.0.0.1:7006@17006 master,fail - 0 0 0 disconnected\n");
        assert_eq!(
            serving_primaries(&parse_cluster_nodes(&text))
                .unwrap()
                .len(),
            3
        );
    }

    /// An error reply as redis-rs parses it off the wire.
    fn server_error(text: &str) -> Value {
        let value = redis::parse_redis_value(format!("-{text}\r\n").as_bytes()).unwrap();
        assert!(matches!(value, Value::ServerError(_)), "{value:?}");
        value
    }

    #[test]
    fn a_failed_set_is_never_confirmed_by_the_wait_after_it() {
        let oom = server_error("OOM command not allowed when used memory > 'maxmemory'.");
        // WAIT counted the replica (it has the connection's earlier
        // writes), but the SET failed.
        assert!(matches!(
            check_put(&[oom.clone(), Value::Int(1)], 1),
            PutReply::Refused(_)
        ));
        assert!(matches!(
            check_put(&[oom, Value::Int(0)], 0),
            PutReply::Refused(_)
        ));
        assert_eq!(
            check_put(&[Value::Okay, Value::Int(1)], 1),
            PutReply::Confirmed
        );
        assert_eq!(
            check_put(&[Value::Okay, Value::Int(0)], 0),
            PutReply::Confirmed
        );
        assert_eq!(check_put(&[Value::Nil, Value::Int(1)], 1), PutReply::Taken);
        assert!(matches!(
            check_put(&[Value::Okay, Value::Int(0)], 1),
            PutReply::Unconfirmed(_)
        ));
        let wait_err = server_error("ERR WAIT cannot be used with replica instances.");
        assert!(matches!(
            check_put(&[Value::Okay, wait_err], 0),
            PutReply::Unconfirmed(_)
        ));
        assert!(matches!(
            check_put(&[Value::Okay], 0),
            PutReply::Unconfirmed(_)
        ));
        assert!(matches!(check_put(&[], 0), PutReply::Refused(_)));
    }
}

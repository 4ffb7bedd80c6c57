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
//! **Layout in the cluster.** `shorty:l:<code>` holds a link's URL (a
//! plain string: operators can read it with `redis-cli`). `shorty:ids` is
//! the id counter: each process claims blocks of [`ID_BLOCK`] with one
//! `INCRBY`, so codes stay unique and non-sequential across every node.
//! `shorty:key` holds the permutation key, created once with `SET NX`, so
//! every node makes the same codes.
//!
//! **Semantics.** A SHORTEN is `SET shorty:l:<code> <url> NX` pipelined with
//! `WAIT <--store-replicas> <ms>` on the key's primary: acknowledged only
//! when the primary stored it and that many replicas confirmed. A code
//! already taken (an imported link) moves on to the next id. A RESOLVE
//! (after the core's cache) is a `GET`; a miss is not cached, so a link
//! made on another node resolves at once. Writes and reads use separate
//! connections, because `WAIT` blocks its connection until replicas
//! answer. Every request is bounded by `--store-timeout`; failures answer
//! 503, never 404.

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
use shorty_service::output::OpId;
use shorty_service::shard::{OpResult, RemoteRequest};
use tokio::sync::mpsc;

use crate::remote::{Envelope, RemotePort};

/// Ids one process claims at a time from the cluster-wide counter.
pub const ID_BLOCK: u64 = 1024;
/// The counter key.
pub const IDS_KEY: &str = "shorty:ids";
/// The permutation key's key.
pub const CODE_KEY: &str = "shorty:key";
/// Prefix of link keys.
pub const LINK_PREFIX: &str = "shorty:l:";
/// Write connections to the store. `WAIT` blocks the connection it is sent
/// on until replicas confirm, so writes on one connection would wait for
/// each other's confirmations; this many can wait at once (Redis still
/// group-commits its fsync across them).
pub const WRITE_CONNECTIONS: usize = 16;

/// How often the store thread checks the store when idle (health).
const PING_EVERY: Duration = Duration::from_secs(1);

/// Where `--store` points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSpec {
    /// Seed nodes, as `redis://[:password@]host:port` URLs.
    pub nodes: Vec<String>,
}

/// Parses `redis://[:PASSWORD@]HOST:PORT[,HOST:PORT...]`.
///
/// # Errors
/// A message saying what is expected.
pub fn parse_spec(text: &str) -> Result<RedisSpec, String> {
    let rest = text
        .strip_prefix("redis://")
        .ok_or("expected `local` or redis://[:PASSWORD@]HOST:PORT[,HOST:PORT...]")?;
    let (credentials, hosts) = match rest.rsplit_once('@') {
        Some((creds, hosts)) => (Some(creds), hosts),
        None => (None, rest),
    };
    let nodes: Vec<String> = hosts
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(|host| match credentials {
            Some(c) => format!("redis://{c}@{host}"),
            None => format!("redis://{host}"),
        })
        .collect();
    if nodes.is_empty() {
        return Err("no HOST:PORT given".into());
    }
    for node in &nodes {
        redis::Client::open(node.as_str()).map_err(|e| format!("{node}: {e}"))?;
    }
    Ok(RedisSpec { nodes })
}

/// A connection to a cluster, or to a single Redis.
#[derive(Clone)]
pub enum Conn {
    /// Redis Cluster.
    Cluster(redis::cluster_async::ClusterConnection),
    /// One Redis (no cluster support).
    Single(redis::aio::MultiplexedConnection),
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

    async fn query(&mut self, cmd: &Cmd) -> RedisResult<Value> {
        match self {
            Conn::Cluster(c) => c.req_packed_command(cmd).await,
            Conn::Single(c) => c.req_packed_command(cmd).await,
        }
    }

    async fn pipeline(&mut self, pipe: &Pipeline, count: usize) -> RedisResult<Vec<Value>> {
        match self {
            Conn::Cluster(c) => c.req_packed_commands(pipe, 0, count).await,
            Conn::Single(c) => c.req_packed_commands(pipe, 0, count).await,
        }
    }
}

/// Connects to `spec` (a cluster if its first node says so, else a single
/// Redis), with every request bounded by `timeout`.
///
/// # Errors
/// The store cannot be reached.
pub async fn connect(
    spec: &RedisSpec,
    timeout: Duration,
    replicas_read: bool,
) -> RedisResult<Conn> {
    let first = redis::Client::open(spec.nodes[0].as_str())?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout));
    let mut probe = first
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    if cluster_enabled(&mut probe).await? {
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
        Ok(Conn::Single(probe))
    }
}

/// The primaries of the store: every node of a cluster that is a master
/// and not failed (from `CLUSTER NODES`), or the one node (for `export`).
///
/// # Errors
/// The store cannot be reached.
pub async fn primaries(spec: &RedisSpec) -> redis::RedisResult<Vec<String>> {
    let client = redis::Client::open(spec.nodes[0].as_str())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    if !cluster_enabled(&mut conn).await? {
        return Ok(vec![spec.nodes[0].clone()]);
    }
    let nodes: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query_async(&mut conn)
        .await?;
    let prefix = spec.nodes[0]
        .split_once("//")
        .map(|(scheme, rest)| {
            let creds = rest
                .rsplit_once('@')
                .map(|(c, _)| format!("{c}@"))
                .unwrap_or_default();
            format!("{scheme}//{creds}")
        })
        .unwrap_or_else(|| "redis://".into());
    Ok(nodes
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let flags = fields.get(2)?;
            (flags.contains("master") && !flags.contains("fail") && fields.get(8).is_some()).then(
                || {
                    let addr = fields[1].split('@').next().unwrap_or_default();
                    format!("{prefix}{addr}")
                },
            )
        })
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
    let _ = conn
        .query(redis::cmd("SET").arg(CODE_KEY).arg(&key[..]).arg("NX"))
        .await
        .map_err(|e| e.to_string())?;
    let stored = conn
        .query(redis::cmd("GET").arg(CODE_KEY))
        .await
        .map_err(|e| e.to_string())?;
    let stored = bytes_of(&stored).ok_or("the store holds no code key")?;
    let key: [u8; 16] = stored
        .try_into()
        .map_err(|_| format!("{CODE_KEY} in the store is damaged (not 16 bytes)"))?;
    Ok(CodeKey(key))
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
}

struct Ids {
    next: u64,
    end: u64,
}

struct Store {
    settings: StoreSettings,
    codec: Codec,
    writes: Vec<Conn>,
    next_write: std::cell::Cell<usize>,
    reads: Conn,
    ids: tokio::sync::Mutex<Ids>,
    health: Arc<Health>,
    cores: usize,
}

impl Store {
    fn set_health(&self, ok: bool) {
        let state = if ok {
            StorageHealth::Ok
        } else {
            StorageHealth::StoreUnreachable
        };
        for core in 0..self.cores {
            self.health.set(core, state);
        }
    }

    /// A write connection, round robin.
    fn writer(&self) -> Conn {
        let i = self.next_write.get();
        self.next_write.set((i + 1) % self.writes.len());
        self.writes[i].clone()
    }

    async fn next_id(&self) -> RedisResult<u64> {
        let mut ids = self.ids.lock().await;
        if ids.next == ids.end {
            let mut writes = self.writer();
            let end = writes
                .query(redis::cmd("INCRBY").arg(IDS_KEY).arg(ID_BLOCK))
                .await?;
            let Value::Int(end) = end else {
                return Err((redis::ErrorKind::Parse, "INCRBY did not answer a number").into());
            };
            ids.end = end as u64;
            ids.next = ids.end - ID_BLOCK;
        }
        let id = ids.next;
        ids.next += 1;
        Ok(id)
    }

    fn unavailable(message: String) -> OpResult {
        OpResult::Failed(ErrorCode::OVERLOADED, message.into())
    }

    async fn put(&self, url: &[u8]) -> OpResult {
        // Each attempt waits this long for replicas; a slot whose primary
        // has lost its replica (after a failover) cannot confirm, and the
        // next attempt's random code most likely lands on another shard.
        let wait_ms = (self.settings.timeout.as_millis() as u64 / 8).clamp(20, 500);
        let deadline = tokio::time::Instant::now() + self.settings.timeout;
        let mut shortfall = None;
        while tokio::time::Instant::now() < deadline {
            let id = match self.next_id().await {
                Ok(id) => id,
                Err(err) => return Self::unavailable(format!("the store is unavailable: {err}")),
            };
            let Some(key) = self.codec.new_key(id) else {
                continue;
            };
            let mut code = [0; MAX_CODE_LEN];
            let name = format!("{LINK_PREFIX}{}", format_code(key, &mut code));
            let mut pipe = redis::pipe();
            pipe.cmd("SET").arg(&name).arg(url).arg("NX");
            pipe.cmd("WAIT").arg(self.settings.replicas).arg(wait_ms);
            let mut writes = self.writer();
            let result = match writes.pipeline(&pipe, 2).await {
                Ok(values) => values,
                Err(err) => {
                    self.set_health(false);
                    return Self::unavailable(format!("the store did not take the URL: {err}"));
                }
            };
            self.set_health(true);
            if matches!(result.first(), Some(Value::Nil)) {
                // The code is taken (an imported link): the next id.
                continue;
            }
            let acked = match result.get(1) {
                Some(Value::Int(n)) => *n,
                _ => 0,
            };
            if acked >= i64::from(self.settings.replicas) {
                return OpResult::Stored(key);
            }
            // Never acknowledged: take it back (best effort; a leftover is
            // a link nobody was given) and try another code.
            let _ = writes.query(redis::cmd("DEL").arg(&name)).await;
            shortfall = Some(acked);
        }
        Self::unavailable(match shortfall {
            Some(acked) => format!(
                "no shard confirmed the URL on {} replicas within --store-timeout (last: {acked}); \
                 retry",
                self.settings.replicas
            ),
            None => "no free code found within --store-timeout".into(),
        })
    }

    async fn get(&self, key: u64) -> OpResult {
        let mut code = [0; MAX_CODE_LEN];
        let name = format!("{LINK_PREFIX}{}", format_code(key, &mut code));
        let mut reads = self.reads.clone();
        match reads.query(redis::cmd("GET").arg(&name)).await {
            Ok(Value::Nil) => {
                self.set_health(true);
                OpResult::NotFound
            }
            Ok(value) => {
                self.set_health(true);
                match bytes_of(&value) {
                    Some(url) => OpResult::Url(Bytes::from(url)),
                    None => OpResult::Failed(ErrorCode::INTERNAL, "unexpected store reply".into()),
                }
            }
            Err(err) => {
                self.set_health(false);
                // Unknown, not absent: never 404 for a code we cannot check.
                Self::unavailable(format!(
                    "the store cannot be reached to look the code up: {err}"
                ))
            }
        }
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
        let (tx, rx) = mpsc::unbounded_channel::<(OpId, OpResult)>();
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
                let connected = async {
                    let mut writes = Vec::with_capacity(WRITE_CONNECTIONS);
                    for _ in 0..WRITE_CONNECTIONS {
                        writes.push(connect(&settings.spec, timeout, false).await?);
                    }
                    let reads = if settings.read_from_replicas {
                        connect(&settings.spec, timeout, true).await?
                    } else {
                        connect(&settings.spec, timeout, false).await?
                    };
                    let key = load_or_create_key(&mut writes[0]).await.map_err(|e| {
                        redis::RedisError::from((redis::ErrorKind::Io, "code key", e))
                    })?;
                    Ok::<_, redis::RedisError>((writes, reads, key))
                };
                let (writes, reads, key) = match tokio::time::timeout(timeout * 5, connected).await
                {
                    Ok(Ok(c)) => c,
                    Ok(Err(e)) => {
                        let _ = ready_tx.send(Err(format!(
                            "cannot reach the store at {}: {e}",
                            settings.spec.nodes.join(",")
                        )));
                        return;
                    }
                    Err(_) => {
                        let _ = ready_tx.send(Err(format!(
                            "cannot reach the store at {}: timed out",
                            settings.spec.nodes.join(",")
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
                    ids: tokio::sync::Mutex::new(Ids { next: 0, end: 0 }),
                    health,
                    cores,
                });
                let _ = ready_tx.send(Ok(key));
                // Health while idle: a PING to the store every second.
                let pinger = store.clone();
                tokio::task::spawn_local(async move {
                    loop {
                        tokio::time::sleep(PING_EVERY).await;
                        let mut reads = pinger.reads.clone();
                        let ok = tokio::time::timeout(
                            pinger.settings.timeout,
                            reads.query(&redis::cmd("PING")),
                        )
                        .await
                        .is_ok_and(|r| r.is_ok());
                        pinger.set_health(ok);
                    }
                });
                let replies = Rc::new(RefCell::new(reply_tx));
                while let Some(Envelope { core, request }) = requests_rx.recv().await {
                    let (store, replies) = (store.clone(), replies.clone());
                    tokio::task::spawn_local(async move {
                        let limit = store.settings.timeout;
                        let (op, result) = match request {
                            RemoteRequest::Get { op, key } => {
                                (op, tokio::time::timeout(limit, store.get(key)).await)
                            }
                            RemoteRequest::Put { op, url } => {
                                (op, tokio::time::timeout(limit, store.put(&url)).await)
                            }
                        };
                        let result = result.unwrap_or_else(|_| {
                            store.set_health(false);
                            Store::unavailable(format!(
                                "the store did not answer within --store-timeout ({limit:?})"
                            ))
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

    #[test]
    fn specs_parse() {
        let spec = parse_spec("redis://127.0.0.1:7000,127.0.0.1:7001").unwrap();
        assert_eq!(
            spec.nodes,
            ["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"]
        );
        let spec = parse_spec("redis://:s3cret@10.0.0.1:6379,10.0.0.2:6379").unwrap();
        assert_eq!(
            spec.nodes,
            [
                "redis://:s3cret@10.0.0.1:6379",
                "redis://:s3cret@10.0.0.2:6379"
            ]
        );
        assert!(parse_spec("http://x").is_err());
        assert!(parse_spec("redis://").is_err());
    }
}

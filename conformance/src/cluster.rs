//! Redis for tests: a Redis Cluster (primaries and replicas of Debian's
//! `redis-server` on free loopback ports, each with AOF `appendfsync
//! always`, joined with `redis-cli --cluster create`), or one Redis
//! ([`Redis`]) with whatever settings a fault needs; killed and removed
//! when dropped.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// One node.
struct Node {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
    /// Arguments after the common ones: cluster mode, or a fault's
    /// settings.
    args: Vec<String>,
}

/// A running cluster.
pub struct RedisCluster {
    _dir: tempfile::TempDir,
    nodes: Vec<Node>,
}

/// Where Redis ports are handed out when the kernel's ephemeral range
/// allows: from here up to 10,000 below the range's start, so that a
/// port and its cluster bus port (+10,000) both lie below it.
const PORT_BASE: u16 = 10_000;

/// A port whose cluster bus port (+10,000) is free too.
///
/// Not a port the kernel picked with `bind(0)`: such a port is ephemeral,
/// and between the moment we let it go and the moment `redis-server`
/// binds it, any outgoing connection on the machine (our servers' and
/// tests' own, the harness's hundreds of `redis-cli` polls) may take it
/// or its bus port as a source port; that Redis then dies at start and
/// the cluster never settles (a CI run: "the cluster's readiness did not
/// happen within 120 s"). Ports below the ephemeral range are never
/// taken that way. A process-wide cursor hands each port out once, so two
/// tests of one process never race for one; the start is spread by the
/// process id so that two test processes rarely meet either.
fn free_port() -> u16 {
    static CURSOR: AtomicU32 = AtomicU32::new(u32::MAX);
    let Some(top) = ephemeral_start().and_then(|s| s.checked_sub(10_000)) else {
        return ephemeral_free_port();
    };
    if top <= PORT_BASE + 1_000 {
        return ephemeral_free_port();
    }
    let span = u32::from(top - PORT_BASE);
    let _ = CURSOR.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7_919) % span,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..span {
        let offset = CURSOR.fetch_add(1, Ordering::Relaxed) % span;
        let port = PORT_BASE + offset as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok()
            && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok()
        {
            return port;
        }
    }
    ephemeral_free_port()
}

/// The first port of the kernel's ephemeral range (`None`: unknown).
fn ephemeral_start() -> Option<u16> {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The old way, where the ephemeral range leaves no room below it: a
/// port the kernel picked whose bus port is free too.
fn ephemeral_free_port() -> u16 {
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
        let port = listener.local_addr().unwrap().port();
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

/// `redis-cli -p PORT ARGS...`: its output, or `None` when it failed.
pub fn cli(port: u16, args: &[&str]) -> Option<String> {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Node {
    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1"])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .args(["--save", "", "--daemonize", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(self.dir.join("redis.log"))
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server");
        self.child = Some(child);
    }

    /// Why this node's `redis-server` is gone, if it exited by itself:
    /// its status and the end of its log (a port taken, a bad option).
    fn exited(&mut self) -> Option<String> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        let log = std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(3).collect();
        Some(format!(
            "redis-server on port {} exited ({status}): {}",
            self.port,
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        ))
    }

    /// Waits until it answers PING, or says why not: it exited, or it
    /// did not answer within [`READY_WITHIN`].
    fn wait_until_answering(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if cli(self.port, &["ping"]).is_some_and(|o| o.contains("PONG")) {
                return Ok(());
            }
            if let Some(why) = self.exited() {
                return Err(why);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "redis-server on port {} did not answer within {} s",
                    self.port,
                    READY_WITHIN.as_secs()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Says why Redis cannot be run here (no `redis-server` or `redis-cli`).
fn installed() -> Result<(), String> {
    for tool in ["redis-server", "redis-cli"] {
        if Command::new(tool).arg("--version").output().is_err() {
            return Err(format!("{tool} is not installed"));
        }
    }
    Ok(())
}

/// What a test does when Redis cannot be started. Redis not installed:
/// under CI (`CI` set) the test fails, because CI installs Redis and a
/// test that passes without running proves nothing; elsewhere it says
/// SKIPPED and the caller returns. Redis installed but not started (a
/// cluster that never settled): the test fails everywhere, saying so,
/// since that is the harness's failure or the machine's, not a missing
/// tool.
pub fn or_skip<T>(started: Result<T, String>) -> Option<T> {
    match started {
        Ok(t) => Some(t),
        Err(why) => {
            if installed().is_ok() {
                panic!("Redis is installed but did not start: {why}");
            }
            crate::harness::missing_tool("Redis", &why);
            None
        }
    }
}

/// How long the harness waits for a Redis or a cluster to become ready.
/// Generous on purpose: a ready server ends the wait at once, and a CI
/// machine starting a dozen six-node clusters at once (one per test, in
/// parallel) has been seen to need more than 30 s for a gossip round to
/// settle (`redis_disable_destination_reaches_every_node`, round 3).
const READY_WITHIN: Duration = Duration::from_secs(120);

/// How many times [`RedisCluster::start`] tries.
const START_ATTEMPTS: u32 = 3;

fn wait_for(what: &str, mut ready: impl FnMut() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + READY_WITHIN;
    while !ready() {
        if Instant::now() > deadline {
            return Err(format!(
                "{what} did not happen within {} s",
                READY_WITHIN.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// One Redis (not a cluster) on a free port, AOF `appendfsync always`,
/// with `args` added (`--maxmemory 3mb`, `--save "3600 1"`, ...).
pub struct Redis {
    _dir: tempfile::TempDir,
    node: Node,
}

impl Redis {
    /// Starts it and waits until it answers, or says why it cannot.
    pub fn start(args: &[&str]) -> Result<Redis, String> {
        installed()?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut node = Node {
            port: free_port(),
            dir: dir.path().to_owned(),
            child: None,
            args: args.iter().map(|a| (*a).to_owned()).collect(),
        };
        node.spawn();
        // Made before the wait, so that its drop kills a Redis that
        // never answered.
        let mut redis = Redis { _dir: dir, node };
        redis.node.wait_until_answering()?;
        Ok(redis)
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.node.port
    }

    /// `redis://127.0.0.1:PORT`, for `--store`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.node.port)
    }

    /// `redis-cli` against it.
    pub fn cli(&self, args: &[&str]) -> Option<String> {
        cli(self.node.port, args)
    }

    /// `redis-cli`, which must succeed and not answer an error.
    pub fn must(&self, args: &[&str]) -> String {
        let out = self
            .cli(args)
            .unwrap_or_else(|| panic!("redis-cli {args:?} failed"));
        assert!(!out.starts_with("ERR"), "redis-cli {args:?}: {out}");
        out
    }

    /// What `GET key` holds, straight from this Redis (`None`: nothing).
    pub fn get(&self, key: &str) -> Option<String> {
        let out = self.must(&["--no-raw", "get", key]);
        // `--no-raw` quotes values and says `(nil)` for none, so an empty
        // value and a missing key differ.
        let out = out.trim_end_matches('\n');
        (out != "(nil)").then(|| out.trim_matches('"').to_owned())
    }

    /// Makes this Redis a replica of `primary` and waits until the
    /// primary counts it online.
    pub fn replicate(&self, primary: &Redis) {
        self.must(&["replicaof", "127.0.0.1", &primary.port().to_string()]);
        wait_for("replication", || {
            self.cli(&["info", "replication"])
                .is_some_and(|o| o.contains("master_link_status:up"))
                && primary
                    .cli(&["info", "replication"])
                    .is_some_and(|o| o.contains("state=online"))
        })
        .unwrap();
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        self.node.kill();
    }

    /// `kill -9`, then starts it again on the same port with the same
    /// files (its AOF: what it acknowledged is back), and waits until it
    /// answers.
    pub fn restart(&mut self) {
        self.node.kill();
        self.node.spawn();
        self.node.wait_until_answering().unwrap();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.node.kill();
    }
}

/// In `CLUSTER NODES` output: every primary that serves slots and is not
/// failed has a replica that is not failed.
fn every_primary_has_a_replica(nodes: &str) -> bool {
    let lines: Vec<Vec<&str>> = nodes.lines().map(|l| l.split(' ').collect()).collect();
    let flags = |l: &Vec<&str>, f: &str| l.get(2).is_some_and(|flags| flags.contains(f));
    lines
        .iter()
        .filter(|l| flags(l, "master") && !flags(l, "fail") && l.len() > 8)
        .all(|primary| {
            lines
                .iter()
                .any(|r| flags(r, "slave") && !flags(r, "fail") && r.get(3) == primary.first())
        })
}

impl RedisCluster {
    /// Starts `primaries` primaries with one replica each, or says why it
    /// cannot (no `redis-server` here); see [`or_skip`]. A start that
    /// fails (a node that died, a cluster that did not settle) is tried
    /// again on new ports up to `START_ATTEMPTS` (3) times: the test is
    /// about our server, not about one unlucky Redis start on a loaded
    /// machine; each failure is printed, so a harness that needs retries
    /// shows it.
    pub fn start(primaries: usize) -> Result<RedisCluster, String> {
        installed()?;
        let mut failures = Vec::new();
        for attempt in 1..=START_ATTEMPTS {
            match Self::start_once(primaries) {
                Ok(cluster) => return Ok(cluster),
                Err(why) => {
                    eprintln!(
                        "harness: Redis Cluster start {attempt} of {START_ATTEMPTS} failed: {why}"
                    );
                    failures.push(why);
                }
            }
        }
        Err(failures.join("; then: "))
    }

    fn start_once(primaries: usize) -> Result<RedisCluster, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut nodes: Vec<Node> = (0..primaries * 2)
            .map(|i| {
                let node_dir = dir.path().join(format!("node{i}"));
                std::fs::create_dir_all(&node_dir).unwrap();
                Node {
                    port: free_port(),
                    dir: node_dir,
                    child: None,
                    args: [
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        // Fail over quickly: a primary unreachable for a
                        // second is down.
                        "--cluster-node-timeout",
                        "1000",
                        // A replica whose primary died fails over however
                        // long ago it last heard from it. By default a
                        // replica out of touch for more than ten node
                        // timeouts never does, and on a loaded machine
                        // the failure can take that long to be agreed: a
                        // CI run waited 120 s for a promotion that could
                        // no longer happen.
                        "--cluster-replica-validity-factor",
                        "0",
                    ]
                    .map(str::to_owned)
                    .to_vec(),
                }
            })
            .collect();
        for node in &mut nodes {
            node.spawn();
        }
        let mut cluster = RedisCluster { _dir: dir, nodes };
        for node in &mut cluster.nodes {
            node.wait_until_answering()?;
        }
        let addrs: Vec<String> = cluster
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "redis-cli --cluster create: {}",
                String::from_utf8_lossy(&out.stdout)
            ));
        }
        cluster.settle()?;
        Ok(cluster)
    }

    /// The steps of a new cluster's start after `--cluster create`, each
    /// named in the error, with any node that died meanwhile.
    fn settle(&mut self) -> Result<(), String> {
        type Step = fn(&RedisCluster) -> Result<(), String>;
        let steps: [(&str, Step); 3] = [
            ("every node says cluster_state:ok", Self::wait_until_ok),
            (
                "every primary has an online replica",
                Self::wait_until_replicated,
            ),
            (
                "every node lists every node in CLUSTER SLOTS",
                Self::wait_until_replicas_advertised,
            ),
        ];
        for (step, wait) in steps {
            if let Err(why) = wait(self) {
                let dead: Vec<String> = self.nodes.iter_mut().filter_map(Node::exited).collect();
                return Err(format!("{step}: {why} {}", dead.join("; ")));
            }
        }
        Ok(())
    }

    /// Waits until every running primary has an online replica, and every
    /// running node's view of the cluster says so (clients learn replicas
    /// from `CLUSTER SLOTS`, which lags replication by a gossip round).
    pub fn wait_until_replicated(&self) -> Result<(), String> {
        self.wait_for(|| {
            self.nodes.iter().filter(|n| n.child.is_some()).all(|n| {
                cli(n.port, &["info", "replication"]).is_some_and(|o| {
                    !o.contains("role:master")
                        || (o.contains("connected_slaves:1") && o.contains("state=online"))
                }) && cli(n.port, &["cluster", "nodes"])
                    .is_some_and(|o| every_primary_has_a_replica(&o))
            })
        })
    }

    /// Waits until every node lists every replica in `CLUSTER SLOTS`,
    /// which is where clients learn of replicas (`--store-read-replicas`).
    /// Redis 7.0 leaves out a replica whose replication offset is 0, so a
    /// fresh cluster is written to first.
    fn wait_until_replicas_advertised(&self) -> Result<(), String> {
        let first = self.nodes[0].port;
        for i in 0..30 {
            cli(first, &["-c", "set", &format!("harness:{i}"), "x"])
                .ok_or("a write to the new cluster failed")?;
        }
        self.wait_for(|| {
            self.nodes.iter().all(|n| {
                cli(n.port, &["cluster", "slots"]).is_some_and(|o| {
                    self.nodes
                        .iter()
                        .all(|m| o.lines().any(|l| l == m.port.to_string()))
                })
            })
        })
    }

    fn wait_for(&self, ready: impl FnMut() -> bool) -> Result<(), String> {
        wait_for("the cluster's readiness", ready)
    }

    /// Waits until every running node reports `cluster_state:ok`.
    pub fn wait_until_ok(&self) -> Result<(), String> {
        self.wait_for(|| {
            self.nodes.iter().filter(|n| n.child.is_some()).all(|n| {
                cli(n.port, &["cluster", "info"]).is_some_and(|o| o.contains("cluster_state:ok"))
            })
        })
    }

    /// `redis://127.0.0.1:P1,127.0.0.1:P2,...`: every node as a seed.
    pub fn seeds(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis://{}", hosts.join(","))
    }

    /// `redis://` + every node, the `first` node's address first (the
    /// first seed is the one a client tries first).
    pub fn seeds_from(&self, first: usize) -> String {
        let mut hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        hosts.rotate_left(first);
        format!("redis://{}", hosts.join(","))
    }

    /// How many nodes it has (running or not).
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// `redis-cli` against node `i`.
    pub fn cli(&self, i: usize, args: &[&str]) -> Option<String> {
        cli(self.nodes[i].port, args)
    }

    /// What `GET key` holds on the key's primary (found through any
    /// running node, following redirects), `None` for nothing.
    pub fn get(&self, key: &str) -> Option<String> {
        self.read(&["get", key])
    }

    /// A read command's string answer on its key's primary (found through
    /// any running node, following redirects), `None` for nil.
    fn read(&self, command: &[&str]) -> Option<String> {
        let node = self
            .nodes
            .iter()
            .find(|n| n.child.is_some())
            .expect("a running node");
        let args = [&["-c", "--no-raw"][..], command].concat();
        let out = cli(node.port, &args).unwrap_or_else(|| panic!("redis-cli {command:?} failed"));
        assert!(!out.starts_with("(error)"), "{command:?}: {out}");
        let out = out.trim_end_matches('\n');
        (out != "(nil)").then(|| out.trim_matches('"').to_owned())
    }

    /// The indexes of the nodes that are replicas now.
    pub fn replicas(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| {
                self.nodes[i].child.is_some()
                    && cli(self.nodes[i].port, &["role"]).is_some_and(|o| o.starts_with("slave"))
            })
            .collect()
    }

    /// The index of the replica of the primary at `primary`.
    pub fn replica_of(&self, primary: usize) -> usize {
        let port = self.nodes[primary].port.to_string();
        self.replicas()
            .into_iter()
            .find(|&i| {
                cli(self.nodes[i].port, &["info", "replication"])
                    .is_some_and(|o| o.lines().any(|l| l.trim() == format!("master_port:{port}")))
            })
            .expect("a replica of that primary")
    }

    /// Waits until every running node flags node `i` as failed (`fail` or
    /// `fail?`) in `CLUSTER NODES`.
    pub fn wait_until_flagged_failed(&self, i: usize) -> Result<(), String> {
        let addr = format!("127.0.0.1:{}@", self.nodes[i].port);
        wait_for("a failure flag", || {
            self.nodes.iter().filter(|n| n.child.is_some()).all(|n| {
                cli(n.port, &["cluster", "nodes"]).is_some_and(|o| {
                    o.lines().any(|l| {
                        l.contains(&addr) && l.split(' ').nth(2).is_some_and(|f| f.contains("fail"))
                    })
                })
            })
        })
    }

    /// Waits until node `i` is a primary (a replica promoted by a
    /// failover) and the cluster is whole again.
    pub fn wait_until_primary(&self, i: usize) -> Result<(), String> {
        wait_for("a promotion", || {
            self.cli(i, &["role"])
                .is_some_and(|o| o.starts_with("master"))
        })?;
        self.wait_until_ok()
    }

    /// The index of a node that is a primary now.
    pub fn a_primary(&self) -> usize {
        self.nodes
            .iter()
            .position(|n| {
                n.child.is_some() && cli(n.port, &["role"]).is_some_and(|o| o.starts_with("master"))
            })
            .expect("a primary")
    }

    /// `kill -9` of node `i`.
    pub fn kill9(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// Starts node `i` again after [`kill9`](Self::kill9) (from its AOF
    /// and `nodes.conf`: it rejoins as it was, or as a replica of the
    /// node promoted meanwhile) and waits for it to answer.
    pub fn restart(&mut self, i: usize) -> Result<(), String> {
        let node = &mut self.nodes[i];
        if node.child.is_none() {
            node.spawn();
        }
        node.wait_until_answering()
    }

    /// What `HGET key field` holds on the key's primary (found through any
    /// running node, following redirects), `None` for nothing.
    pub fn hget(&self, key: &str, field: &str) -> Option<String> {
        self.read(&["hget", key, field])
    }

    /// Kills every node (the whole cluster down).
    pub fn kill_all(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
    }

    /// Restarts every killed node (from its AOF and `nodes.conf`) and waits
    /// for the cluster to be whole again.
    pub fn restart_all(&mut self) -> Result<(), String> {
        for node in &mut self.nodes {
            if node.child.is_none() {
                node.spawn();
            }
        }
        self.wait_until_ok()?;
        self.wait_until_replicated()
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        self.kill_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ports for Redis come from below the ephemeral range (so no
    /// outgoing connection takes one between its choice and its use),
    /// bus port included, and never twice in one process.
    #[test]
    fn redis_ports_are_below_the_ephemeral_range_and_handed_out_once() {
        let start = ephemeral_start().expect("the ephemeral range");
        let ports: Vec<u16> = (0..300).map(|_| free_port()).collect();
        let distinct: std::collections::HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len(), "a port handed out twice");
        if start > PORT_BASE + 11_000 {
            for port in ports {
                assert!(
                    u32::from(port) + 10_000 < u32::from(start),
                    "{port} or its bus port is ephemeral (range starts at {start})"
                );
            }
        }
    }

    /// A node that cannot start (its cluster bus port taken) is reported
    /// at once with its log's reason, instead of a silent wait for
    /// readiness that times out.
    #[test]
    fn a_redis_node_that_dies_at_start_says_why() {
        if let Err(why) = installed() {
            crate::harness::missing_tool("Redis", &why);
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let _bus = TcpListener::bind(("127.0.0.1", port + 10_000)).unwrap();
        let mut node = Node {
            port,
            dir: dir.path().to_owned(),
            child: None,
            args: ["--cluster-enabled", "yes"].map(str::to_owned).to_vec(),
        };
        node.spawn();
        let started = Instant::now();
        let why = node
            .wait_until_answering()
            .expect_err("the bus port is taken");
        node.kill();
        assert!(why.contains("exited"), "{why}");
        assert!(why.contains("in use"), "the log's reason: {why}");
        assert!(started.elapsed() < READY_WITHIN, "reported at once");
    }
}

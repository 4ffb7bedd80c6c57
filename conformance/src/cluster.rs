//! A Redis Cluster for tests: primaries and replicas of Debian's
//! `redis-server` on free loopback ports, each with AOF `appendfsync
//! always`, joined with `redis-cli --cluster create`, killed and removed
//! when dropped.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One node.
struct Node {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

/// A running cluster.
pub struct RedisCluster {
    _dir: tempfile::TempDir,
    nodes: Vec<Node>,
}

/// A port whose cluster bus port (+10000) is free too.
fn free_port() -> u16 {
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
        let port = listener.local_addr().unwrap().port();
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

fn cli(port: u16, args: &[&str]) -> Option<String> {
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
            .args(["--bind", "127.0.0.1", "--cluster-enabled", "yes"])
            .args(["--cluster-config-file", "nodes.conf"])
            // Fail over quickly: a primary unreachable for a second is down.
            .args(["--cluster-node-timeout", "1000"])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .args(["--save", "", "--daemonize", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(self.dir.join("redis.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server");
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl RedisCluster {
    /// Starts `primaries` primaries with one replica each, or says why it
    /// cannot (no `redis-server` here), so the caller can skip.
    pub fn start(primaries: usize) -> Result<RedisCluster, String> {
        if Command::new("redis-server")
            .arg("--version")
            .output()
            .is_err()
        {
            return Err("redis-server is not installed".into());
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut nodes: Vec<Node> = (0..primaries * 2)
            .map(|i| {
                let node_dir = dir.path().join(format!("node{i}"));
                std::fs::create_dir_all(&node_dir).unwrap();
                Node {
                    port: free_port(),
                    dir: node_dir,
                    child: None,
                }
            })
            .collect();
        for node in &mut nodes {
            node.spawn();
        }
        let cluster = RedisCluster { _dir: dir, nodes };
        for node in &cluster.nodes {
            cluster.wait_for(|| cli(node.port, &["ping"]).is_some_and(|o| o.contains("PONG")))?;
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
        cluster.wait_until_ok()?;
        cluster.wait_until_replicated()?;
        Ok(cluster)
    }

    /// Waits until every running primary has an online replica.
    pub fn wait_until_replicated(&self) -> Result<(), String> {
        self.wait_for(|| {
            self.nodes.iter().filter(|n| n.child.is_some()).all(|n| {
                cli(n.port, &["info", "replication"]).is_some_and(|o| {
                    !o.contains("role:master")
                        || (o.contains("connected_slaves:1") && o.contains("state=online"))
                })
            })
        })
    }

    fn wait_for(&self, mut ready: impl FnMut() -> bool) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ready() {
            if Instant::now() > deadline {
                return Err("the cluster did not become ready".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
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

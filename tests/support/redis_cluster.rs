//! A real 3-master Redis Cluster on loopback ports, for the tests that
//! prove the services run unchanged on one: `redis-server` in cluster mode
//! and `redis-cli --cluster create`, data in memory only, stopped on drop.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

pub struct RedisCluster {
    pub ports: Vec<u16>,
    dir: PathBuf,
    nodes: Vec<Option<Child>>,
}

/// A port whose cluster bus port (+10000) is free too.
fn free_port() -> u16 {
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

async fn redis_cli(args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(args)
        .output()
        .await
        .expect("redis-cli runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl RedisCluster {
    pub async fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("jyt-redis-cluster-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let mut cluster = Self {
            nodes: Vec::new(),
            ports: ports.clone(),
            dir,
        };
        for port in &ports {
            let node = cluster.spawn_node(*port);
            cluster.nodes.push(Some(node));
        }
        for port in &ports {
            let p = port.to_string();
            jyt_testkit::eventually(Duration::from_secs(10), "cluster node answers", || {
                let p = p.clone();
                async move { (redis_cli(&["-p", &p, "ping"]).await.trim() == "PONG").then_some(()) }
            })
            .await;
        }
        let addresses: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let mut args = vec!["--cluster", "create"];
        args.extend(addresses.iter().map(String::as_str));
        args.extend(["--cluster-replicas", "0", "--cluster-yes"]);
        redis_cli(&args).await;
        cluster.wait_ok().await;
        cluster
    }

    fn spawn_node(&self, port: u16) -> Child {
        Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                &self.dir.join(format!("nodes-{port}.conf")).to_string_lossy(),
                "--cluster-node-timeout",
                "2000",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                &self.dir.to_string_lossy(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server starts")
    }

    /// Every node reports `cluster_state:ok`.
    pub async fn wait_ok(&self) {
        for port in &self.ports {
            let p = port.to_string();
            jyt_testkit::eventually(Duration::from_secs(30), "cluster_state:ok", || {
                let p = p.clone();
                async move {
                    redis_cli(&["-p", &p, "cluster", "info"])
                        .await
                        .contains("cluster_state:ok")
                        .then_some(())
                }
            })
            .await;
        }
    }

    /// `redis://…` of every master, comma-separated (the settings' list form).
    pub fn urls(&self) -> String {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The port of the master that serves `key`'s slot.
    pub async fn master_of(&self, key: &str) -> Option<u16> {
        let p = self.ports[0].to_string();
        let slot: u16 = redis_cli(&["-p", &p, "cluster", "keyslot", key])
            .await
            .trim()
            .parse()
            .unwrap();
        let nodes = redis_cli(&["-p", &p, "cluster", "nodes"]).await;
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let Some(address) = fields.get(1) else { continue };
            let port: u16 = address
                .split(['@', ':'])
                .nth(1)
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            for range in fields.iter().skip(8) {
                let (lo, hi) = range.split_once('-').unwrap_or((range, range));
                if let (Ok(lo), Ok(hi)) = (lo.parse::<u16>(), hi.parse::<u16>())
                    && (lo..=hi).contains(&slot)
                {
                    return Some(port);
                }
            }
        }
        None
    }

    /// Kill a master and start it again on the same port, empty (no
    /// persistence): what a crashed Redis node does.
    pub async fn restart_empty(&mut self, port: u16) {
        let i = self.ports.iter().position(|p| *p == port).unwrap();
        if let Some(mut node) = self.nodes[i].take() {
            node.kill().await.unwrap();
        }
        self.nodes[i] = Some(self.spawn_node(port));
        self.wait_ok().await;
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in self.nodes.iter_mut().flatten() {
            let _ = node.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

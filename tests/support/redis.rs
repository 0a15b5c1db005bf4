//! Real Redis servers for the replay store's tests: Debian's `redis-server` on a free loopback
//! port, in a private directory, killed and removed when dropped; commands sent with
//! `redis-cli`. `make test` installs the package (scripts/install-redis.sh).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to answer its first `PING`.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// One `redis-server` process.
pub struct RedisServer {
    pub port: u16,
    /// `--requirepass`, for `redis-cli`.
    password: Option<String>,
    extra: Vec<String>,
    dir: PathBuf,
    child: Option<Child>,
}

impl RedisServer {
    /// A server on a free loopback port with `extra` arguments (`--requirepass`, ...).
    pub fn start(extra: &[&str]) -> RedisServer {
        RedisServer::start_on(free_port(false), extra)
    }

    /// A server on `port`.
    pub fn start_on(port: u16, extra: &[&str]) -> RedisServer {
        let mut random = [0u8; 4];
        gate::random::fill(&mut random);
        let suffix: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let dir = std::env::temp_dir().join(format!(
            "sig-gate-test-redis-{}-{port}-{suffix}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("create the server's directory");
        let password = extra
            .windows(2)
            .find(|pair| pair[0] == "--requirepass")
            .map(|pair| pair[1].to_owned());
        let mut server = RedisServer {
            port,
            password,
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            dir,
            child: None,
        };
        server.spawn();
        server
    }

    /// `redis://127.0.0.1:<port>` (without the password).
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kill the server (SIGKILL: no goodbye to its clients) and wait for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start the server again on the same port, with `extra` arguments in place of the first
    /// ones when given.
    pub fn restart(&mut self, extra: Option<&[&str]>) {
        self.kill();
        if let Some(extra) = extra {
            self.extra = extra.iter().map(|s| (*s).to_owned()).collect();
            self.password = extra
                .windows(2)
                .find(|pair| pair[0] == "--requirepass")
                .map(|pair| pair[1].to_owned());
        }
        self.spawn();
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.join("redis.log")).expect("create the log");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|err| {
                panic!(
                    "cannot run redis-server ({err}): `make test` installs it \
                     (scripts/install-redis.sh), or apt-get install redis-server"
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        while self.cli_quiet(&["PING"]).as_deref() != Some("PONG") {
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default();
                panic!("redis-server on port {} did not start: {log}", self.port);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Run `redis-cli <args>` against this server; its trimmed stdout. Panics if it fails.
    pub fn cli(&self, args: &[&str]) -> String {
        self.cli_quiet(args)
            .unwrap_or_else(|| panic!("redis-cli {args:?} on port {} failed", self.port))
    }

    /// [`RedisServer::cli`] that says `None` instead of panicking.
    pub fn cli_quiet(&self, args: &[&str]) -> Option<String> {
        let mut command = Command::new("redis-cli");
        command.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]);
        if let Some(password) = &self.password {
            command.env("REDISCLI_AUTH", password);
        }
        let output = command.args(args).stdin(Stdio::null()).output().ok()?;
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Three masters of a Redis Cluster, each on a free port whose cluster bus port (+10000) is
/// free too.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                RedisServer::start_on(
                    free_port(true),
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        "5000",
                    ],
                )
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port))
            .collect();
        let mut create = vec!["--cluster", "create"];
        create.extend(addrs.iter().map(String::as_str));
        create.push("--cluster-yes");
        nodes[0].cli(&create);
        let cluster = RedisCluster { nodes };
        cluster.wait_ok();
        cluster
    }

    /// Start every node again on its port, from its own `nodes.conf`, and wait until the
    /// cluster is whole.
    pub fn restart(&mut self) {
        for node in &mut self.nodes {
            node.restart(None);
        }
        self.wait_ok();
    }

    fn wait_ok(&self) {
        let deadline = Instant::now() + START_TIMEOUT;
        for node in &self.nodes {
            while !node.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok") {
                assert!(Instant::now() < deadline, "the cluster did not form");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// `redis-cluster://` with the given nodes as seeds.
    pub fn url(&self, seeds: &[usize]) -> String {
        let seeds: Vec<String> = seeds
            .iter()
            .map(|&i| format!("127.0.0.1:{}", self.nodes[i].port))
            .collect();
        format!("redis-cluster://{}", seeds.join(","))
    }
}

/// A loopback port nobody listens on right now (with `bus`, its +10000 neighbour too).
pub fn free_port(bus: bool) -> u16 {
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
        let port = listener.local_addr().expect("local addr").port();
        if !bus {
            return port;
        }
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

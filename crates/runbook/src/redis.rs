//! Real Redis servers for the shared replay store: Debian's `redis-server` on a free loopback
//! port, in a private directory, without persistence, killed and its directory removed when
//! dropped; commands sent with `redis-cli`. The scorecard's replay store scenarios and the
//! integration tests (`tests/replay_store.rs`) start theirs here. `make test` installs the
//! package (`scripts/install-redis.sh`); without it, starting a server is an error saying so.
//!
//! Starting, killing and asking a server block the calling thread (for a start: until the
//! server answers `PING`, normally well under a second); async callers run them with
//! `tokio::task::spawn_blocking`.

use std::io::ErrorKind;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::HarnessError;

/// How long a server may take to answer its first `PING`.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// What to do when `redis-server` or `redis-cli` is missing.
pub const INSTALL_HINT: &str = "run scripts/install-redis.sh (as `make test` does), or \
                                apt-get install redis-server";

/// The server program, found on `PATH`.
const SERVER: &str = "redis-server";

/// Free ports [`RedisServer::start`] tries: another process may take one between the probe
/// and the server's bind.
const PORT_ATTEMPTS: usize = 3;

/// Why a server did not start: a program is missing (no other port will help), or anything
/// else.
#[derive(Debug)]
enum StartError {
    NotInstalled(HarnessError),
    Failed(HarnessError),
}

impl From<StartError> for HarnessError {
    fn from(err: StartError) -> HarnessError {
        match err {
            StartError::NotInstalled(err) | StartError::Failed(err) => err,
        }
    }
}

/// One `redis-server` process. Dropping it kills the server and removes its directory.
#[derive(Debug)]
pub struct RedisServer {
    /// [`SERVER`], except in the test of a missing program.
    program: &'static str,
    port: u16,
    /// `--requirepass`, for `redis-cli`.
    password: Option<String>,
    extra: Vec<String>,
    dir: PathBuf,
    child: Option<Child>,
}

impl RedisServer {
    /// A server on a free loopback port with `extra` arguments (`--requirepass`, ...). A
    /// server that exits before answering (its port taken meanwhile) is tried again on another
    /// port, up to [`PORT_ATTEMPTS`] in all; a missing program fails at once.
    pub fn start(extra: &[&str]) -> Result<RedisServer, HarnessError> {
        RedisServer::start_anywhere(SERVER, extra)
    }

    /// A server on `port`.
    pub fn start_on(port: u16, extra: &[&str]) -> Result<RedisServer, HarnessError> {
        Ok(RedisServer::start_program(SERVER, port, extra)?)
    }

    fn start_anywhere(program: &'static str, extra: &[&str]) -> Result<RedisServer, HarnessError> {
        let mut attempts = 1;
        loop {
            match RedisServer::start_program(program, free_port(false)?, extra) {
                Ok(server) => return Ok(server),
                Err(StartError::Failed(_)) if attempts < PORT_ATTEMPTS => attempts += 1,
                Err(err) => return Err(err.into()),
            }
        }
    }

    fn start_program(
        program: &'static str,
        port: u16,
        extra: &[&str],
    ) -> Result<RedisServer, StartError> {
        let mut random = [0u8; 4];
        gate::random::fill(&mut random);
        let suffix: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let dir = std::env::temp_dir().join(format!(
            "sig-gate-redis-{}-{port}-{suffix}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).map_err(|e| {
            StartError::Failed(HarnessError::new(format!("creating {}", dir.display()), e))
        })?;
        let mut server = RedisServer {
            program,
            port,
            password: password_of(extra),
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            dir,
            child: None,
        };
        // On an error the server is dropped: killed, and its directory removed.
        server.spawn()?;
        Ok(server)
    }

    /// The loopback port it listens on.
    pub fn port(&self) -> u16 {
        self.port
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

    /// Start the server again on the same port (killing it first if it runs), with `extra`
    /// arguments in place of the first ones when given.
    pub fn restart(&mut self, extra: Option<&[&str]>) -> Result<(), HarnessError> {
        self.kill();
        if let Some(extra) = extra {
            self.extra = extra.iter().map(|s| (*s).to_owned()).collect();
            self.password = password_of(extra);
        }
        Ok(self.spawn()?)
    }

    fn spawn(&mut self) -> Result<(), StartError> {
        let what = || format!("redis-server on port {}", self.port);
        let failed = |e: std::io::Error| StartError::Failed(HarnessError::new(what(), e));
        let log_path = self.dir.join("redis.log");
        let log = std::fs::File::create(&log_path).map_err(failed)?;
        let stdout = log.try_clone().map_err(failed)?;
        let child = Command::new(self.program)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(log)
            .spawn()
            .map_err(|err| match err.kind() {
                ErrorKind::NotFound => StartError::NotInstalled(not_installed(self.program)),
                _ => StartError::Failed(HarnessError::new(
                    format!("cannot run {}", self.program),
                    err,
                )),
            })?;
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        while self.ping()? != Some("PONG".to_owned()) {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                return Err(StartError::Failed(HarnessError::new(
                    what(),
                    format!("exited ({status}): {log}"),
                )));
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                return Err(StartError::Failed(HarnessError::new(
                    what(),
                    format!("no PONG within {} s: {log}", START_TIMEOUT.as_secs()),
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// `PING`'s answer, or `None` when the server does not answer (yet); an error only when
    /// `redis-cli` cannot run at all.
    fn ping(&self) -> Result<Option<String>, StartError> {
        let output = self
            .command(&["PING"])
            .output()
            .map_err(|err| match err.kind() {
                ErrorKind::NotFound => StartError::NotInstalled(not_installed("redis-cli")),
                _ => StartError::Failed(HarnessError::new("cannot run redis-cli", err)),
            })?;
        Ok(output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned()))
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("redis-cli");
        command.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]);
        if let Some(password) = &self.password {
            // The environment, not an argument: nothing else on the machine sees it.
            command.env("REDISCLI_AUTH", password);
        }
        command.args(args).stdin(Stdio::null());
        command
    }

    /// Run `redis-cli <args>` against this server: its trimmed stdout, or an error when it
    /// cannot run or exits with a failure.
    pub fn cli(&self, args: &[&str]) -> Result<String, HarnessError> {
        let what = || format!("redis-cli {args:?} on port {}", self.port);
        let output = self
            .command(args)
            .output()
            .map_err(|e| HarnessError::new(what(), e))?;
        if !output.status.success() {
            return Err(HarnessError::new(
                what(),
                String::from_utf8_lossy(&output.stderr).trim(),
            ));
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The value after `--requirepass` among server arguments.
fn password_of(extra: &[&str]) -> Option<String> {
    extra
        .windows(2)
        .find(|pair| pair[0] == "--requirepass")
        .map(|pair| pair[1].to_owned())
}

fn not_installed(program: &str) -> HarnessError {
    HarnessError(format!("{program} is not installed: {INSTALL_HINT}"))
}

/// Three masters of a Redis Cluster, each on a free port whose cluster bus port (+10000) is
/// free too.
#[derive(Debug)]
pub struct RedisCluster {
    /// The nodes, in the order `redis-cli --cluster create` was given them.
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Start three nodes, join them into one cluster and wait until it is whole.
    pub fn start() -> Result<RedisCluster, HarnessError> {
        let nodes = (0..3)
            .map(|_| {
                RedisServer::start_on(
                    free_port(true)?,
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
            .collect::<Result<Vec<_>, _>>()?;
        let addrs: Vec<String> = nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port))
            .collect();
        let mut create = vec!["--cluster", "create"];
        create.extend(addrs.iter().map(String::as_str));
        create.push("--cluster-yes");
        nodes[0].cli(&create)?;
        let cluster = RedisCluster { nodes };
        cluster.wait_ok()?;
        Ok(cluster)
    }

    /// Start every node again on its port, from its own `nodes.conf`, and wait until the
    /// cluster is whole.
    pub fn restart(&mut self) -> Result<(), HarnessError> {
        for node in &mut self.nodes {
            node.restart(None)?;
        }
        self.wait_ok()
    }

    fn wait_ok(&self) -> Result<(), HarnessError> {
        let deadline = Instant::now() + START_TIMEOUT;
        for node in &self.nodes {
            while !node.cli(&["CLUSTER", "INFO"])?.contains("cluster_state:ok") {
                if Instant::now() > deadline {
                    return Err(HarnessError::new(
                        "Redis Cluster",
                        format!("not whole within {} s", START_TIMEOUT.as_secs()),
                    ));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
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
pub fn free_port(bus: bool) -> Result<u16, HarnessError> {
    loop {
        let listener =
            TcpListener::bind("127.0.0.1:0").map_err(|e| HarnessError::new("binding port 0", e))?;
        let port = listener
            .local_addr()
            .map_err(|e| HarnessError::new("binding port 0", e))?
            .port();
        if !bus {
            return Ok(port);
        }
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return Ok(port);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_comes_from_requirepass() {
        assert_eq!(
            password_of(&["--maxmemory", "1mb", "--requirepass", "pw"]).as_deref(),
            Some("pw")
        );
        assert_eq!(password_of(&["--requirepass"]), None);
        assert_eq!(password_of(&[]), None);
    }

    #[test]
    fn a_missing_server_program_is_an_error_saying_how_to_install_it() {
        let program = "redis-server-that-is-not-installed";
        let err = RedisServer::start_anywhere(program, &[]).expect_err("no such program");
        let message = err.to_string();
        assert!(
            message.starts_with(&format!("{program} is not installed")),
            "{message}"
        );
        assert!(message.contains("scripts/install-redis.sh"), "{message}");
    }

    /// `make test-rust` installs redis-server first (scripts/install-redis.sh).
    #[test]
    fn starts_on_a_free_loopback_port_answers_and_stops_when_dropped() {
        let server = RedisServer::start(&[]).unwrap_or_else(|err| panic!("{err}"));
        assert!(server.url().starts_with("redis://127.0.0.1:"));
        assert_eq!(server.cli(&["PING"]).expect("PING"), "PONG");
        let port = server.port();
        drop(server);
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "nothing listens once dropped"
        );
    }
}

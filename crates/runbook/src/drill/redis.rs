//! The drill's Redis: one `redis-server` (Debian's package; `scripts/install-redis.sh` installs
//! it) on a free loopback port, in a directory of the drill's work directory, without
//! persistence, killed when dropped. The replicas' phase points both gates' `GATE_REPLAY_STORE`
//! at it. Readiness is its answer to `PING`, read over a plain TCP connection, so nothing but
//! the server itself needs to be installed.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::HarnessError;

/// How long the server may take to answer its first `PING` (a busy two-core machine).
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Free ports tried before giving up (another process may take one between the probe and
/// the server's bind).
const PORT_ATTEMPTS: usize = 3;

/// The server's program, looked up on `PATH`.
pub(super) const REDIS_SERVER: &str = "redis-server";

/// What the phase says when the server cannot be run at all.
pub(super) const INSTALL_HINT: &str = "redis-server is not on PATH: run scripts/install-redis.sh \
     (as `make test-runbook` and `make hmac-rotation-drill` do) or install Debian's redis-server";

/// One running `redis-server`.
#[derive(Debug)]
pub(super) struct Redis {
    port: u16,
    child: Child,
}

impl Redis {
    /// Start `program` (normally [`REDIS_SERVER`]) on a free loopback port, its working
    /// directory under `dir`; wait until it answers `PING`. A program that cannot be found is
    /// an error that says how to install it.
    pub(super) async fn start(program: &str, dir: &Path) -> Result<Redis, HarnessError> {
        let mut last = None;
        for _ in 0..PORT_ATTEMPTS {
            match Redis::start_once(program, dir).await {
                Ok(redis) => return Ok(redis),
                Err(Failure::NotInstalled(err)) => return Err(err),
                Err(Failure::Other(err)) => last = Some(err),
            }
        }
        Err(last.unwrap_or_else(|| HarnessError::new("redis-server", "did not start")))
    }

    async fn start_once(program: &str, dir: &Path) -> Result<Redis, Failure> {
        let port = free_port()
            .map_err(|e| Failure::Other(HarnessError::new("a free port for redis-server", e)))?;
        let dir = dir.join(format!("redis-{port}"));
        std::fs::create_dir_all(&dir)
            .map_err(|e| Failure::Other(HarnessError::new("redis-server's directory", e)))?;
        let mut command = Command::new(program);
        command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let child = command.spawn().map_err(|err| {
            if err.kind() == std::io::ErrorKind::NotFound {
                Failure::NotInstalled(HarnessError::new(
                    format!("starting {program}"),
                    INSTALL_HINT,
                ))
            } else {
                Failure::Other(HarnessError::new(format!("starting {program}"), err))
            }
        })?;
        let mut redis = Redis { port, child };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if redis.ping().await {
                return Ok(redis);
            }
            if let Ok(Some(status)) = redis.child.try_wait() {
                // Most likely the port was taken in the meantime: the caller tries another.
                return Err(Failure::Other(HarnessError::new(
                    format!("redis-server on port {port}"),
                    format!("exited with {status} before answering PING"),
                )));
            }
            if Instant::now() > deadline {
                return Err(Failure::Other(HarnessError::new(
                    format!("redis-server on port {port}"),
                    format!("no PONG within {} s", START_TIMEOUT.as_secs()),
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `redis://127.0.0.1:<port>`, for `GATE_REPLAY_STORE`.
    pub(super) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Whether the server answers `PING` with `+PONG` within half a second.
    async fn ping(&self) -> bool {
        let exchange = async {
            let mut stream = TcpStream::connect(("127.0.0.1", self.port)).await.ok()?;
            stream.write_all(b"PING\r\n").await.ok()?;
            let mut answer = [0u8; 7];
            stream.read_exact(&mut answer).await.ok()?;
            Some(&answer == b"+PONG\r\n")
        };
        matches!(
            tokio::time::timeout(Duration::from_millis(500), exchange).await,
            Ok(Some(true))
        )
    }

    /// Kill the server and wait for it to exit.
    pub(super) async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Why one start attempt failed: the server is missing (no use trying another port), or
/// anything else.
enum Failure {
    NotInstalled(HarnessError),
    Other(HarnessError),
}

/// A loopback port nobody listens on right now.
fn free_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_server_names_the_install_script() {
        let work = crate::process::Workdir::create("redis-test").expect("workdir");
        let err = Redis::start("redis-server-that-is-not-installed", work.path())
            .await
            .expect_err("no such program");
        assert!(
            err.to_string().contains("scripts/install-redis.sh"),
            "{err}"
        );
    }

    /// `make test-rust` installs redis-server first (scripts/install-redis.sh).
    #[tokio::test]
    async fn starts_on_loopback_answers_ping_and_stops() {
        let work = crate::process::Workdir::create("redis-test").expect("workdir");
        let redis = Redis::start(REDIS_SERVER, work.path())
            .await
            .unwrap_or_else(|err| panic!("{err}"));
        assert!(redis.url().starts_with("redis://127.0.0.1:"));
        assert!(redis.ping().await);
        let port = redis.port;
        redis.stop().await;
        assert!(
            TcpStream::connect(("127.0.0.1", port)).await.is_err(),
            "nothing listens once stopped"
        );
    }
}

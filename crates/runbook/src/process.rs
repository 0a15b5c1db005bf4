//! Real `sig-gate serve` processes ("generations"), started the way a deployment starts them.
//!
//! Each generation gets a cleared environment plus exactly the variables its [`GateEnv`] names,
//! runs in a private working directory (so no `config/sig-gate.toml` of the operator's leaks
//! in), logs JSON on stderr (drained by a task into a short ring buffer, so the pipe never
//! fills and a failure can show the gate's last words), and has its own admin listener on a
//! free port, read from its `listening` log line. The proxy listener is either its own
//! (`GATE_LISTEN`, bound with `SO_REUSEPORT`) or one the harness bound once and passes to every
//! generation as fd 3 with `LISTEN_FDS=1`, as systemd socket activation does: connections
//! queue on the one socket while generations come and go, which is what makes a redeploy
//! lossless. Each generation leads a process group of its own (so a `--gate-bin` wrapper
//! script and the gate it starts are one unit): SIGTERM goes to the group, and dropping a
//! [`GateProcess`] kills the group, on every exit path.

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use command_fds::{CommandFdExt, FdMapping};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStderr, Command};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::HarnessError;
use super::client::{Credential, Http};
use super::exposition::Scrape;
use gate::config::vars;

/// Log lines kept per generation.
const LOG_LINES: usize = 200;

/// How long a generation may take to log `listening` (a debug build on a busy laptop).
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The file descriptor systemd passes the first socket on.
const LISTEN_FD: i32 = 3;

/// A private directory for one run's children, removed when dropped.
#[derive(Debug)]
pub struct Workdir {
    path: PathBuf,
}

impl Workdir {
    /// Create `$TMPDIR/sig-gate-<tool>-<pid>-<random>`, readable by the owner only.
    pub fn create(tool: &str) -> std::io::Result<Workdir> {
        use std::os::unix::fs::DirBuilderExt;
        let mut random = [0u8; 4];
        gate::random::fill(&mut random);
        let suffix: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let path =
            std::env::temp_dir().join(format!("sig-gate-{tool}-{}-{suffix}", std::process::id()));
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        Ok(Workdir { path })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// The environment of one generation: the variables of README.md (Configuration), nothing else
/// from the harness's own environment. `Debug` lists names only (values may be secrets).
#[derive(Clone, Default)]
pub struct GateEnv {
    vars: Vec<(String, String)>,
}

impl GateEnv {
    /// A gate in front of `upstream` with JSON logs and an admin listener on a free loopback
    /// port; the proxy listener is inherited or, without one, a free loopback port.
    pub fn new(upstream: &str) -> GateEnv {
        GateEnv::default()
            .set(vars::UPSTREAM, upstream)
            .set(vars::LOG_FORMAT, "json")
            .set(vars::LISTEN, "127.0.0.1:0")
            .set(vars::ADMIN_LISTEN, "127.0.0.1:0")
    }

    /// Set (or replace) a variable.
    pub fn set(mut self, name: &str, value: impl Into<String>) -> GateEnv {
        self.vars.retain(|(n, _)| n != name);
        self.vars.push((name.to_owned(), value.into()));
        self
    }

    /// Unset a variable.
    pub fn unset(mut self, name: &str) -> GateEnv {
        self.vars.retain(|(n, _)| n != name);
        self
    }

    /// `INTERSERVICE_HMAC_SECRET` and `INTERSERVICE_HMAC_KEY_ID` from a credential.
    pub fn current(self, credential: &Credential) -> GateEnv {
        self.set(vars::SECRET, credential.secret())
            .set(vars::KEY_ID, credential.key_id())
    }

    /// `INTERSERVICE_HMAC_SECRET_PREV` and `INTERSERVICE_HMAC_KEY_ID_PREV` from a credential.
    pub fn previous(self, credential: &Credential) -> GateEnv {
        self.set(vars::SECRET_PREV, credential.secret())
            .set(vars::KEY_ID_PREV, credential.key_id())
    }

    /// Retire the previous secret: unset both `_PREV` variables.
    pub fn without_previous(self) -> GateEnv {
        self.unset(vars::SECRET_PREV).unset(vars::KEY_ID_PREV)
    }

    /// A variable's value, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

impl fmt::Debug for GateEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.vars.iter().map(|(name, _)| name))
            .finish()
    }
}

/// Starts generations of one gate binary.
#[derive(Debug, Clone)]
pub struct Launcher {
    program: PathBuf,
    workdir: PathBuf,
    admin: Http,
}

/// A finished [`Launcher::run_once`].
#[derive(Debug)]
pub struct Finished {
    /// Exit code (`None` when killed by a signal).
    pub code: Option<i32>,
    /// Its stdout.
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
}

/// How a start attempt ended.
#[derive(Debug)]
pub enum Start {
    /// The gate logged `listening` (boxed: a process handle is large, a refusal small).
    Running(Box<GateProcess>),
    /// The gate exited before listening (a refused configuration exits 2).
    Refused {
        /// Exit code (`None` when killed by a signal or still running after the deadline).
        code: Option<i32>,
        /// Its stderr.
        stderr: String,
    },
}

impl Launcher {
    /// Generations of `program` (normally this very binary), run in `workdir`.
    pub fn new(program: PathBuf, workdir: &Workdir) -> Launcher {
        Launcher {
            program,
            workdir: workdir.path().to_owned(),
            admin: Http::new(Duration::from_millis(500)),
        }
    }

    /// Start a generation named `name` with `env`; with `listener`, it gets a duplicate of that
    /// socket as fd 3 and `LISTEN_FDS=1` (no `LISTEN_PID`: the pid is not known before spawning).
    pub async fn start(
        &self,
        name: &str,
        env: &GateEnv,
        listener: Option<&std::net::TcpListener>,
    ) -> Result<Start, HarnessError> {
        let fail = |cause: &dyn fmt::Display| HarnessError::new(format!("starting {name}"), cause);
        let mut command = Command::new(&self.program);
        command
            .arg("serve")
            .env_clear()
            .envs(env.vars.iter().map(|(n, v)| (n, v)))
            .current_dir(&self.workdir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(listener) = listener {
            let fd: OwnedFd = listener.try_clone().map_err(|e| fail(&e))?.into();
            command
                .fd_mappings(vec![FdMapping {
                    parent_fd: fd,
                    child_fd: LISTEN_FD,
                }])
                .map_err(|e| fail(&e))?;
            command.env("LISTEN_FDS", "1");
        }
        let mut child = command.spawn().map_err(|e| fail(&e))?;
        let pid = child.id().ok_or_else(|| fail(&"exited at once"))?;
        // Kills the group if this function returns early (an error, a refusal).
        let group = Group::of(pid).map_err(|e| fail(&e))?;
        let stderr = child.stderr.take().ok_or_else(|| fail(&"no stderr pipe"))?;
        let log = Arc::new(Mutex::new(VecDeque::with_capacity(LOG_LINES)));
        let (listening_tx, listening_rx) = oneshot::channel();
        let reader = tokio::spawn(read_log(stderr, Arc::clone(&log), listening_tx));

        match tokio::time::timeout(START_TIMEOUT, listening_rx).await {
            Ok(Ok((proxy_addr, admin_addr))) => Ok(Start::Running(Box::new(GateProcess {
                name: name.to_owned(),
                child,
                group,
                proxy_addr,
                admin_addr,
                log,
                reader,
                admin: self.admin.clone(),
            }))),
            Ok(Err(_stderr_closed)) => {
                let code = match tokio::time::timeout(Duration::from_secs(5), child.wait()).await {
                    Ok(Ok(status)) => status.code(),
                    _ => None,
                };
                let _ = reader.await;
                Ok(Start::Refused {
                    code,
                    stderr: lines(&log).join("\n"),
                })
            }
            Err(_elapsed) => Err(fail(&format!(
                "no `listening` log line within {} s; last lines: {}",
                START_TIMEOUT.as_secs(),
                lines(&log).join(" | ")
            ))),
        }
    }

    /// The directory generations run in (where a scenario may write a configuration file).
    pub fn workdir(&self) -> &Path {
        &self.workdir
    }

    /// Run `program <args>` to completion with `env` alone, in the work directory: the
    /// subcommands that do not serve (`check-config`). Killed, and an error, after `within`.
    pub async fn run_once(
        &self,
        args: &[&str],
        env: &GateEnv,
        within: Duration,
    ) -> Result<Finished, HarnessError> {
        let what = || format!("sig-gate {}", args.join(" "));
        let output = Command::new(&self.program)
            .args(args)
            .env_clear()
            .envs(env.vars.iter().map(|(n, v)| (n, v)))
            .current_dir(&self.workdir)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(within, output)
            .await
            .map_err(|_| HarnessError::new(what(), "did not finish in time"))?
            .map_err(|e| HarnessError::new(what(), e))?;
        Ok(Finished {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }

    /// [`Launcher::start`] for a generation that must come up: a refusal is an error.
    pub async fn start_running(
        &self,
        name: &str,
        env: &GateEnv,
        listener: Option<&std::net::TcpListener>,
    ) -> Result<GateProcess, HarnessError> {
        match self.start(name, env, listener).await? {
            Start::Running(gate) => Ok(*gate),
            Start::Refused { code, stderr } => Err(HarnessError::new(
                format!("starting {name}"),
                format!("exited with {code:?} before listening: {stderr}"),
            )),
        }
    }
}

/// Drain the child's stderr into the ring buffer; report the addresses of the `listening`
/// line once. Returns at end of file (the child exited).
async fn read_log(
    stderr: ChildStderr,
    log: Arc<Mutex<VecDeque<String>>>,
    listening: oneshot::Sender<(SocketAddr, SocketAddr)>,
) {
    let mut listening = Some(listening);
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if listening.is_some()
            && let Some(addrs) = listening_addrs(&line)
            && let Some(sender) = listening.take()
        {
            let _ = sender.send(addrs);
        }
        let mut log = log.lock().expect("gate log lock");
        if log.len() == LOG_LINES {
            log.pop_front();
        }
        log.push_back(line);
    }
}

/// The proxy and admin addresses of a `{"message":"listening",...}` log line.
fn listening_addrs(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    let event: serde_json::Value = serde_json::from_str(line).ok()?;
    if event.get("message")? != "listening" {
        return None;
    }
    let addr = |field: &str| event.get(field)?.as_str()?.parse().ok();
    Some((addr("proxy_addr")?, addr("admin_addr")?))
}

fn lines(log: &Mutex<VecDeque<String>>) -> Vec<String> {
    log.lock().expect("gate log lock").iter().cloned().collect()
}

/// The process group a generation leads (its id is the generation's pid). Dropping it kills
/// the whole group with SIGKILL.
#[derive(Debug)]
struct Group(Pid);

impl Group {
    fn of(pid: u32) -> Result<Group, std::num::TryFromIntError> {
        Ok(Group(Pid::from_raw(i32::try_from(pid)?)))
    }

    fn signal(&self, signal: Signal) -> nix::Result<()> {
        killpg(self.0, signal)
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        // ESRCH (the group is gone: everything exited) is the normal case.
        let _ = self.signal(Signal::SIGKILL);
    }
}

/// One running `sig-gate serve`. Dropping it kills the process and its group.
#[derive(Debug)]
pub struct GateProcess {
    name: String,
    child: Child,
    group: Group,
    proxy_addr: SocketAddr,
    admin_addr: SocketAddr,
    log: Arc<Mutex<VecDeque<String>>>,
    reader: JoinHandle<()>,
    admin: Http,
}

impl GateProcess {
    /// The name the harness gave this generation.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its process id (`None` once it has been waited for).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Its proxy listener (the shared one when inherited).
    pub fn proxy_addr(&self) -> SocketAddr {
        self.proxy_addr
    }

    /// Its admin listener.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Status code of `GET /readyz` or `/healthz`.
    pub async fn probe(&self, path: &str) -> Result<u16, HarnessError> {
        Ok(self.admin.get(self.admin_addr, path).await?.status.as_u16())
    }

    /// Wait until `/readyz` answers 200.
    pub async fn wait_ready(&self, within: Duration) -> Result<(), HarnessError> {
        let deadline = Instant::now() + within;
        loop {
            match self.probe("/readyz").await {
                Ok(200) => return Ok(()),
                last if Instant::now() >= deadline => {
                    return Err(HarnessError::new(
                        format!("{}: /readyz", self.name),
                        format!("not 200 within {} ms: {last:?}", within.as_millis()),
                    ));
                }
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    /// Scrape `/metrics`.
    pub async fn scrape(&self) -> Result<Scrape, HarnessError> {
        let reply = self.admin.get(self.admin_addr, "/metrics").await?;
        let what = || format!("{}: /metrics", self.name);
        if reply.status != 200 {
            return Err(HarnessError::new(what(), reply.status));
        }
        let text = std::str::from_utf8(&reply.body).map_err(|e| HarnessError::new(what(), e))?;
        Scrape::parse(text, Instant::now())
            .ok_or_else(|| HarnessError::new(what(), "not the Prometheus text format"))
    }

    /// Send SIGTERM to the generation's process group: the gate starts draining.
    pub fn terminate(&self) -> Result<(), HarnessError> {
        self.group
            .signal(Signal::SIGTERM)
            .map_err(|e| HarnessError::new(format!("{}: SIGTERM", self.name), e))
    }

    /// Send SIGHUP to the generation's process group: the gate reloads its keys.
    pub fn hang_up(&self) -> Result<(), HarnessError> {
        self.group
            .signal(Signal::SIGHUP)
            .map_err(|e| HarnessError::new(format!("{}: SIGHUP", self.name), e))
    }

    /// Wait for the process to exit and return its exit code (`None`: killed by a signal). If
    /// it has not exited within `within` it is killed and this is an error.
    pub async fn wait_exit(&mut self, within: Duration) -> Result<Option<i32>, HarnessError> {
        match tokio::time::timeout(within, self.child.wait()).await {
            Ok(Ok(status)) => Ok(status.code()),
            Ok(Err(err)) => Err(HarnessError::new(format!("{}: wait", self.name), err)),
            Err(_elapsed) => {
                let _ = self.child.kill().await;
                Err(HarnessError::new(
                    &self.name,
                    format!(
                        "still running {} ms after SIGTERM: killed",
                        within.as_millis()
                    ),
                ))
            }
        }
    }

    /// SIGTERM, then [`GateProcess::wait_exit`].
    pub async fn stop(&mut self, within: Duration) -> Result<Option<i32>, HarnessError> {
        self.terminate()?;
        self.wait_exit(within).await
    }

    /// Its latest stderr lines, oldest first.
    pub fn log_tail(&self) -> Vec<String> {
        lines(&self.log)
    }
}

impl Drop for GateProcess {
    fn drop(&mut self) {
        // `group` kills the group and `kill_on_drop` the child itself; the reader would end at
        // end of file, but stop it anyway.
        self.reader.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_listening_line() {
        let line = r#"{"timestamp":"t","level":"INFO","message":"listening","proxy_addr":"127.0.0.1:8080","admin_addr":"127.0.0.1:9090"}"#;
        let (proxy, admin) = listening_addrs(line).expect("listening line");
        assert_eq!(proxy.port(), 8080);
        assert_eq!(admin.port(), 9090);
        assert!(listening_addrs(r#"{"message":"drain complete"}"#).is_none());
        assert!(listening_addrs("sig-gate: INTERSERVICE_HMAC_SECRET: required").is_none());
    }

    #[test]
    fn env_debug_hides_values() {
        let credential = Credential::generate("k1");
        let env = GateEnv::new("http://127.0.0.1:1").current(&credential);
        assert!(!format!("{env:?}").contains(credential.secret()));
        assert_eq!(env.get(vars::KEY_ID), Some("k1"));
        let env = env
            .previous(&credential.relabelled("k0"))
            .without_previous();
        assert_eq!(env.get(vars::SECRET_PREV), None);
    }
}

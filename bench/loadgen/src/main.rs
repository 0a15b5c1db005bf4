//! The load benchmark's helper (`bench/run.py` drives it; see `docs/benchmarks.md`).
//!
//! | subcommand | what it does |
//! | --- | --- |
//! | `sign` | pre-sign N requests with the gate's own [`Signer`] (version 1 HMAC, or version 2 Ed25519): one fixed-width record of signature headers each, plus the request's fixed head and tail |
//! | `open` | open-loop generator: sends at a fixed rate whatever the answers do, and measures each latency from the request's *intended* send time (no coordinated omission) |
//! | `idle` | open N keep-alive connections, send one signed request on each, then hold them idle |
//! | `replay-mem` | heap bytes per entry of the real [`NonceCache`], by a counting allocator |
//!
//! A request on the wire is `head + record + tail`: `head` is the request line and fixed
//! headers, `record` the `X-Gate-*` headers of one pre-signed request (four, or five for version 2), `tail` the
//! `Content-Length` header, the blank line and the 1 KiB body. wrk's Lua script
//! (`bench/wrk/signed.lua`) builds the same bytes from the same files.

use std::alloc::{GlobalAlloc, Layout, System};
use std::fs;
use std::io::Write as _;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use gate::clock::unix_now;
use gate::keyring::{Key, Keyring, Secret, Slot};
use gate::protocol;
use gate::replay::{NonceCache, ReplayError};
use gate::sign::{Request, Signer, SigningKey, header_map};
use gate::verify::{self, RequestLine};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

/// Counts live heap bytes, for `replay-mem`.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

type Error = Box<dyn std::error::Error + Send + Sync>;

fn main() {
    let mut args = std::env::args().skip(1);
    let command = args.next().unwrap_or_default();
    let flags = Flags::parse(args);
    let result = match command.as_str() {
        "sign" => sign(&flags),
        "open" => runtime().and_then(|rt| rt.block_on(open(&flags))),
        "idle" => runtime().and_then(|rt| rt.block_on(idle(&flags))),
        "replay-mem" => replay_mem(&flags),
        "sizes" => {
            sizes();
            Ok(())
        }
        _ => Err("usage: sig-gate-loadgen sign|open|idle|replay-mem --flag value ...".into()),
    };
    if let Err(err) = result {
        eprintln!("sig-gate-loadgen {command}: {err}");
        std::process::exit(1);
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// `--name value` pairs.
struct Flags(Vec<(String, String)>);

impl Flags {
    fn parse(args: impl Iterator<Item = String>) -> Flags {
        let mut pairs = Vec::new();
        let mut args = args.peekable();
        while let Some(arg) = args.next() {
            let name = arg.trim_start_matches("--").to_owned();
            let value = args.next_if(|v| !v.starts_with("--")).unwrap_or_default();
            pairs.push((name, value));
        }
        Flags(pairs)
    }

    fn str(&self, name: &str) -> Result<&str, Error> {
        self.0
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .ok_or_else(|| format!("--{name} is required").into())
    }

    fn num<T: std::str::FromStr>(&self, name: &str) -> Result<T, Error> {
        self.str(name)?
            .parse()
            .map_err(|_| format!("--{name}: not a number").into())
    }

    fn num_or<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T, Error> {
        if self.0.iter().any(|(n, _)| n == name) {
            self.num(name)
        } else {
            Ok(default)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// sign

/// `sign --out DIR --count N --body FILE --target T --host H [--timestamp T] [--key-id ID]
/// [--ed25519-key PEM --audience A]`: version 1 with the secret from
/// `INTERSERVICE_HMAC_SECRET`, or version 2 with the Ed25519 private key in `PEM` for the gate
/// whose `GATE_AUDIENCE` is `A`. Writes `DIR/head`, `DIR/records`, `DIR/tail`; prints
/// `{"count":N,"record_len":L,"timestamp":T}`.
fn sign(flags: &Flags) -> Result<(), Error> {
    let out = PathBuf::from(flags.str("out")?);
    let count: usize = flags.num("count")?;
    let body = fs::read(flags.str("body")?)?;
    let target = flags.str("target")?;
    let host = flags.str("host")?;
    let key_id = flags.str("key-id").unwrap_or("current").to_owned();
    let timestamp = flags.num_or("timestamp", unix_now())?;
    let signer = match flags.str("ed25519-key") {
        Ok(pem_file) => {
            let pem = fs::read_to_string(pem_file)?;
            let key = SigningKey::ed25519_pem(&key_id, &pem)
                .map_err(|err| format!("--ed25519-key {pem_file}: {err}"))?;
            Signer::v2(key, flags.str("audience")?)
        }
        Err(_) => {
            let secret = std::env::var("INTERSERVICE_HMAC_SECRET")
                .map_err(|_| "INTERSERVICE_HMAC_SECRET is not set")?;
            Signer::new(Key::new(Slot::Current, key_id, &Secret::new(secret)), None)
        }
    };

    // Fixed-width nonces: a random 10-character prefix per file and a 12-digit counter.
    let prefix: String = gate::sign::new_nonce().chars().take(10).collect();
    let record = |n: usize| -> Vec<u8> {
        let nonce = format!("{prefix}{n:012}");
        let request = Request {
            method: "POST",
            target,
            body: &body,
            timestamp,
            nonce: &nonce,
        };
        let mut line = Vec::with_capacity(192);
        for (name, value) in signer.sign(&request) {
            write!(line, "{name}: {value}\r\n").expect("write to a Vec");
        }
        line
    };
    let record_len = record(0).len();
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let chunk = count.div_ceil(threads).max(1);
    let mut records = vec![0u8; count * record_len];
    std::thread::scope(|scope| {
        for (index, part) in records.chunks_mut(chunk * record_len).enumerate() {
            let record = &record;
            scope.spawn(move || {
                for (i, slot) in part.chunks_exact_mut(record_len).enumerate() {
                    let bytes = record(index * chunk + i);
                    assert_eq!(bytes.len(), record_len, "records are fixed-width");
                    slot.copy_from_slice(&bytes);
                }
            });
        }
    });
    fs::create_dir_all(&out)?;
    let head = format!(
        "POST {target} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         User-Agent: sig-gate-bench\r\nAccept: */*\r\n"
    );
    let mut tail = format!("Content-Length: {}\r\n\r\n", body.len()).into_bytes();
    tail.extend_from_slice(&body);
    fs::write(out.join("head"), head)?;
    fs::write(out.join("records"), &records)?;
    fs::write(out.join("tail"), tail)?;
    println!(r#"{{"count":{count},"record_len":{record_len},"timestamp":{timestamp}}}"#);
    Ok(())
}

/// The pre-signed requests of a `sign` directory, or the records slice `first..first+count`.
struct Requests {
    head: Vec<u8>,
    records: Vec<u8>,
    record_len: usize,
    tail: Vec<u8>,
}

impl Requests {
    fn load(flags: &Flags) -> Result<Requests, Error> {
        let dir = PathBuf::from(flags.str("requests")?);
        let record_len: usize = flags.num("record-len")?;
        let first: usize = flags.num_or("first", 0)?;
        let all = fs::read(dir.join("records"))?;
        let available = all.len() / record_len;
        let count: usize = flags.num_or("count", available.saturating_sub(first))?;
        if first + count > available {
            return Err(format!("records {first}..{} of {available} asked", first + count).into());
        }
        Ok(Requests {
            head: fs::read(dir.join("head"))?,
            records: all[first * record_len..(first + count) * record_len].to_vec(),
            record_len,
            tail: fs::read(dir.join("tail"))?,
        })
    }

    fn len(&self) -> usize {
        self.records.len() / self.record_len
    }

    /// Request `i` as bytes on the wire, into `buf`.
    fn write(&self, i: usize, buf: &mut Vec<u8>) {
        buf.clear();
        buf.extend_from_slice(&self.head);
        buf.extend_from_slice(&self.records[i * self.record_len..(i + 1) * self.record_len]);
        buf.extend_from_slice(&self.tail);
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP/1.1 responses

/// Reads one response after another from a keep-alive connection.
struct ResponseReader {
    buf: Vec<u8>,
    filled: usize,
}

impl ResponseReader {
    fn new() -> ResponseReader {
        ResponseReader {
            buf: vec![0; 16 * 1024],
            filled: 0,
        }
    }

    /// Read one whole response; returns its status code and whether the server will close.
    async fn read(&mut self, stream: &mut TcpStream) -> Result<(u16, bool), Error> {
        let head_end = loop {
            if let Some(end) = find(&self.buf[..self.filled], b"\r\n\r\n") {
                break end + 4;
            }
            self.fill(stream).await?;
        };
        let head = &self.buf[..head_end];
        let status =
            std::str::from_utf8(head.get(9..12).ok_or("short status line")?)?.parse::<u16>()?;
        let mut length = None;
        let mut chunked = false;
        let mut close = false;
        for line in head.split(|&b| b == b'\n').skip(1) {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                continue;
            };
            let name = &line[..colon];
            let value = std::str::from_utf8(&line[colon + 1..])?.trim();
            if name.eq_ignore_ascii_case(b"content-length") {
                length = Some(value.parse::<usize>()?);
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                chunked = value.eq_ignore_ascii_case("chunked");
            } else if name.eq_ignore_ascii_case(b"connection") {
                close = value.eq_ignore_ascii_case("close");
            }
        }
        self.consume(head_end);
        if chunked {
            loop {
                let line_end = loop {
                    if let Some(end) = find(&self.buf[..self.filled], b"\r\n") {
                        break end;
                    }
                    self.fill(stream).await?;
                };
                let size_text = std::str::from_utf8(&self.buf[..line_end])?;
                let size =
                    usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)?;
                self.consume(line_end + 2);
                // Chunk data and its CRLF; the last chunk (size 0) is followed by CRLF alone.
                self.skip(stream, size + 2).await?;
                if size == 0 {
                    break;
                }
            }
        } else {
            self.skip(stream, length.unwrap_or(0)).await?;
        }
        Ok((status, close))
    }

    async fn fill(&mut self, stream: &mut TcpStream) -> Result<(), Error> {
        if self.filled == self.buf.len() {
            self.buf.resize(self.buf.len() * 2, 0);
        }
        let n = stream.read(&mut self.buf[self.filled..]).await?;
        if n == 0 {
            return Err("connection closed by the server".into());
        }
        self.filled += n;
        Ok(())
    }

    async fn skip(&mut self, stream: &mut TcpStream, mut n: usize) -> Result<(), Error> {
        loop {
            let take = n.min(self.filled);
            self.consume(take);
            n -= take;
            if n == 0 {
                return Ok(());
            }
            self.fill(stream).await?;
        }
    }

    fn consume(&mut self, n: usize) {
        self.buf.copy_within(n..self.filled, 0);
        self.filled -= n;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------------------------------------
// open: fixed-rate load

/// A periodic timerfd: wakes the pacer every `period` with microsecond precision, where
/// tokio's own timer has millisecond granularity (which would batch sends and show up as
/// up to 1 ms of false latency).
struct Ticker {
    fd: AsyncFd<OwnedFd>,
}

impl Ticker {
    fn new(period: Duration) -> Result<Ticker, Error> {
        // SAFETY: plain syscalls on a descriptor we own; arguments are valid by construction.
        let fd = unsafe {
            let raw = libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            );
            if raw < 0 {
                return Err(std::io::Error::last_os_error().into());
            }
            let fd = OwnedFd::from_raw_fd(raw);
            let spec = libc::itimerspec {
                it_interval: libc::timespec {
                    tv_sec: period.as_secs() as libc::time_t,
                    tv_nsec: period.subsec_nanos() as libc::c_long,
                },
                it_value: libc::timespec {
                    tv_sec: period.as_secs() as libc::time_t,
                    tv_nsec: period.subsec_nanos() as libc::c_long,
                },
            };
            if libc::timerfd_settime(fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) < 0 {
                return Err(std::io::Error::last_os_error().into());
            }
            fd
        };
        // SAFETY: the timerfd is owned by the AsyncFd and never replaced or closed under it.
        let fd = unsafe { AsyncFd::register(fd)? };
        Ok(Ticker { fd })
    }

    /// Wait for the next tick; returns how many periods elapsed since the last call.
    async fn tick(&self) -> Result<u64, Error> {
        loop {
            let mut guard = self.fd.readable().await?;
            let mut expirations = [0u8; 8];
            // SAFETY: reading 8 bytes into an 8-byte buffer from a descriptor we own.
            let n = unsafe {
                libc::read(
                    self.fd.get_ref().as_raw_fd(),
                    expirations.as_mut_ptr().cast(),
                    8,
                )
            };
            if n == 8 {
                return Ok(u64::from_ne_bytes(expirations));
            }
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::WouldBlock {
                guard.clear_ready();
                continue;
            }
            return Err(err.into());
        }
    }
}

/// What one connection saw.
#[derive(Default)]
struct Tally {
    /// Latency from intended send time to the last byte of the response, in nanoseconds.
    latencies: Vec<u64>,
    /// How late the request left compared to its intended time (generator and queueing).
    send_lag: Vec<u64>,
    non_2xx: u64,
    errors: u64,
}

/// `open --addr A --requests DIR --record-len L [--first K --count N] --rate R --duration S
/// [--connections C]`: prints one JSON object.
async fn open(flags: &Flags) -> Result<(), Error> {
    let addr: std::net::SocketAddr = flags.num("addr")?;
    let requests = Arc::new(Requests::load(flags)?);
    let rate: f64 = flags.num("rate")?;
    let duration: f64 = flags.num("duration")?;
    let connections: usize = flags.num_or("connections", 32)?;
    let total = (rate * duration).round() as u64;
    if total as usize > requests.len() {
        return Err(format!(
            "{total} requests needed, {} pre-signed available",
            requests.len()
        )
        .into());
    }
    let period = Duration::from_nanos((1e9 / rate).round() as u64);

    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let rx = Arc::new(Mutex::new(rx));
    let mut streams = Vec::with_capacity(connections);
    for _ in 0..connections {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        streams.push(stream);
    }
    let start = Instant::now() + period;
    let ticker = Ticker::new(period)?;
    let period_ns = nanos(period);
    let intended = move |i: u64| start + Duration::from_nanos(period_ns * i);
    let mut tasks = Vec::with_capacity(connections);
    for mut stream in streams {
        let rx = Arc::clone(&rx);
        let requests = Arc::clone(&requests);
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut reader = ResponseReader::new();
            let mut buf = Vec::with_capacity(2048);
            loop {
                let next = rx.lock().await.recv().await;
                let Some(i) = next else { break };
                let due = intended(i);
                requests.write(i as usize, &mut buf);
                let sent = Instant::now();
                let result = async {
                    stream.write_all(&buf).await?;
                    reader.read(&mut stream).await
                }
                .await;
                let done = Instant::now();
                match result {
                    Ok((status, close)) => {
                        tally
                            .latencies
                            .push(nanos(done.saturating_duration_since(due)));
                        tally
                            .send_lag
                            .push(nanos(sent.saturating_duration_since(due)));
                        if !(200..300).contains(&status) {
                            tally.non_2xx += 1;
                        }
                        if close {
                            stream = reconnect(addr).await?;
                            reader = ResponseReader::new();
                        }
                    }
                    Err(_) => {
                        tally.errors += 1;
                        stream = reconnect(addr).await?;
                        reader = ResponseReader::new();
                    }
                }
            }
            Ok::<Tally, Error>(tally)
        }));
    }

    let mut dispatched = 0u64;
    while dispatched < total {
        let ticks = ticker.tick().await?;
        // Every elapsed period is one request due, late wake-ups included.
        for _ in 0..ticks.min(total - dispatched) {
            tx.send(dispatched)?;
            dispatched += 1;
        }
    }
    let sending_ended = Instant::now();
    drop(tx);
    let mut all = Tally::default();
    for task in tasks {
        let tally = task.await??;
        all.latencies.extend(tally.latencies);
        all.send_lag.extend(tally.send_lag);
        all.non_2xx += tally.non_2xx;
        all.errors += tally.errors;
    }
    let elapsed = sending_ended.saturating_duration_since(start).as_secs_f64();
    all.latencies.sort_unstable();
    all.send_lag.sort_unstable();
    let pct = |v: &[u64], p: f64| percentile(v, p) as f64 / 1000.0;
    let mean =
        all.latencies.iter().sum::<u64>() as f64 / all.latencies.len().max(1) as f64 / 1000.0;
    println!(
        concat!(
            r#"{{"rate":{},"duration":{},"connections":{},"sent":{},"completed":{},"#,
            r#""achieved_rate":{:.1},"non_2xx":{},"errors":{},"mean_us":{:.1},"#,
            r#""p50_us":{:.1},"p90_us":{:.1},"p99_us":{:.1},"p999_us":{:.1},"max_us":{:.1},"#,
            r#""send_lag_p50_us":{:.1},"send_lag_p99_us":{:.1}}}"#
        ),
        rate,
        duration,
        connections,
        dispatched,
        all.latencies.len(),
        dispatched as f64 / elapsed.max(1e-9),
        all.non_2xx,
        all.errors,
        mean,
        pct(&all.latencies, 50.0),
        pct(&all.latencies, 90.0),
        pct(&all.latencies, 99.0),
        pct(&all.latencies, 99.9),
        pct(&all.latencies, 100.0),
        pct(&all.send_lag, 50.0),
        pct(&all.send_lag, 99.0),
    );
    Ok(())
}

async fn reconnect(addr: std::net::SocketAddr) -> Result<TcpStream, Error> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

// ---------------------------------------------------------------------------------------------
// idle: keep-alive connections at rest

/// `idle --addr A --requests DIR --record-len L [--first K] --connections N --hold S`: opens N
/// connections, sends one request on each and reads the answer, prints
/// `{"open":N,"ok":M}`, then holds them idle for S seconds and reports how many are still open.
async fn idle(flags: &Flags) -> Result<(), Error> {
    let addr: std::net::SocketAddr = flags.num("addr")?;
    let connections: usize = flags.num("connections")?;
    let hold: f64 = flags.num_or("hold", 5.0)?;
    let requests = Requests::load(flags)?;
    if requests.len() < connections {
        return Err("fewer pre-signed requests than connections".into());
    }
    let ok = Arc::new(AtomicU64::new(0));
    let mut streams = Vec::with_capacity(connections);
    // Open in batches so the listener's backlog is never the limit.
    for batch in (0..connections).collect::<Vec<_>>().chunks(100) {
        let mut handles = Vec::new();
        for &i in batch {
            let mut buf = Vec::new();
            requests.write(i, &mut buf);
            let ok = Arc::clone(&ok);
            handles.push(tokio::spawn(async move {
                let mut stream = reconnect(addr).await?;
                stream.write_all(&buf).await?;
                let (status, _) = ResponseReader::new().read(&mut stream).await?;
                if (200..300).contains(&status) {
                    ok.fetch_add(1, Ordering::Relaxed);
                }
                Ok::<TcpStream, Error>(stream)
            }));
        }
        for handle in handles {
            streams.push(handle.await??);
        }
    }
    println!(
        r#"{{"open":{},"ok":{}}}"#,
        streams.len(),
        ok.load(Ordering::Relaxed)
    );
    std::io::stdout().flush()?;
    tokio::time::sleep(Duration::from_secs_f64(hold)).await;
    // Still open? A closed connection reads 0 (or fails) at once; an open idle one would block.
    let mut still_open = 0;
    for stream in &mut streams {
        let mut probe = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_micros(1), stream.read(&mut probe)).await;
        if read.is_err() {
            still_open += 1;
        }
    }
    println!(r#"{{"still_open":{still_open}}}"#);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// replay-mem

/// `replay-mem --entries N [--window S]`: fill the gate's real [`NonceCache`] of capacity N
/// with verified requests and print its live heap bytes per entry at several fill levels.
fn replay_mem(flags: &Flags) -> Result<(), Error> {
    let entries: usize = flags.num("entries")?;
    let window: u64 = flags.num_or("window", 300)?;
    const SECRET: &str = "replay-mem-secret-0123456789abcdefghijklmnop";
    let key = || Key::new(Slot::Current, "current".into(), &Secret::new(SECRET));
    let signer = Signer::new(key(), None);
    let keyring = Keyring::new(key(), None, false);
    let now = unix_now();
    let digest = protocol::body_digest(b"");
    let line = RequestLine {
        method: "GET",
        path: "/",
        query: "",
    };
    let signed = |nonce: &str| {
        header_map(&signer.sign(&Request {
            method: line.method,
            target: line.path,
            body: b"",
            timestamp: now,
            nonce,
        }))
    };

    let before = LIVE.load(Ordering::Relaxed);
    let cache = NonceCache::new(entries, window);
    let mut points = Vec::new();
    // The slowest single admission: whatever one admission does under its shard's lock (a
    // step of a growth or sweep, the allocation of a doubled table) stalls every request
    // waiting on that shard meanwhile.
    let mut slowest = (Duration::ZERO, 0usize);
    let checkpoints: Vec<usize> = [0.1, 0.25, 0.5, 0.75, 0.9, 1.0]
        .iter()
        .map(|f| ((entries as f64) * f).round() as usize)
        .collect();
    // Each shard of the cache holds its share of the capacity, so the fullest one refuses
    // before the cache is full: keep offering fresh nonces until every shard is.
    let mut first_refusal = None;
    let mut n = 0usize;
    while cache.len() < entries {
        n += 1;
        let headers = signed(&format!("replay-mem-nonce-{n:016}"));
        let verified = verify::check_headers(&headers, &keyring, window, now)
            .and_then(|pending| pending.verify(line, &digest))
            .map_err(|reason| format!("a signed request failed: {reason:?}"))?;
        let started = Instant::now();
        let admitted = cache.admit(verified, now);
        let took = started.elapsed();
        let held = cache.len();
        match admitted {
            Ok(_) => {}
            Err(ReplayError::Full) => {
                first_refusal.get_or_insert(held);
            }
            Err(err) => return Err(format!("admit failed: {err}").into()),
        }
        if took > slowest.0 {
            slowest = (took, held);
        }
        drop(headers);
        if admitted.is_ok() && checkpoints.contains(&held) {
            let bytes = LIVE.load(Ordering::Relaxed) - before;
            points.push(format!(
                r#"{{"entries":{held},"heap_bytes":{bytes},"bytes_per_entry":{:.2}}}"#,
                bytes as f64 / held as f64
            ));
        }
    }
    assert_eq!(cache.len(), entries);
    // Full of live nonces: how long does a refusal take? (It must not walk the table.)
    let refusals = 50;
    let started = Instant::now();
    for n in 0..refusals {
        let headers = signed(&format!("replay-mem-extra-{n:016}"));
        let verified = verify::check_headers(&headers, &keyring, window, now)
            .and_then(|pending| pending.verify(line, &digest))
            .map_err(|reason| format!("a signed request failed: {reason:?}"))?;
        if cache.admit(verified, now).is_ok() {
            return Err("a full cache admitted a new nonce".into());
        }
    }
    let full_refusal_us = started.elapsed().as_secs_f64() * 1e6 / f64::from(refusals);
    println!(
        r#"{{"capacity":{entries},"points":[{}],"slowest_admit_us":{:.1},"slowest_admit_at":{},"first_refusal_at":{},"full_refusal_us":{:.1}}}"#,
        points.join(","),
        slowest.0.as_secs_f64() * 1e6,
        slowest.1,
        first_refusal.unwrap_or(entries),
        full_refusal_us
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// sizes

/// Bytes of the per-request future hyper boxes once per connection (and keeps while idle),
/// and moves into that box for every request.
fn sizes() {
    println!(
        r#"{{"request_future_bytes":{}}}"#,
        gate::request_future_bytes()
    );
}

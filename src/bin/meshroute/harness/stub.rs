//! Stub upstreams: one tiny HTTP/1.1 server (std threads) per Envoy cluster, answering with the
//! cluster's name and an echo of what it received, with scriptable behaviour (status, failure
//! rate, latency, failing the first N attempts of each request) so that retries, outlier
//! detection and timeouts can be watched. Every request is recorded for `meshroute test`.

use meshroute::{Random, SplitMix64};
use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

/// The response header naming the cluster whose stub answered.
pub const CLUSTER_HEADER: &str = "x-meshroute-stub";

/// What a stub does with a request. Parts per million for the failure rate, like the core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Behaviour {
    /// Status of a normal answer.
    pub status: u16,
    /// Status of a failed answer (failure rate, fail first N).
    pub fail_status: u16,
    /// Share of requests answered with `fail_status`, in parts per million.
    pub failure_ppm: u32,
    /// Wait before answering.
    pub latency: Duration,
    /// The first N attempts of each request (the same `x-request-id`: Envoy's retries keep it)
    /// fail with `fail_status`.
    pub fail_first: u32,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour { status: 200, fail_status: 503, failure_ppm: 0, latency: Duration::ZERO, fail_first: 0 }
    }
}

/// One request as the stub saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body_len: usize,
    /// The status the stub answered with.
    pub status: u16,
    /// A mirrored copy: the filter sends those itself, without the routing header every
    /// routed request carries (Envoy's own shadows have `-shadow` appended to the authority).
    pub mirror: bool,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn is_mirror(&self) -> bool {
        self.mirror
    }
}

#[derive(Default)]
struct State {
    behaviour: Behaviour,
    recorded: Vec<Recorded>,
    /// Attempts per `x-request-id`, for `fail_first`; cleared when it grows large (a stub runs
    /// for hours under `meshroute run`).
    attempts: HashMap<String, u32>,
    random: Option<SplitMix64>,
}

/// A running stub; its threads end with the process (the CLI exits when the harness stops).
pub struct Stub {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

/// Upper bound of remembered requests per stub (`meshroute run` can serve many).
const MAX_RECORDED: usize = 100_000;
const MAX_ATTEMPT_IDS: usize = 10_000;

impl Stub {
    /// Binds 127.0.0.1:0 and serves in background threads; `log` prints one line a request.
    /// `routing_header` is the filter's (settings.routingHeader): requests without it are mirrors.
    pub fn start(cluster: &str, routing_header: &str, behaviour: Behaviour, seed: u64, log: bool) -> io::Result<Stub> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State { behaviour, random: Some(SplitMix64(seed)), ..State::default() }));
        let shared = Arc::clone(&state);
        // The name as the user's configuration has it (without a view prefix, harness::shown).
        let name = super::shown(cluster).to_string();
        let routing_header = routing_header.to_ascii_lowercase();
        thread::Builder::new().name(format!("stub {cluster}")).spawn(move || {
            for conn in listener.incoming().flatten() {
                let state = Arc::clone(&shared);
                let name = name.clone();
                let header = routing_header.clone();
                let _ = thread::Builder::new().spawn(move || serve(conn, &name, &header, &state, log));
            }
        })?;
        Ok(Stub { addr, state })
    }

    pub fn set_behaviour(&self, b: Behaviour) {
        let mut s = lock(&self.state);
        s.behaviour = b;
        s.attempts.clear();
    }

    /// Forgets what was recorded (between test cases).
    pub fn reset(&self) {
        let mut s = lock(&self.state);
        s.recorded.clear();
        s.attempts.clear();
    }

    pub fn recorded(&self) -> Vec<Recorded> {
        lock(&self.state).recorded.clone()
    }
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    // A poisoned lock only means a connection thread died mid-update; the data is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Serves one keep-alive connection until it closes or a request cannot be parsed.
fn serve(conn: TcpStream, cluster: &str, routing_header: &str, state: &Mutex<State>, log: bool) {
    let _ = conn.set_nodelay(true);
    let Ok(read_half) = conn.try_clone() else { return };
    let mut reader = BufReader::new(read_half);
    let mut out = conn;
    while let Ok(Some(Incoming { rec: mut req, body })) = read_request(&mut reader) {
        req.mirror = req.header(routing_header).is_none()
            || req.header("host").is_some_and(|h| h.split(':').next().unwrap_or(h).ends_with("-shadow"));
        let (status, latency) = decide(state, &req);
        if !latency.is_zero() {
            thread::sleep(latency);
        }
        let close = req.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        if log {
            let mirror = if req.mirror { " (mirror)" } else { "" };
            println!(
                "[{cluster}]{mirror} {} {} host={} body={}B -> {status}",
                req.method,
                req.path,
                req.header("host").unwrap_or(""),
                req.body_len
            );
        }
        let body = echo(cluster, &req, &body);
        let head = format!(
            "HTTP/1.1 {status} {}\r\n{CLUSTER_HEADER}: {}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n",
            reason(status),
            header_safe(cluster),
            body.len()
        );
        req.status = status;
        {
            let mut s = lock(state);
            if s.recorded.len() >= MAX_RECORDED {
                s.recorded.clear();
            }
            s.recorded.push(req);
        }
        if out.write_all(head.as_bytes()).is_err() || out.write_all(&body).is_err() || close {
            return;
        }
    }
}

/// Status and latency for one request, under the lock (attempt counting must be exact).
fn decide(state: &Mutex<State>, req: &Recorded) -> (u16, Duration) {
    let mut s = lock(state);
    let b = s.behaviour.clone();
    let mut failed = false;
    if b.fail_first > 0 {
        let id = req.header("x-request-id").unwrap_or("").to_string();
        if s.attempts.len() >= MAX_ATTEMPT_IDS {
            s.attempts.clear();
        }
        let n = s.attempts.entry(id).or_insert(0);
        *n += 1;
        failed = *n <= b.fail_first;
    }
    if !failed && b.failure_ppm > 0 {
        let roll = s.random.as_mut().map(|r| r.below(1_000_000)).unwrap_or(0);
        failed = roll < u64::from(b.failure_ppm);
    }
    (if failed { b.fail_status } else { b.status }, b.latency)
}

/// What the stub answers: the cluster name on the first line (so `curl | head -1` and
/// `sort | uniq -c` work), then the request it received.
fn echo(cluster: &str, req: &Recorded, body: &[u8]) -> Vec<u8> {
    let mut text = format!("{cluster}\n{} {}\n", req.method, req.path);
    for (k, v) in &req.headers {
        text.push_str(&format!("{k}: {v}\n"));
    }
    text.push('\n');
    let mut out = text.into_bytes();
    out.extend_from_slice(body);
    out
}

/// A cluster name is ASCII without CR/LF in practice; anything else is replaced.
fn header_safe(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '_' }).collect()
}

/// A request as read: what is recorded, and its body (echoed, not kept).
struct Incoming {
    rec: Recorded,
    body: Vec<u8>,
}

/// Reads one request (content-length or chunked body); `None` at a clean end of the connection.
fn read_request(r: &mut BufReader<TcpStream>) -> io::Result<Option<Incoming>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    loop {
        let mut l = String::new();
        if r.read_line(&mut l)? == 0 {
            return Ok(None);
        }
        let l = l.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let get = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let body = if get("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        read_chunked(r)?
    } else {
        let n: usize = get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
        let mut b = vec![0u8; n];
        r.read_exact(&mut b)?;
        b
    };
    let body_len = body.len();
    Ok(Some(Incoming { rec: Recorded { method, path, headers, body_len, status: 0, mirror: false }, body }))
}

fn read_chunked(r: &mut BufReader<TcpStream>) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        r.read_line(&mut size)?;
        let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if n == 0 {
            // Trailers until the empty line.
            loop {
                let mut l = String::new();
                if r.read_line(&mut l)? == 0 || l.trim_end().is_empty() {
                    return Ok(body);
                }
            }
        }
        let mut chunk = vec![0u8; n + 2];
        r.read_exact(&mut chunk)?;
        chunk.truncate(n);
        body.extend_from_slice(&chunk);
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

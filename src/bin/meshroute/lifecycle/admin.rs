//! Envoy's admin interface over plain HTTP/1.1 on loopback (`Connection: close`; Envoy refuses
//! HTTP/1.0 by default; no client dependency): `/stats` as a map, and a check that the port is an
//! Envoy admin at all.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

#[derive(Debug)]
pub enum AdminError {
    /// Nothing listens (Envoy not running), or the connection failed.
    Unreachable { addr: SocketAddr, error: std::io::Error },
    /// Something answered that is not Envoy's admin interface.
    NotEnvoy { addr: SocketAddr, detail: String },
}

impl std::fmt::Display for AdminError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unreachable { addr, error } => {
                write!(f, "Envoy's admin interface at {addr} does not answer ({error})")
            }
            Self::NotEnvoy { addr, detail } => {
                write!(f, "{addr} answers, but not as Envoy's admin interface: {detail}")
            }
        }
    }
}

/// Envoy's stats: counters and gauges as numbers, text readouts (`version_text`) as text.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub numbers: BTreeMap<String, u64>,
    pub texts: BTreeMap<String, String>,
}

impl Stats {
    pub fn get(&self, name: &str) -> u64 {
        self.numbers.get(name).copied().unwrap_or(0)
    }

    pub fn text(&self, name: &str) -> Option<&str> {
        self.texts.get(name).map(String::as_str)
    }
}

pub struct Admin {
    pub addr: SocketAddr,
}

impl Admin {
    pub fn new(addr: SocketAddr) -> Self {
        Admin { addr }
    }

    /// GET a path; the status code and body.
    pub fn get(&self, path: &str) -> Result<(u16, String), AdminError> {
        let unreachable = |error| AdminError::Unreachable { addr: self.addr, error };
        let mut s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1)).map_err(unreachable)?;
        s.set_read_timeout(Some(Duration::from_secs(5))).map_err(unreachable)?;
        s.set_write_timeout(Some(Duration::from_secs(5))).map_err(unreachable)?;
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", self.addr).as_bytes())
            .map_err(unreachable)?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).map_err(unreachable)?;
        let text = String::from_utf8_lossy(&buf);
        let not_envoy = |detail: &str| AdminError::NotEnvoy { addr: self.addr, detail: detail.into() };
        let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| not_envoy("no HTTP response"))?;
        let status = head
            .strip_prefix("HTTP/1.")
            .and_then(|r| r.get(2..5))
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| not_envoy("no HTTP status line"))?;
        let chunked = head.lines().any(|l| {
            let l = l.to_ascii_lowercase();
            l.starts_with("transfer-encoding:") && l.contains("chunked")
        });
        Ok((status, if chunked { dechunk(body) } else { body.to_string() }))
    }

    /// All stats. Fails when the answer does not look like Envoy's (`server.` stats).
    pub fn stats(&self) -> Result<Stats, AdminError> {
        let (status, body) = self.get("/stats")?;
        if status != 200 || !body.contains("server.uptime") {
            return Err(AdminError::NotEnvoy {
                addr: self.addr,
                detail: format!("GET /stats answered {status} without Envoy's server.* stats"),
            });
        }
        Ok(parse_stats(&body))
    }
}

/// The body of a `Transfer-Encoding: chunked` response.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16) else { break };
        if n == 0 || rest.len() < n {
            out.push_str(rest.get(..n.min(rest.len())).unwrap_or(""));
            break;
        }
        out.push_str(rest.get(..n).unwrap_or(""));
        body = rest.get(n..).unwrap_or("").trim_start_matches("\r\n");
    }
    out
}

pub fn parse_stats(body: &str) -> Stats {
    let mut out = Stats::default();
    for line in body.lines() {
        let Some((name, value)) = line.split_once(": ") else { continue };
        if let Some(t) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
            out.texts.insert(name.to_string(), t.to_string());
        } else if let Ok(n) = value.trim().parse::<u64>() {
            out.numbers.insert(name.to_string(), n);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_text_has_numbers_and_text_readouts() {
        let s = parse_stats(
            "cluster_manager.cds.update_success: 3\ncluster_manager.cds.version_text: \"7-ab\"\n\
             http.o.downstream_rq_time: P0(nan,1.0) P25(nan,1.0)\n",
        );
        assert_eq!(s.get("cluster_manager.cds.update_success"), 3);
        assert_eq!(s.text("cluster_manager.cds.version_text"), Some("7-ab"));
        assert_eq!(s.get("http.o.downstream_rq_time"), 0);
    }

    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(dechunk("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"), "hello world");
    }

    #[test]
    fn a_port_that_is_not_envoy_is_named_as_such() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let mut b = [0u8; 512];
            let _ = c.read(&mut b);
            let _ = c.write_all(b"HTTP/1.0 200 OK\r\n\r\nhello");
        });
        let e = Admin::new(addr).stats().unwrap_err();
        t.join().unwrap();
        assert!(matches!(e, AdminError::NotEnvoy { .. }), "{e}");
    }
}

//! Demo upstreams for envoy/sidecar.yaml and a hand-run `meshroute envoy -f envoy/demo` (`make
//! run` uses the stubs of `meshroute run` instead): one tiny HTTP/1.1 server per endpoint of the demo's
//! ServiceEntries (envoy/demo/*.yaml) and for envoy/sidecar.yaml's clusters, each answering
//! `<name>\n` with an `x-upstream: <name>` header and printing every request it receives (so a
//! mirror's copies show up on the terminal).
//!
//! `cargo run --example demo_upstreams` — ports 18080–18085 on 127.0.0.1, see `SERVERS`.
//! Std only; not for anything but the demo.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;

/// (name, port); the names are what the clients see. The ports are those of the ServiceEntry
/// endpoints in envoy/demo/ (18081–18085) and of the clusters in envoy/sidecar.yaml (18080–18084;
/// 18080 is its PassthroughCluster).
const SERVERS: [(&str, u16); 6] = [
    ("passthrough", 18080),
    ("product-service-v1", 18081),
    ("product-service-v2", 18082),
    ("product-service-canary (mirror)", 18083),
    ("ratings-v1", 18084),
    ("catalog", 18085),
];

fn main() {
    let mut handles = Vec::new();
    for (name, port) in SERVERS {
        let listener = match TcpListener::bind(("127.0.0.1", port)) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("demo_upstreams: cannot listen on 127.0.0.1:{port} for {name}: {e}");
                std::process::exit(1);
            }
        };
        println!("demo_upstreams: {name} on 127.0.0.1:{port}");
        handles.push(thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                thread::spawn(move || serve(conn, name));
            }
        }));
    }
    for h in handles {
        let _ = h.join();
    }
}

/// Serves requests on one connection until it closes (keep-alive, content-length bodies).
fn serve(conn: TcpStream, name: &str) {
    let _ = conn.set_nodelay(true);
    let Ok(read_half) = conn.try_clone() else { return };
    let mut reader = BufReader::new(read_half);
    let mut out = conn;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut host = String::new();
        let mut length = 0usize;
        let mut close = false;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                let v = v.trim();
                match k.trim().to_ascii_lowercase().as_str() {
                    "host" => host = v.to_string(),
                    "content-length" => length = v.parse().unwrap_or(0),
                    "connection" => close = v.eq_ignore_ascii_case("close"),
                    _ => {}
                }
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        println!("[{name}] {} host={host} body={}B", request_line.trim_end(), body.len());
        let text = format!("{name}\n");
        let response = format!(
            "HTTP/1.1 200 OK\r\nx-upstream: {name}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{text}",
            text.len()
        );
        if out.write_all(response.as_bytes()).is_err() || close {
            return;
        }
    }
}

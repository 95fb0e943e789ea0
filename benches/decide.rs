//! `decide()` and compile time on realistic route tables of 10, 1,000 and 10,000 rules, with a
//! linear scan of the same tables as the baseline. Run with `make bench` (or
//! `cargo bench --bench decide`); `docs/benchmarks.md` explains how to read the numbers.
//!
//! Rule mix, per VirtualService: 40 % URI prefix, 30 % URI exact, 15 % header exact, 10 % URI
//! regex with a literal prefix, 5 % URI regex without one; spread evenly over four hosts.
//! Requests go to the first host and match an early rule, the last rule, or nothing.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use divan::{black_box, Bencher};
use meshroute::compile::{CompiledVs, Entry};
use meshroute::{compile_json, Random, Request, RequestView, RouteTable, SplitMix64};
use serde_json::{json, Value};

const SIZES: &[usize] = &[10, 1_000, 10_000];
const HOSTS: &[&str] = &["shop.example.com", "api.example.com", "reviews", "payments"];
const AREAS: &[&str] = &["catalog", "cart", "orders", "users", "search", "media", "billing", "admin"];

fn main() {
    divan::main();
}

// === Workload ===

/// One generated rule and a request that it (and, by construction, no earlier rule) matches.
struct GenRule {
    rule: Value,
    path: String,
    header: Option<(String, String)>,
}

fn gen_rule(i: usize, rng: &mut SplitMix64) -> GenRule {
    let area = AREAS[rng.below(AREAS.len() as u64) as usize];
    let dest = json!([{"destination": {"host": "backend", "subset": format!("v{}", i % 3)}}]);
    let (m, path, header) = match rng.below(100) {
        0..=39 => (json!({"uri": {"prefix": format!("/{area}/r{i}/")}}), format!("/{area}/r{i}/items/42?page=2"), None),
        40..=69 => (json!({"uri": {"exact": format!("/{area}/e{i}")}}), format!("/{area}/e{i}"), None),
        70..=84 => {
            let value = format!("tenant-{i}");
            (
                json!({"headers": {"x-tenant": {"exact": value}}}),
                "/anything".to_string(),
                Some(("x-tenant".into(), value)),
            )
        }
        85..=94 => (json!({"uri": {"regex": format!("/{area}/g{i}/[0-9]+")}}), format!("/{area}/g{i}/1234"), None),
        _ if i % 2 == 0 => {
            (json!({"uri": {"regex": format!("(/v1|/v2)/{area}/l{i}/.*")}}), format!("/v2/{area}/l{i}/x"), None)
        }
        _ => (json!({"uri": {"regex": format!(".*/export{i}\\.(csv|json)")}}), format!("/{area}/export{i}.csv"), None),
    };
    GenRule { rule: json!({"match": [m], "route": dest}), path, header }
}

struct Workload {
    json: Vec<u8>,
    /// Requests to the first host: matching an early rule, the last rule, and no rule.
    early: Request,
    late: Request,
    miss: Request,
}

fn workload(rules: usize) -> Workload {
    let mut rng = SplitMix64(0x6d65_7368);
    let mut resources = vec![json!({
        "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
        "metadata": {"name": "backend", "namespace": "default"},
        "spec": {"host": "backend", "subsets": [{"name": "v0", "labels": {"version": "v0"}},
                                                {"name": "v1", "labels": {"version": "v1"}},
                                                {"name": "v2", "labels": {"version": "v2"}}]}
    })];
    let mut first_host_rules = Vec::new();
    for (h, host) in HOSTS.iter().enumerate() {
        // Spread `rules` as evenly as possible: 10 → 3, 3, 2, 2.
        let count = rules / HOSTS.len() + usize::from(h < rules % HOSTS.len());
        let gen: Vec<GenRule> = (0..count).map(|i| gen_rule(h * rules + i, &mut rng)).collect();
        resources.push(json!({
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": format!("vs{h}"), "namespace": "default"},
            "spec": {"hosts": [host], "http": gen.iter().map(|g| g.rule.clone()).collect::<Vec<_>>()}
        }));
        if h == 0 {
            first_host_rules = gen;
        }
    }
    let request = |g: &GenRule| {
        let r = Request::new("GET", "shop.example.com", &g.path).with_header("user-agent", "bench/1.0");
        match &g.header {
            Some((n, v)) => r.with_header(n, v),
            None => r,
        }
    };
    // "Early" skips the first rule so that the index cannot win by looking at one entry only.
    let early = request(&first_host_rules[1.min(first_host_rules.len() - 1)]);
    let late = request(first_host_rules.last().expect("rules"));
    let miss = Request::new("GET", "shop.example.com", "/no/such/route?q=1").with_header("user-agent", "bench/1.0");
    Workload { json: json!({ "resources": resources }).to_string().into_bytes(), early, late, miss }
}

struct Fixture {
    table: RouteTable,
    early: Request,
    late: Request,
    miss: Request,
}

fn fixture(rules: usize) -> Fixture {
    let w = workload(rules);
    let compiled = compile_json(&w.json);
    assert!(!compiled.diagnostics.has_errors(), "{}", compiled.diagnostics);
    let table = compiled.table.expect("table");
    let total: usize = table.virtual_services.iter().map(|vs| vs.rules.len()).sum();
    assert_eq!(total, rules, "every generated rule compiles");
    // The requests hit what they claim to, by the index and by the linear reference alike.
    let vs = table.find_vs("shop.example.com").expect("vs");
    let last = vs.entries.len() - 1;
    for (req, want) in [(&w.early, Some(1.min(last))), (&w.late, Some(last)), (&w.miss, None)] {
        let port = table.request_port(req);
        let pos =
            |e: Option<&Entry>| e.map(|e| vs.entries.iter().position(|x| std::ptr::eq(x, e)).unwrap_or(usize::MAX));
        assert_eq!(pos(vs.first_match(req, port)), want, "{req:?}");
        assert_eq!(pos(linear_first_match(vs, req, port)), want, "{req:?}");
    }
    Fixture { table, early: w.early, late: w.late, miss: w.miss }
}

// === Baseline ===

/// What `decide` would do without the index: find the VirtualService, then try every entry in
/// order (the reference of `tests/index_equivalence.rs`).
fn linear_first_match<'v>(vs: &'v CompiledVs, req: &dyn RequestView, port: u32) -> Option<&'v Entry> {
    vs.entries.iter().find(|e| e.block.matches(req, port))
}

fn linear_decide<'t>(table: &'t RouteTable, req: &dyn RequestView) -> Option<&'t Entry> {
    let vs = table.find_vs(req.authority())?;
    linear_first_match(vs, req, table.request_port(req))
}

// === Benchmarks ===

fn bench_decide(bencher: Bencher, rules: usize, pick: fn(&Fixture) -> &Request) {
    let f = fixture(rules);
    let req = pick(&f);
    let mut rng = SplitMix64(7);
    bencher.bench_local(|| {
        let d = f.table.decide(black_box(req), &mut rng);
        black_box(matches!(d, meshroute::Decision::Matched(_)))
    });
}

fn bench_linear(bencher: Bencher, rules: usize, pick: fn(&Fixture) -> &Request) {
    let f = fixture(rules);
    let req = pick(&f);
    bencher.bench_local(|| black_box(linear_decide(&f.table, black_box(req)).is_some()));
}

#[divan::bench_group(sample_count = 200)]
mod decide {
    use super::*;

    #[divan::bench(args = SIZES)]
    fn early(b: Bencher, rules: usize) {
        bench_decide(b, rules, |f| &f.early);
    }

    #[divan::bench(args = SIZES)]
    fn late(b: Bencher, rules: usize) {
        bench_decide(b, rules, |f| &f.late);
    }

    #[divan::bench(args = SIZES)]
    fn miss(b: Bencher, rules: usize) {
        bench_decide(b, rules, |f| &f.miss);
    }
}

#[divan::bench_group(sample_count = 50)]
mod linear {
    use super::*;

    #[divan::bench(args = SIZES)]
    fn early(b: Bencher, rules: usize) {
        bench_linear(b, rules, |f| &f.early);
    }

    #[divan::bench(args = SIZES)]
    fn late(b: Bencher, rules: usize) {
        bench_linear(b, rules, |f| &f.late);
    }

    #[divan::bench(args = SIZES)]
    fn miss(b: Bencher, rules: usize) {
        bench_linear(b, rules, |f| &f.miss);
    }
}

/// JSON text → validated, indexed `RouteTable`.
#[divan::bench(args = SIZES, sample_count = 10, sample_size = 1)]
fn compile(b: Bencher, rules: usize) {
    let w = workload(rules);
    assert!(compile_json(&w.json).table.is_some());
    b.bench_local(|| compile_json(black_box(&w.json)).table.is_some());
}

//! The CLI with Kubernetes objects in the input: Bookinfo validates clean and explains to the
//! cluster Istio would pick, foreign kinds are info lines, `compile` ships a compact registry,
//! and bad Kubernetes objects are findings with file, line and field.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Command;

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn meshroute(args: &[&str]) -> Out {
    let out = Command::new(env!("CARGO_BIN_EXE_meshroute"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run meshroute");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

const BI: &str = "tests/fixtures/bookinfo/";

fn write(name: &str, text: &str) -> String {
    let dir = std::env::temp_dir().join(format!("meshroute-cli-registry-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p: PathBuf = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[test]
fn bookinfo_validates_and_explains_to_port_9080_with_or_without_its_services() {
    let (svc, dr, vs) = (
        format!("{BI}bookinfo.yaml"),
        format!("{BI}destination-rule-all.yaml"),
        format!("{BI}virtual-service-all-v1.yaml"),
    );
    let v = meshroute(&["validate", "-f", &svc, "-f", &dr, "-f", &vs]);
    assert_eq!(v.code, 0, "{}{}", v.stdout, v.stderr);
    assert!(!v.stdout.contains("error:"), "{}", v.stdout);
    // Only the subsets Bookinfo does not deploy (ratings v2*, details v2) are IST0173.
    assert_eq!(v.stdout.matches("(IST0173)").count(), 4, "{}", v.stdout);
    let want = "outbound|9080|v1|reviews.default.svc.cluster.local";
    for files in [vec![svc.as_str(), dr.as_str(), vs.as_str()], vec![dr.as_str(), vs.as_str()]] {
        let mut args = vec!["explain"];
        for f in &files {
            args.extend(["-f", f]);
        }
        args.extend(["GET", "http://reviews:9080/"]);
        let e = meshroute(&args);
        assert_eq!(e.code, 0, "{}", e.stderr);
        assert!(e.stdout.contains(want), "{files:?}:\n{}", e.stdout);
        assert!(!e.stdout.contains("outbound|80|"), "{}", e.stdout);
    }
    // A Service without VirtualService: istiod's default route on its port.
    let e = meshroute(&["explain", "-f", &svc, "GET", "http://ratings:9080/ratings/0"]);
    assert!(e.stdout.contains("outbound|9080||ratings.default.svc.cluster.local"), "{}", e.stdout);
}

#[test]
fn foreign_kinds_are_info_lines_and_the_compiled_table_routes_the_services() {
    let extra = write(
        "extra.yaml",
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: a}\n---\n\
         apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: b}\n---\n\
         apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny}\n",
    );
    let svc = format!("{BI}bookinfo.yaml");
    let v = meshroute(&["validate", "-f", &svc, "-f", &extra]);
    assert_eq!(v.code, 0, "{}", v.stdout);
    let info: Vec<&str> = v.stdout.lines().filter(|l| l.starts_with("info:")).collect();
    assert_eq!(info.len(), 2, "{}", v.stdout);
    assert!(
        info[0]
            .contains(":1: Ingress default/a: kind Ingress (networking.k8s.io/v1), 2 objects, not used by meshroute"),
        "{}",
        info[0]
    );

    let dr = format!("{BI}destination-rule-all.yaml");
    let c = meshroute(&["compile", "-f", &svc, "-f", &dr, "-f", &extra]);
    assert_eq!(c.code, 0, "{}", c.stderr);
    // The table carries the Services as its registry (their ports, not the objects): a host
    // without a VirtualService gets istiod's default route on its port; a foreign object is none.
    let table = meshroute::table::load(c.stdout.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    let default_route = |authority: &str| match table
        .decide(&meshroute::Request::new("GET", authority, "/"), &mut meshroute::SplitMix64(1))
    {
        meshroute::Decision::Default(d) => Some(d.cluster.clone()),
        _ => None,
    };
    for svc in ["productpage", "details", "ratings", "reviews"] {
        let want = format!("outbound|9080||{svc}.default.svc.cluster.local");
        assert_eq!(default_route(&format!("{svc}:9080")).as_deref(), Some(want.as_str()), "{svc}");
    }
    assert_eq!(default_route("a:80"), None, "an Ingress is no registry host");
    let table_json: serde_json::Value = serde_json::from_str(&c.stdout).unwrap();
    let text = table_json.to_string();
    for foreign in ["Ingress", "AuthorizationPolicy", "Deployment"] {
        assert!(!text.contains(foreign), "the table keeps no {foreign}");
    }
    // The table is what the filter loads, not an input: giving it back is refused, by name.
    let pc_file = write("plugin.json", &c.stdout);
    let vs = format!("{BI}virtual-service-reviews-v3.yaml");
    let e = meshroute(&["explain", "-f", &pc_file, "-f", &vs, "GET", "http://reviews/"]);
    assert_eq!(e.code, 2, "{}{}", e.stdout, e.stderr);
    assert!(e.stderr.contains(&format!("{pc_file}:1: this is a compiled table")), "{}{}", e.stdout, e.stderr);
}

#[test]
fn bad_kubernetes_objects_name_file_line_and_field() {
    let f = write(
        "bad.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: noports}\nspec:\n  selector: {app: x}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {name: badport}\nspec:\n  ports:\n  - name: http\n    port: 70000\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: ghost-1\n  labels: {kubernetes.io/service-name: ghost}\nendpoints: []\n---\n\
         apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: y}\nspec:\n  template:\n    metadata:\n      labels: {app: y}\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata: {name: tls}\ntype: kubernetes.io/tls\ndata:\n  tls.crt: bm90IGEgY2VydA==\n  tls.key: a2V5\n",
    );
    let v = meshroute(&["validate", "-f", &f]);
    assert_eq!(v.code, 1, "the port out of range is an error:\n{}", v.stdout);
    let has = |s: &str| v.stdout.lines().any(|l| l.contains(s));
    assert!(has(":4: Service default/noports: spec.ports: Service has no ports"), "{}", v.stdout);
    assert!(has(":13: Service default/badport: spec.ports[0].port: a Service port needs a number"), "{}", v.stdout);
    assert!(
        has("EndpointSlice default/ghost-1: metadata.labels.kubernetes.io/service-name: no Service default/ghost"),
        "{}",
        v.stdout
    );
    assert!(
        has("Service default/noports: spec.selector: the selector app=x of Service default/noports matches none"),
        "{}",
        v.stdout
    );
    assert!(has(":35: Secret default/tls: data.tls.crt: tls.crt is not a PEM certificate"), "{}", v.stdout);
    // Nothing half-written: compile refuses and writes no file.
    let out = std::env::temp_dir().join(format!("meshroute-cli-registry-out-{}.json", std::process::id()));
    let c = meshroute(&["compile", "-f", &f, "-o", &out.display().to_string()]);
    assert_eq!(c.code, 1);
    assert!(!out.exists());
}

/// MeshConfig (K16): `--mesh-config` takes what `istioctl analyze --meshConfigFile` takes, or the
/// `istio` ConfigMap; without the flag the `istio-system/istio` ConfigMap among the inputs is
/// read. DNS auto-allocation silences IST0134; exportTo defaults and REGISTRY_ONLY apply.
#[test]
fn mesh_config_comes_from_a_file_or_the_istio_config_map() {
    let se = write(
        "mesh-se.yaml",
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: db, namespace: default}\n\
         spec: {hosts: [db.example.com], ports: [{number: 5432, name: tcp, protocol: TCP}]}\n",
    );
    let plain = meshroute(&["validate", "-f", &se]);
    assert!(plain.stdout.contains("(IST0134)"), "{}", plain.stdout);

    let mesh = write(
        "mesh.yaml",
        "defaultConfig:\n  proxyMetadata:\n    ISTIO_META_DNS_CAPTURE: \"true\"\n    ISTIO_META_DNS_AUTO_ALLOCATE: \"true\"\n\
         enableTracing: true\n",
    );
    let with = meshroute(&["validate", "-f", &se, "--mesh-config", &mesh]);
    assert_eq!(with.code, 0, "{}{}", with.stdout, with.stderr);
    assert!(!with.stdout.contains("IST0134"), "{}", with.stdout);
    assert!(with.stderr.contains("MeshConfig fields not used by meshroute: enableTracing"), "{}", with.stderr);

    // The ConfigMap istiod reads, in the input stream: REGISTRY_ONLY blocks an unknown host.
    let cm = write(
        "mesh-cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\n\
         data:\n  mesh: |-\n    outboundTrafficPolicy:\n      mode: REGISTRY_ONLY\n",
    );
    let blocked = meshroute(&["explain", "-f", &se, "-f", &cm, "GET", "http://unknown.example.com/"]);
    assert!(blocked.stdout.contains("502"), "{}{}", blocked.stdout, blocked.stderr);
    let open = meshroute(&["explain", "-f", &se, "GET", "http://unknown.example.com/"]);
    assert!(!open.stdout.contains("502"), "{}", open.stdout);

    // A field of the wrong shape: file, line and field.
    let bad = write("mesh-bad.yaml", "defaultServiceExportTo: \".\"\n");
    let out = meshroute(&["validate", "-f", &se, "--mesh-config", &bad]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains(&format!("{bad}:1: MeshConfig defaultServiceExportTo: expected a list of strings")),
        "{}{}",
        out.stdout,
        out.stderr
    );
}

/// IST0149 (K17) is made for gateway pods no RequestAuthentication selects, and a
/// RequestAuthentication in istio-system selecting the ingress gateway removes it.
#[test]
fn jwt_claim_routing_needs_a_request_authentication_on_the_gateway_pods() {
    let dir = "tests/fixtures/istio-analyzers/";
    let base = [
        "validate".to_string(),
        "-f".into(),
        format!("{dir}_default-ingressgateway.yaml"),
        "-f".into(),
        format!("{dir}virtualservice_jwtclaimroute.yaml"),
    ];
    let args: Vec<&str> = base.iter().map(String::as_str).collect();
    let without = meshroute(&args);
    assert!(
        without.stdout.contains(
            "(key: @request.auth.claims.foo) but found no request authentication for the gateway (default/foo-gateway)"
        ),
        "{}",
        without.stdout
    );
    let ra = write(
        "ra.yaml",
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: jwt, namespace: istio-system}\n\
         spec:\n  selector: {matchLabels: {istio: ingressgateway}}\n  jwtRules: [{issuer: https://issuer.example.com}]\n",
    );
    let mut with_args = args.clone();
    with_args.extend(["-f", ra.as_str()]);
    let with = meshroute(&with_args);
    assert!(!with.stdout.contains("IST0149"), "{}", with.stdout);
}

//! No field of the CRD model is dropped silently: every field is either used (taking it away
//! changes what meshroute compiles, generates for Envoy, or reports) or named by an MR0007
//! warning. The field list comes from the model itself (serde's own field tables), so a field
//! added to `src/crd.rs` later fails here until the fixture sets it and meshroute uses or warns
//! about it.

#![allow(clippy::panic)]

use serde::de::{self, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{json, Value};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

// === The model's field paths, read from serde ===

/// A deserializer that answers every request with the smallest value of the asked shape and
/// records, for every struct it is asked for, the paths of all its fields. Maps are recorded as
/// `path.*`, sequences as `path[]`; `serde_json::Value` fields (opaque) as leaves.
struct Probe<'a> {
    path: String,
    out: &'a RefCell<Model>,
    depth: usize,
}

/// What the probe learnt: every `(struct, field)` of the model, which struct sits at each
/// (index-free) path, and which paths are maps.
#[derive(Default)]
struct Model {
    fields: BTreeSet<(String, String)>,
    struct_at: BTreeMap<String, String>,
    maps: BTreeSet<String>,
}

type Error = de::value::Error;

/// `(struct, alias)` pairs of the model: other spellings of a field, not fields. A new alias makes
/// the probe fail with "duplicate field" until it is listed here.
const ALIASES: &[(&str, &str)] = &[("HttpRoute", "mirror_percent"), ("WorkloadSelector", "labels")];

impl<'a> Probe<'a> {
    fn child(&self, suffix: &str) -> Probe<'a> {
        Probe { path: format!("{}{suffix}", self.path), out: self.out, depth: self.depth + 1 }
    }
}

macro_rules! scalar {
    ($($method:ident => $visit:ident($($value:expr)?)),* $(,)?) => {
        $(fn $method<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> { v.$visit($($value)?) })*
    };
}

impl<'de> Deserializer<'de> for Probe<'_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_unit()
    }

    scalar! {
        deserialize_bool => visit_bool(false),
        deserialize_i8 => visit_i64(0), deserialize_i16 => visit_i64(0), deserialize_i32 => visit_i64(0),
        deserialize_i64 => visit_i64(0), deserialize_u8 => visit_u64(0), deserialize_u16 => visit_u64(0),
        deserialize_u32 => visit_u64(0), deserialize_u64 => visit_u64(0), deserialize_f32 => visit_f64(0.0),
        deserialize_f64 => visit_f64(0.0), deserialize_char => visit_char('x'), deserialize_str => visit_str(""),
        deserialize_string => visit_str(""), deserialize_bytes => visit_bytes(&[]),
        deserialize_byte_buf => visit_bytes(&[]), deserialize_unit => visit_unit(),
        deserialize_identifier => visit_str(""), deserialize_ignored_any => visit_unit(),
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_some(self)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(self, _: &'static str, v: V) -> Result<V::Value, Error> {
        v.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _: &'static str, v: V) -> Result<V::Value, Error> {
        v.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_seq(One { probe: Some(self.child("[]")) })
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _: usize, v: V) -> Result<V::Value, Error> {
        self.deserialize_seq(v)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(self, _: &'static str, _: usize, v: V) -> Result<V::Value, Error> {
        self.deserialize_seq(v)
    }

    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        self.out.borrow_mut().maps.insert(self.path.clone());
        v.visit_map(OneEntry { probe: Some(self.child(".*")), key_done: false })
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Error> {
        if self.depth > 16 {
            return Err(de::Error::custom(format!("model too deep at {}", self.path)));
        }
        // serde's field table also lists aliases; feeding both spellings is a duplicate field.
        let fields: Vec<&'static str> = fields.iter().copied().filter(|f| !ALIASES.contains(&(name, *f))).collect();
        {
            let mut m = self.out.borrow_mut();
            m.struct_at.insert(self.path.clone(), name.to_string());
            for f in &fields {
                m.fields.insert((name.to_string(), f.to_string()));
            }
        }
        v.visit_map(Fields { probe: self, fields, at: 0 })
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        _: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Error> {
        Err(de::Error::custom(format!("enum {name} at {}: teach the probe", self.path)))
    }
}

struct One<'a> {
    probe: Option<Probe<'a>>,
}

impl<'de> SeqAccess<'de> for One<'_> {
    type Error = Error;
    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, Error> {
        self.probe.take().map(|p| seed.deserialize(p)).transpose()
    }
}

struct OneEntry<'a> {
    probe: Option<Probe<'a>>,
    key_done: bool,
}

impl<'de> MapAccess<'de> for OneEntry<'_> {
    type Error = Error;
    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Error> {
        if self.key_done || self.probe.is_none() {
            return Ok(None);
        }
        self.key_done = true;
        seed.deserialize("k".into_deserializer()).map(Some)
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        match self.probe.take() {
            Some(p) => seed.deserialize(p),
            None => Err(de::Error::custom("value without key")),
        }
    }
}

struct Fields<'a> {
    probe: Probe<'a>,
    fields: Vec<&'static str>,
    at: usize,
}

impl<'de> MapAccess<'de> for Fields<'_> {
    type Error = Error;
    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Error> {
        match self.fields.get(self.at) {
            Some(f) => seed.deserialize((*f).into_deserializer()).map(Some),
            None => Ok(None),
        }
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let f = self.fields.get(self.at).copied().unwrap_or("");
        self.at += 1;
        seed.deserialize(self.probe.child(&format!(".{f}")))
    }
}

fn probe<T: for<'de> serde::Deserialize<'de>>(root: &str, model: &RefCell<Model>) {
    let probe = Probe { path: root.to_string(), out: model, depth: 0 };
    if let Err(e) = T::deserialize(probe) {
        panic!("probing {root}: {e}");
    }
}

fn model() -> Model {
    use meshroute::crd;
    let m = RefCell::new(Model::default());
    probe::<crd::VirtualService>("VirtualService", &m);
    probe::<crd::DestinationRule>("DestinationRule", &m);
    probe::<crd::ServiceEntry>("ServiceEntry", &m);
    probe::<crd::Gateway>("Gateway", &m);
    probe::<crd::Sidecar>("Sidecar", &m);
    probe::<crd::WorkloadEntry>("WorkloadEntry", &m);
    m.into_inner()
}

// === The fixture: every field set at once ===

const FIXTURE: &str = include_str!("fixtures/every-field.json");

/// The proxies the fixture is looked at from: a sidecar the Sidecar selects, one it does not, a
/// sidecar of another namespace (for `exportTo`), and the Gateway.
fn perspectives() -> [Value; 4] {
    [
        json!({"namespace": "default", "labels": {"app": "web", "version": "v1"}, "locality": "us-east/zone-a/sub-1"}),
        json!({"namespace": "default", "labels": {"app": "batch"}}),
        json!({"namespace": "other"}),
        json!({"namespace": "default", "gateway": "default/gw", "labels": {"app": "edge"}}),
    ]
}

fn fixture() -> Value {
    serde_json::from_str(FIXTURE).unwrap_or_else(|e| panic!("every-field.json: {e}"))
}

fn compiled(doc: &Value, settings: Value) -> (meshroute::Bundle, meshroute::Compiled) {
    let mut doc = doc.clone();
    doc["settings"] = settings;
    let (bundle, loaded) = meshroute::load_value(doc);
    let c = meshroute::compile(&bundle, loaded);
    (bundle, c)
}

/// Everything meshroute makes of a document, from every perspective: diagnostics, the compiled
/// table (rules, matches, clusters, default routes) and the generated Envoy configuration.
fn render(doc: &Value) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for settings in perspectives() {
        let (bundle, c) = compiled(doc, settings);
        let _ = writeln!(out, "{}", c.diagnostics);
        let Some(t) = c.table else { continue };
        for vs in &t.virtual_services {
            let _ = writeln!(out, "{:?} {:?} {:?} {:?}", vs.name, vs.hosts, vs.rules, vs.entries);
        }
        let _ = writeln!(out, "{:?} {}", t.clusters, t.registry_only);
        for (h, port) in [("reviews.example.com", 80), ("ratings.example.com", 9080), ("weather.example.com", 443)] {
            let _ = writeln!(out, "{h}: {:?} {}", t.default_route(h, port), t.in_registry(h));
        }
        let opts = meshroute::envoy::Options {
            wasm: std::path::Path::new("meshroute.wasm"),
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 15001)),
            admin: std::net::SocketAddr::from(([127, 0, 0, 1], 15000)),
            // Never read: credential files are only named (and noted missing).
            credentials_dir: Some(std::path::Path::new("/nonexistent/credentials")),
        };
        match meshroute::envoy::generate(&bundle, &t.clusters, &json!({}), &opts) {
            Ok(g) => {
                let _ = writeln!(out, "{}\n{:?}", g.config, g.notes);
            }
            Err(e) => {
                let _ = writeln!(out, "envoy: {e}");
            }
        }
    }
    out
}

/// One occurrence of a field in the fixture: where it is (JSON pointer) and which model field.
struct Occurrence {
    pointer: Vec<Value>,
    field: (String, String),
}

fn walk(model: &Model, v: &Value, norm: &str, pointer: &mut Vec<Value>, out: &mut Vec<Occurrence>) {
    match v {
        Value::Object(map) if model.maps.contains(norm) => {
            for (k, child) in map {
                pointer.push(json!(k));
                walk(model, child, &format!("{norm}.*"), pointer, out);
                pointer.pop();
            }
        }
        Value::Object(map) => {
            // No struct here: an opaque `Value` field, taken whole.
            let Some(name) = model.struct_at.get(norm) else { return };
            for (k, child) in map {
                pointer.push(json!(k));
                out.push(Occurrence { pointer: pointer.clone(), field: (name.clone(), k.clone()) });
                walk(model, child, &format!("{norm}.{k}"), pointer, out);
                pointer.pop();
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                pointer.push(json!(i));
                walk(model, child, &format!("{norm}[]"), pointer, out);
                pointer.pop();
            }
        }
        _ => {}
    }
}

fn occurrences(model: &Model, doc: &Value) -> Vec<Occurrence> {
    let mut out = Vec::new();
    for (i, r) in doc["resources"].as_array().into_iter().flatten().enumerate() {
        let kind = r["kind"].as_str().unwrap_or_default();
        let mut pointer = vec![json!("resources"), json!(i), json!("spec")];
        walk(model, &r["spec"], kind, &mut pointer, &mut out);
    }
    out
}

fn without(doc: &Value, pointer: &[Value]) -> Value {
    let mut doc = doc.clone();
    let Some((last, parents)) = pointer.split_last() else { return doc };
    let mut at = &mut doc;
    for p in parents {
        at = match p {
            Value::Number(n) => &mut at[n.as_u64().unwrap_or(0) as usize],
            Value::String(k) => &mut at[k.as_str()],
            _ => return doc,
        };
    }
    if let (Some(obj), Some(k)) = (at.as_object_mut(), last.as_str()) {
        obj.remove(k);
    }
    doc
}

fn strip_indices(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut in_index = false;
    for c in path.chars() {
        match c {
            '[' => {
                in_index = true;
                out.push_str("[]");
            }
            ']' => in_index = false,
            _ if in_index => {}
            c => out.push(c),
        }
    }
    out
}

/// The model fields warnings name as not applied: MR0007, or a warning saying the field is
/// ignored; resource kind plus path, indices dropped, mapped through the struct at the parent
/// path.
fn warned_fields(model: &Model, doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for settings in perspectives() {
        let (_, c) = compiled(doc, settings);
        let not_applied = |d: &&meshroute::Diagnostic| {
            d.code == Some("MR0007") || (d.severity == meshroute::Severity::Warning && d.message.contains("ignored"))
        };
        for d in c.diagnostics.iter().filter(not_applied) {
            let Some(r) = &d.resource else { continue };
            let Some(path) = d.path.strip_prefix("spec.") else { continue };
            let norm = strip_indices(path);
            let (parent, field) = match norm.rsplit_once('.') {
                Some((p, f)) => (format!("{}.{p}", r.kind), f.to_string()),
                None => (r.kind.clone(), norm.clone()),
            };
            if let Some(name) = model.struct_at.get(&parent) {
                out.insert((name.clone(), field));
            }
        }
    }
    out
}

#[test]
fn the_fixture_is_valid_and_names_only_model_fields() {
    let doc = fixture();
    for settings in perspectives() {
        let (_, c) = compiled(&doc, settings.clone());
        assert!(!c.diagnostics.has_errors(), "from {settings}:\n{}", c.diagnostics);
        assert!(c.diagnostics.iter().all(|d| d.code != Some("MR0002")), "{}", c.diagnostics);
    }
}

#[test]
fn the_fixture_sets_every_field_of_the_model() {
    let model = model();
    let set: BTreeSet<(String, String)> = occurrences(&model, &fixture()).into_iter().map(|o| o.field).collect();
    let missing: Vec<String> = model
        .fields
        .difference(&set)
        .filter(|(s, f)| !REFUSED.iter().any(|r| r.0 == s && r.1 == f))
        .map(|(s, f)| format!("{s}.{f}"))
        .collect();
    assert!(missing.is_empty(), "tests/fixtures/every-field.json does not set:\n{}", missing.join("\n"));
}

#[test]
fn every_field_is_used_or_warned_about() {
    let model = model();
    let doc = fixture();
    let baseline = render(&doc);
    let warned = warned_fields(&model, &doc);
    let mut used: BTreeSet<(String, String)> = BTreeSet::new();
    let mut seen: BTreeSet<(String, String)> = BTreeSet::new();
    for o in occurrences(&model, &doc) {
        seen.insert(o.field.clone());
        if used.contains(&o.field) || warned.contains(&o.field) {
            continue;
        }
        if render(&without(&doc, &o.pointer)) != baseline {
            used.insert(o.field);
        }
    }
    let silent: Vec<String> =
        seen.iter().filter(|f| !used.contains(*f) && !warned.contains(*f)).map(|(s, f)| format!("{s}.{f}")).collect();
    assert!(silent.is_empty(), "set, but neither used nor warned about (MR0007):\n{}", silent.join("\n"));
}

/// Fields Istio's webhook refuses whenever they are set, so the valid fixture cannot carry
/// them: `(struct, field, kind/name in the fixture, pointer under its spec, value)`.
const REFUSED: &[(&str, &str, &str, &[&str], &str)] = &[
    ("FaultDelay", "exponentialDelay", "VirtualService/reviews", &["http", "1", "fault", "delay"], "\"1s\""),
    ("FaultAbort", "http2Error", "VirtualService/reviews", &["http", "2", "fault", "abort"], "\"CANCEL\""),
    ("GatewayPort", "targetPort", "Gateway/gw", &["servers", "1", "port"], "8443"),
];

#[test]
fn fields_istio_refuses_are_errors() {
    for (st, field, name, pointer, value) in REFUSED {
        let mut doc = fixture();
        let is_it = |r: &&mut Value| {
            format!("{}/{}", r["kind"].as_str().unwrap_or(""), r["metadata"]["name"].as_str().unwrap_or("")) == *name
        };
        let Some(r) = doc["resources"].as_array_mut().and_then(|rs| rs.iter_mut().find(is_it)) else {
            panic!("no resource {name}")
        };
        let mut at = &mut r["spec"];
        for p in *pointer {
            at = match p.parse::<usize>() {
                Ok(i) => &mut at[i],
                Err(_) => &mut at[*p],
            };
        }
        at[*field] = serde_json::from_str(value).unwrap_or_else(|e| panic!("{e}"));
        let (_, c) = compiled(&doc, perspectives()[0].clone());
        let path = format!(
            "spec.{}.{field}",
            pointer
                .iter()
                .map(|p| match p.parse::<usize>() {
                    Ok(_) => format!("[{p}]"),
                    Err(_) => format!(".{p}"),
                })
                .collect::<String>()
                .trim_start_matches('.')
                .replace(".[", "[")
        );
        assert!(
            c.diagnostics.iter().any(|d| d.severity == meshroute::Severity::Error && d.path == path),
            "{st}.{field}: expected an error at {path}, got:\n{}",
            c.diagnostics
        );
    }
}

//! Reading the user's files: paths, directories and stdin; YAML streams and JSON; Kubernetes
//! `List`s and plugin-config objects flattened into one resource list whose positions are the
//! core's resource indices, each resource remembering its file and the line of every field.

use crate::yaml::{self, LineMap, Node, NodeKind};
use meshroute::{Diagnostic, Diagnostics, Severity};
use serde_json::{Map, Value};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

/// One resource as read, in input order (its position is the core's `ResourceRef.index`).
#[derive(Debug, Clone)]
pub struct Loaded {
    pub value: Value,
    pub file: String,
    pub lines: LineMap,
}

/// A settings object and where it came from.
#[derive(Debug, Clone)]
pub struct SettingsSource {
    pub value: Map<String, Value>,
    pub file: String,
    /// Paths start with `settings`, as in the core's diagnostics.
    pub lines: LineMap,
}

/// A file that could not be read or parsed: the command exits 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    pub file: String,
    pub line: Option<usize>,
    pub col: Option<usize>,
    pub message: String,
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.col) {
            (Some(l), Some(c)) => write!(f, "error: {}:{l}:{c}: {}", self.file, self.message),
            (Some(l), None) => write!(f, "error: {}:{l}: {}", self.file, self.message),
            _ => write!(f, "error: {}: {}", self.file, self.message),
        }
    }
}

#[derive(Debug, Default)]
pub struct Inputs {
    pub resources: Vec<Loaded>,
    /// `--settings`, else a `settings` object found in a plugin-config input.
    pub settings: Option<SettingsSource>,
    /// A compact `registry` found in a plugin-config input (what `meshroute compile` wrote).
    pub registry: Option<Value>,
    /// Settings from the MeshConfig (`--mesh-config`, else the `istio` ConfigMap of
    /// `istio-system` in the input); explicit settings override them (K16).
    pub mesh: Option<MeshSource>,
    pub errors: Vec<InputError>,
}

/// The MeshConfig read, where from, and what of it meshroute uses.
#[derive(Debug, Clone)]
pub struct MeshSource {
    pub file: String,
    pub config: meshroute::mesh_config::FromMeshConfig,
}

/// `{"format", "table"}`: what `meshroute compile` writes. It keeps neither resources nor
/// settings in their source form, so it is refused as input by name, not misread.
fn is_compiled_table(doc: &Node) -> bool {
    matches!(doc.kind, NodeKind::Map(_)) && doc.get("format").is_some() && doc.get("table").is_some()
}

impl Inputs {
    /// Reads every path (`-` is stdin). Unreadable inputs are collected, not fatal, so that all
    /// problems are reported in one run.
    pub fn read(paths: &[String], settings: Option<&Path>) -> Inputs {
        let mut inputs = Inputs::default();
        for p in paths {
            for (name, text) in inputs.expand(p) {
                inputs.add_text(&name, &text);
            }
        }
        if let Some(sp) = settings {
            let name = sp.display().to_string();
            match read_file(sp) {
                Ok(text) => inputs.add_settings_file(&name, &text),
                Err(e) => inputs.errors.push(e.in_file(&name)),
            }
        }
        inputs
    }

    /// `(display name, text)` of every file a path stands for.
    fn expand(&mut self, p: &str) -> Vec<(String, String)> {
        if p == "-" {
            let mut bytes = Vec::new();
            let read = std::io::stdin()
                .take(MAX_INPUT_BYTES + 1)
                .read_to_end(&mut bytes)
                .map_err(|e| ReadError::from(format!("cannot read standard input: {e}")))
                .and_then(|_| decode(bytes));
            return match read {
                Ok(text) => vec![("<stdin>".to_string(), text)],
                Err(e) => {
                    self.errors.push(e.in_file("<stdin>"));
                    Vec::new()
                }
            };
        }
        let path = PathBuf::from(p);
        if path.is_dir() {
            let entries = match std::fs::read_dir(&path) {
                Ok(rd) => rd,
                Err(e) => {
                    self.error(p, format!("cannot read directory: {e}"));
                    return Vec::new();
                }
            };
            let mut files: Vec<PathBuf> =
                entries.filter_map(Result::ok).map(|e| e.path()).filter(|f| f.is_file() && is_config_file(f)).collect();
            files.sort();
            let mut out = Vec::new();
            for f in files {
                let name = f.display().to_string();
                match read_file(&f) {
                    Ok(t) => out.push((name, t)),
                    Err(e) => self.errors.push(e.in_file(&name)),
                }
            }
            return out;
        }
        match read_file(&path) {
            Ok(t) => vec![(p.to_string(), t)],
            Err(e) => {
                self.errors.push(e.in_file(p));
                Vec::new()
            }
        }
    }

    fn error(&mut self, file: &str, message: String) {
        self.errors.push(ReadError::from(message).in_file(file));
    }

    /// Adds the documents of one file.
    pub fn add_text(&mut self, name: &str, text: &str) {
        match yaml::parse_documents(text) {
            Ok(docs) => {
                for d in docs {
                    self.add_document(name, d);
                }
            }
            Err(e) => self.errors.push(InputError {
                file: name.to_string(),
                line: Some(e.line),
                col: Some(e.col),
                message: e.message,
            }),
        }
    }

    fn add_document(&mut self, file: &str, doc: Node) {
        if is_compiled_table(&doc) {
            // A compiled table keeps no resources to read back: say so instead of finding none.
            self.errors.push(InputError {
                file: file.to_string(),
                line: Some(doc.line),
                col: None,
                message: "this is a compiled table (`meshroute compile` output, what the filter loads); give the \
                          Istio resources it was compiled from"
                    .into(),
            });
            return;
        }
        let is_plugin_config =
            matches!(doc.kind, NodeKind::Map(_)) && (doc.get("resources").is_some() || doc.get("settings").is_some());
        if !is_plugin_config {
            self.flatten(file, doc);
            return;
        }
        let NodeKind::Map(entries) = doc.kind else { return };
        for (key, line, node) in entries {
            match key.as_str() {
                "resources" => self.flatten(file, node),
                "registry" => self.registry = Some(node.to_value()),
                "settings" => {
                    // `--settings` wins over settings embedded in an input.
                    if self.settings.is_none() {
                        self.set_settings(file, node);
                    }
                }
                other => self.errors.push(InputError {
                    file: file.to_string(),
                    line: Some(line),
                    col: None,
                    message: format!(
                        "unknown key {other:?} in a plugin configuration (expected resources, settings, registry)"
                    ),
                }),
            }
        }
    }

    /// Lists and `kind: List` are opened up, nulls (empty documents) dropped — the same shapes
    /// the core's loader accepts, so that positions agree.
    fn flatten(&mut self, file: &str, node: Node) {
        match node.kind {
            NodeKind::Scalar(Value::Null) => {}
            NodeKind::Seq(items) => items.into_iter().for_each(|n| self.flatten(file, n)),
            NodeKind::Map(_) if node.get("kind").and_then(Node::as_str) == Some("List") => {
                if let Some(Node { kind: NodeKind::Seq(items), .. }) = node.get("items").cloned() {
                    items.into_iter().for_each(|n| self.flatten(file, n));
                }
            }
            _ => {
                let mut lines = LineMap::default();
                node.record_lines("", &mut lines);
                self.resources.push(Loaded { value: node.to_value(), file: file.to_string(), lines });
            }
        }
    }

    fn add_settings_file(&mut self, name: &str, text: &str) {
        match yaml::parse_documents(text) {
            Ok(docs) => {
                let mut docs = docs.into_iter().filter(|d| !d.is_null());
                match (docs.next(), docs.next()) {
                    (Some(d), None) if is_compiled_table(&d) => self.errors.push(InputError {
                        file: name.to_string(),
                        line: Some(d.line),
                        col: None,
                        message: "this is a compiled table (`meshroute compile` output), not settings; give the \
                                  settings it was compiled with (namespace, labels, gateway, ...)"
                            .into(),
                    }),
                    (Some(d), None) => {
                        // A whole plugin configuration can serve as settings too.
                        let d = match d.get("settings") {
                            Some(s) if d.get("resources").is_some() || d.get("settings").is_some() => s.clone(),
                            _ => d,
                        };
                        self.settings = None;
                        self.set_settings(name, d);
                    }
                    (None, _) => self.settings = Some(empty_settings(name)),
                    (Some(_), Some(second)) => self.errors.push(InputError {
                        file: name.to_string(),
                        line: Some(second.line),
                        col: None,
                        message: "a settings file holds one object, found more than one document".into(),
                    }),
                }
            }
            Err(e) => self.errors.push(InputError {
                file: name.to_string(),
                line: Some(e.line),
                col: Some(e.col),
                message: e.message,
            }),
        }
    }

    fn set_settings(&mut self, file: &str, node: Node) {
        let mut lines = LineMap::default();
        node.record_lines("settings", &mut lines);
        match node.to_value() {
            Value::Object(value) => self.settings = Some(SettingsSource { value, file: file.to_string(), lines }),
            Value::Null => self.settings = Some(empty_settings(file)),
            _ => self.errors.push(InputError {
                file: file.to_string(),
                line: Some(node.line),
                col: None,
                message: "settings must be an object (namespace, labels, gateway, ...)".into(),
            }),
        }
    }

    /// Reads the MeshConfig of `--mesh-config` (what `istioctl analyze --meshConfigFile` takes):
    /// a MeshConfig object, or the `istio` ConfigMap holding one under `data.mesh`.
    pub fn add_mesh_config_file(&mut self, path: &Path) {
        let name = path.display().to_string();
        match read_file(path) {
            Ok(text) => match yaml::parse_documents(&text) {
                Ok(docs) => {
                    let mut docs = docs.into_iter().filter(|d| !d.is_null());
                    match (docs.next(), docs.next()) {
                        (Some(d), None) if d.get("kind").and_then(Node::as_str) == Some("ConfigMap") => {
                            match d.get("data").and_then(|data| data.get("mesh")) {
                                Some(mesh) => self.add_mesh_text(&name, mesh.line, mesh.as_str().unwrap_or_default()),
                                None => self.errors.push(InputError {
                                    file: name,
                                    line: Some(d.line),
                                    col: None,
                                    message: "the ConfigMap has no data.mesh (the MeshConfig istiod reads)".into(),
                                }),
                            }
                        }
                        (Some(d), None) => self.set_mesh(&name, &d),
                        (None, _) => self.set_mesh_value(&name, 1, &Value::Null),
                        (Some(_), Some(second)) => self.errors.push(InputError {
                            file: name,
                            line: Some(second.line),
                            col: None,
                            message: "a MeshConfig file holds one object, found more than one document".into(),
                        }),
                    }
                }
                Err(e) => self.errors.push(InputError {
                    file: name,
                    line: Some(e.line),
                    col: Some(e.col),
                    message: e.message,
                }),
            },
            Err(e) => self.errors.push(e.in_file(&name)),
        }
    }

    /// Without `--mesh-config`: the `istio` ConfigMap of `istio-system` among the inputs (what
    /// `helm template istiod` or `kubectl get cm istio -n istio-system -o yaml` gives), if any.
    pub fn mesh_config_from_inputs(&mut self) {
        if self.mesh.is_some() {
            return;
        }
        let found = self.resources.iter().find_map(|r| {
            let v = &r.value;
            let is_istio_cm = v.get("kind").and_then(Value::as_str) == Some("ConfigMap")
                && v.pointer("/metadata/name").and_then(Value::as_str) == Some("istio")
                && v.pointer("/metadata/namespace").and_then(Value::as_str) == Some("istio-system");
            let mesh = v.pointer("/data/mesh").and_then(Value::as_str).filter(|_| is_istio_cm)?;
            Some((r.file.clone(), mesh.to_string(), r.lines.line_of("data.mesh").unwrap_or(1)))
        });
        if let Some((file, text, line)) = found {
            self.add_mesh_text(&file, line, &text);
        }
    }

    /// A MeshConfig embedded as YAML text (a ConfigMap's `data.mesh`, starting at `line`).
    fn add_mesh_text(&mut self, file: &str, line: usize, text: &str) {
        match yaml::parse_documents(text) {
            Ok(docs) => match docs.into_iter().find(|d| !d.is_null()) {
                Some(d) => self.set_mesh(file, &d),
                None => self.set_mesh_value(file, line, &Value::Null),
            },
            Err(e) => self.errors.push(InputError {
                file: file.to_string(),
                line: Some(line + e.line),
                col: None,
                message: format!("data.mesh: {}", e.message),
            }),
        }
    }

    fn set_mesh(&mut self, file: &str, node: &Node) {
        self.set_mesh_value(file, node.line, &node.to_value());
    }

    fn set_mesh_value(&mut self, file: &str, line: usize, value: &Value) {
        match meshroute::mesh_config::settings_from(value) {
            Ok(config) => self.mesh = Some(MeshSource { file: file.to_string(), config }),
            Err(e) => self.errors.push(InputError {
                file: file.to_string(),
                line: Some(line),
                col: None,
                message: e.to_string(),
            }),
        }
    }

    /// The settings object with command-line overrides applied.
    pub fn settings_value(&self, gateway: Option<&str>) -> Map<String, Value> {
        let mut s = self.mesh.as_ref().map(|m| m.config.settings.clone()).unwrap_or_default();
        s.extend(self.settings.as_ref().map(|s| s.value.clone()).unwrap_or_default());
        if let Some(g) = gateway {
            s.insert("gateway".into(), Value::String(g.to_string()));
        }
        s
    }

    /// `{"resources": [...], "settings": {...}}`: the source form (what the lifecycle state stores
    /// and `meshroute::envoy` compiles into the filter's table).
    pub fn plugin_config(&self, gateway: Option<&str>) -> Value {
        let mut m = Map::new();
        m.insert("resources".into(), Value::Array(self.resources.iter().map(|r| r.value.clone()).collect()));
        m.insert("settings".into(), Value::Object(self.settings_value(gateway)));
        if let Some(r) = &self.registry {
            m.insert("registry".into(), r.clone());
        }
        Value::Object(m)
    }

    /// `error|warning: FILE:LINE: Kind ns/name: field.path: message (CODE)`.
    pub fn render(&self, d: &Diagnostic) -> String {
        let mut out = format!("{}: ", d.severity.as_str());
        let (file, lines) = match &d.resource {
            Some(r) => match self.resources.get(r.index) {
                Some(l) => (Some(l.file.as_str()), Some(&l.lines)),
                None => (None, None),
            },
            None if d.path == "settings" || d.path.starts_with("settings.") => match &self.settings {
                Some(s) => (Some(s.file.as_str()), Some(&s.lines)),
                None => (Some("<settings>"), None),
            },
            None => match resource_index_of(&d.path).and_then(|i| self.resources.get(i)) {
                Some(l) => (Some(l.file.as_str()), Some(&l.lines)),
                None => (None, None),
            },
        };
        if let Some(f) = file {
            out.push_str(f);
            let path = if d.resource.is_none() && resource_index_of(&d.path).is_some() { "" } else { &d.path };
            if let Some(line) = lines.and_then(|l| l.line_of(path)) {
                out.push_str(&format!(":{line}"));
            }
            out.push_str(": ");
        }
        if let Some(r) = &d.resource {
            out.push_str(&format!("{r}: "));
        }
        if !d.path.is_empty() {
            out.push_str(&format!("{}: ", d.path.trim_end_matches('.')));
        }
        out.push_str(&self.name_resources(&d.message));
        if let Some(code) = d.code {
            out.push_str(&format!(" ({code})"));
        }
        out
    }

    /// The core can only say `resource #7`; the user wants `FILE:LINE`.
    fn name_resources(&self, message: &str) -> String {
        let mut out = String::with_capacity(message.len());
        let mut rest = message;
        while let Some(i) = rest.find("resource #") {
            out.push_str(&rest[..i]);
            let after = &rest[i + "resource #".len()..];
            let digits = after.bytes().take_while(u8::is_ascii_digit).count();
            match after[..digits].parse::<usize>().ok().and_then(|n| self.resources.get(n)) {
                Some(r) => {
                    out.push_str(&r.file);
                    if let Some(l) = r.lines.line_of("") {
                        out.push_str(&format!(":{l}"));
                    }
                }
                None => out.push_str(&rest[i..i + "resource #".len() + digits]),
            }
            rest = &after[digits..];
        }
        out.push_str(rest);
        out
    }

    /// Prints every diagnostic to stderr; returns (errors, warnings).
    pub fn report(&self, diags: &Diagnostics) -> (usize, usize) {
        let (mut e, mut w) = (0, 0);
        for d in diags.iter() {
            match d.severity {
                Severity::Error => e += 1,
                Severity::Warning => w += 1,
                Severity::Info => {}
            }
            eprintln!("{}", self.render(d));
        }
        if let Some(rest) = diags.omitted_summary() {
            eprintln!("meshroute: {rest}");
        }
        (e + diags.omitted(Severity::Error), w + diags.omitted(Severity::Warning))
    }
}

fn empty_settings(file: &str) -> SettingsSource {
    SettingsSource { value: Map::new(), file: file.to_string(), lines: LineMap::default() }
}

/// The core names a non-object resource by `[index]`.
fn resource_index_of(path: &str) -> Option<usize> {
    path.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
}

fn is_config_file(p: &Path) -> bool {
    matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json"))
}

/// Largest input file (or standard input) read: far above any real mesh configuration (27,531
/// VirtualServices are ~10 MB), and a bound on what one file can make the CLI allocate.
pub const MAX_INPUT_BYTES: u64 = 64 * 1024 * 1024;

/// Why a file could not be read, and where in it when that is known.
#[derive(Debug)]
struct ReadError {
    message: String,
    line: Option<usize>,
    col: Option<usize>,
}

impl From<String> for ReadError {
    fn from(message: String) -> Self {
        ReadError { message, line: None, col: None }
    }
}

impl ReadError {
    fn in_file(self, file: &str) -> InputError {
        InputError { file: file.to_string(), line: self.line, col: self.col, message: self.message }
    }
}

fn read_file(p: &Path) -> Result<String, ReadError> {
    let size = std::fs::metadata(p).map_err(|e| format!("cannot read: {e}"))?.len();
    if size > MAX_INPUT_BYTES {
        return Err(format!("file is {size} bytes, over the limit of {MAX_INPUT_BYTES} (64 MiB)").into());
    }
    let mut bytes = Vec::new();
    std::fs::File::open(p)
        .and_then(|f| f.take(MAX_INPUT_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| format!("cannot read: {e}"))?;
    decode(bytes)
}

/// UTF-8 text, or an error at the line and column (in characters) of the first bad byte.
fn decode(bytes: Vec<u8>) -> Result<String, ReadError> {
    if bytes.len() as u64 > MAX_INPUT_BYTES {
        return Err(format!("input is over the limit of {MAX_INPUT_BYTES} bytes (64 MiB)").into());
    }
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let good = &e.as_bytes()[..at];
        let line_start = good.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let col = String::from_utf8_lossy(&good[line_start..]).chars().count() + 1;
        ReadError {
            message: format!("not UTF-8 text: invalid byte 0x{:02x} at offset {at}", e.as_bytes()[at]),
            line: Some(good.iter().filter(|&&b| b == b'\n').count() + 1),
            col: Some(col),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const VS: &str =
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: a\nspec:\n  hosts: [a]\n";

    #[test]
    fn non_utf8_input_is_reported_at_its_line_and_column() {
        let e = decode(b"a: 1\nb: caf\xe9\n".to_vec()).unwrap_err().in_file("x.yaml");
        assert_eq!((e.line, e.col), (Some(2), Some(7)));
        assert_eq!(e.to_string(), "error: x.yaml:2:7: not UTF-8 text: invalid byte 0xe9 at offset 11");
        assert_eq!(decode("é: ü".as_bytes().to_vec()).ok().as_deref(), Some("é: ü"));
    }

    #[test]
    fn documents_lists_and_plugin_configs_flatten_in_order() {
        let mut i = Inputs::default();
        i.add_text("one.yaml", &format!("{VS}---\n---\n{VS}"));
        i.add_text("list.yaml", &format!("kind: List\nitems:\n- {}\n", "{kind: Gateway}"));
        i.add_text("pc.json", "{\"resources\": [{\"kind\": \"Sidecar\"}], \"settings\": {\"namespace\": \"x\"}}");
        assert_eq!(i.resources.len(), 4);
        assert_eq!(i.resources[2].value["kind"], "Gateway");
        assert_eq!(i.resources[2].lines.line_of(""), Some(3));
        assert_eq!(i.settings.as_ref().map(|s| s.value["namespace"].clone()), Some("x".into()));
    }

    #[test]
    fn diagnostics_point_at_file_and_line() {
        let mut i = Inputs::default();
        i.add_text("vs.yaml", &format!("{VS}  http:\n  - route:\n    - destination: {{host: b, subset: v9}}\n"));
        let (bundle, diags) = meshroute::load_value(i.plugin_config(None));
        assert!(diags.is_empty(), "{diags}");
        let d = Diagnostic::error(
            Some(bundle.resources[0].reference()),
            "spec.http[0].route[0].destination.subset",
            "no subset",
        );
        assert_eq!(
            i.render(&d),
            "error: vs.yaml:9: VirtualService default/a: spec.http[0].route[0].destination.subset: no subset"
        );
    }

    #[test]
    fn syntax_errors_are_input_errors() {
        let mut i = Inputs::default();
        i.add_text("bad.yaml", "a: [1\n");
        assert_eq!(i.errors.len(), 1);
        assert!(i.errors[0].to_string().starts_with("error: bad.yaml:"), "{}", i.errors[0]);
    }
}

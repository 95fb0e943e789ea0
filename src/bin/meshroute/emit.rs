//! A small block-style YAML writer for `serde_json::Value` (Envoy reads YAML through yaml-cpp).
//! Strings that could be read as anything but a string are double-quoted with JSON escapes,
//! which YAML's double-quoted style accepts unchanged.

use serde_json::Value;

pub fn to_yaml(v: &Value, header_comments: &[String]) -> String {
    let mut out = String::new();
    for c in header_comments {
        for line in c.lines() {
            out.push_str("# ");
            out.push_str(line);
            out.push('\n');
        }
    }
    write_node(v, 0, &mut out);
    out
}

fn write_node(v: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, val) in m {
                out.push_str(&pad);
                out.push_str(&scalar_str(k));
                out.push(':');
                if is_block(val) {
                    out.push('\n');
                    write_node(val, indent + 2, out);
                } else {
                    out.push(' ');
                    out.push_str(&inline(val));
                    out.push('\n');
                }
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for item in items {
                if is_block(item) {
                    let mut child = String::new();
                    write_node(item, indent + 2, &mut child);
                    // The first line of the item goes on the dash line.
                    out.push_str(&pad);
                    out.push_str("- ");
                    out.push_str(child.get(indent + 2..).unwrap_or(""));
                } else {
                    out.push_str(&pad);
                    out.push_str("- ");
                    out.push_str(&inline(item));
                    out.push('\n');
                }
            }
        }
        other => {
            out.push_str(&pad);
            out.push_str(&inline(other));
            out.push('\n');
        }
    }
}

fn is_block(v: &Value) -> bool {
    match v {
        Value::Object(m) => !m.is_empty(),
        Value::Array(a) => !a.is_empty(),
        _ => false,
    }
}

fn inline(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => scalar_str(s),
        Value::Object(_) => "{}".into(),
        Value::Array(_) => "[]".into(),
    }
}

/// Plain when unambiguous (`outbound`, `envoy.filters.http.router`, `/etc/x`), quoted otherwise.
fn scalar_str(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_' || b == b'/')
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'/' | b'-'))
        && !matches!(
            s.to_ascii_lowercase().as_str(),
            "true" | "false" | "null" | "yes" | "no" | "on" | "off" | "y" | "n" | "nan" | "inf"
        );
    if plain {
        s.to_string()
    } else {
        serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nested_maps_and_lists_are_block_style() {
        let v = json!({"a": {"b": [1, {"c": "x", "d": []}], "@type": "t|u"}, "e": "10s", "f": "yes"});
        let y = to_yaml(&v, &["note".into()]);
        assert_eq!(
            y,
            "# note\na:\n  \"@type\": \"t|u\"\n  b:\n    - 1\n    - c: x\n      d: []\ne: \"10s\"\nf: \"yes\"\n"
        );
    }

    #[test]
    fn what_is_written_reads_back_identically() {
        let v = json!({"s": ["a b", "", "null", "1", "x: y", "multi\nline", "\"q\""], "n": [1, 2.5, -3], "l": [[1], [{"a": 1}]]});
        let back = crate::yaml::parse_documents(&to_yaml(&v, &[])).unwrap();
        assert_eq!(back[0].to_value(), v);
    }
}

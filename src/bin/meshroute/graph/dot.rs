//! Graphviz DOT: `digraph`, left to right, mistakes dashed red.

use super::model::{Graph, Kind};
use std::fmt::Write as _;

pub fn render(g: &Graph) -> String {
    let mut out =
        String::from("digraph meshroute {\n  rankdir=LR;\n  node [shape=box, fontsize=12];\n  edge [fontsize=11];\n");
    for n in &g.nodes {
        let mut lines = n.label.clone();
        if let Some(b) = &n.broken {
            lines.push(format!("⚠ {b}"));
        }
        let label = lines.iter().map(|l| escape(l)).collect::<Vec<_>>().join("\\n");
        let (shape, fill) = match n.kind {
            Kind::Source => ("doublecircle", None),
            Kind::VirtualService => ("box", Some("#e8f0fe")),
            Kind::Rule => ("box", None),
            Kind::Destination => ("box", Some("#eef7ee")),
        };
        let mut attrs = vec![format!("label=\"{label}\""), format!("shape={shape}")];
        match (n.broken.is_some(), fill) {
            (true, _) => attrs.push("style=\"filled,dashed\", fillcolor=\"#ffecec\", color=red, fontcolor=red".into()),
            (false, Some(f)) => attrs.push(format!("style=filled, fillcolor=\"{f}\"")),
            (false, None) => {}
        }
        let _ = writeln!(out, "  {} [{}];", n.id, attrs.join(", "));
    }
    for e in &g.edges {
        let mut attrs = vec![format!("label=\"{}\"", escape(&e.label()))];
        if e.broken {
            attrs.push("style=dashed, color=red, fontcolor=red".into());
        } else if e.mirror {
            attrs.push("style=dashed".into());
        }
        let _ = writeln!(out, "  {} -> {} [{}];", e.from, e.to, attrs.join(", "));
    }
    out.push_str("}\n");
    out
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

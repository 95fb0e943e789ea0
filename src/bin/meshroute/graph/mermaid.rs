//! Mermaid flowchart (pastes into GitHub and most wikis): `flowchart LR`, one statement per
//! node and edge, mistakes in the `broken` class and dashed red links.

use super::model::{Graph, Kind};
use std::fmt::Write as _;

pub fn render(g: &Graph) -> String {
    let mut out = String::from("flowchart LR\n");
    for n in &g.nodes {
        let mut lines = n.label.clone();
        if let Some(b) = &n.broken {
            lines.push(format!("⚠ {b}"));
        }
        let text = lines.iter().map(|l| escape(l)).collect::<Vec<_>>().join("<br/>");
        let (open, close) = match n.kind {
            Kind::Source => ("([", "])"),
            Kind::VirtualService => ("[[", "]]"),
            Kind::Rule => ("[", "]"),
            Kind::Destination => ("(", ")"),
        };
        let _ = writeln!(out, "  {}{open}\"{text}\"{close}", n.id);
    }
    for e in &g.edges {
        let arrow = if e.broken || e.mirror { "-.->" } else { "-->" };
        let label = e.label();
        if label.is_empty() {
            let _ = writeln!(out, "  {} {arrow} {}", e.from, e.to);
        } else {
            let _ = writeln!(out, "  {} {arrow}|\"{}\"| {}", e.from, escape(&label), e.to);
        }
    }
    out.push_str("  classDef broken stroke:#d00,stroke-width:2px,stroke-dasharray:5 5,color:#d00\n");
    let broken: Vec<&str> = g.nodes.iter().filter(|n| n.broken.is_some()).map(|n| n.id.as_str()).collect();
    if !broken.is_empty() {
        let _ = writeln!(out, "  class {} broken", broken.join(","));
    }
    for (i, e) in g.edges.iter().enumerate() {
        if e.broken {
            let _ = writeln!(out, "  linkStyle {i} stroke:#d00,stroke-width:2px,stroke-dasharray:5 5");
        }
    }
    out
}

/// Mermaid entity codes for the characters that would end a quoted label.
fn escape(s: &str) -> String {
    s.replace('"', "#quot;").replace('<', "#lt;").replace('>', "#gt;")
}

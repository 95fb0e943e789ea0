//! SVG, laid out and drawn in-process by `layout-rs` (no `dot` binary): the model becomes a
//! `VisualGraph` directly, so multi-line labels and colours need no DOT round trip.

use super::model::{Graph, Kind};
use layout::backends::svg::SVGWriter;
use layout::core::base::Orientation;
use layout::core::color::Color;
use layout::core::style::{LineStyleKind, StyleAttr};
use layout::std_shapes::render::get_shape_size;
use layout::std_shapes::shapes::{Arrow, Element, LineEndKind, ShapeKind};
use layout::topo::layout::VisualGraph;
use std::collections::BTreeMap;

const FONT: usize = 13;

pub fn render(g: &Graph) -> String {
    let dir = Orientation::LeftToRight;
    let mut vg = VisualGraph::new(dir);
    let mut handles = BTreeMap::new();
    for n in &g.nodes {
        let mut lines = n.label.clone();
        if let Some(b) = &n.broken {
            lines.push(format!("⚠ {b}"));
        }
        let text = lines.join("\n");
        let shape = match n.kind {
            Kind::Source => ShapeKind::new_circle(&text),
            _ => ShapeKind::new_box(&text),
        };
        let fill = match (n.kind, n.broken.is_some()) {
            (_, true) => "#ffecec",
            (Kind::VirtualService, _) => "#e8f0fe",
            (Kind::Destination, _) => "#eef7ee",
            _ => "white",
        };
        let line = if n.broken.is_some() { "red" } else { "black" };
        let rounded = if n.kind == Kind::Rule { 0 } else { 8 };
        let look = StyleAttr::new(
            Color::fast(line),
            if n.broken.is_some() { 2 } else { 1 },
            Some(Color::fast(fill)),
            rounded,
            FONT,
        );
        let size = get_shape_size(dir, &shape, FONT, false);
        handles.insert(n.id.clone(), vg.add_node(Element::create(shape, look, dir, size)));
    }
    for e in &g.edges {
        let (Some(from), Some(to)) = (handles.get(&e.from), handles.get(&e.to)) else { continue };
        let style = if e.broken || e.mirror { LineStyleKind::Dashed } else { LineStyleKind::Normal };
        let color = if e.broken { "red" } else { "black" };
        let look = StyleAttr::new(Color::fast(color), if e.broken { 2 } else { 1 }, None, 0, FONT - 2);
        let arrow = Arrow::new(LineEndKind::None, LineEndKind::Arrow, style, &e.label(), &look, &None, &None);
        vg.add_edge(arrow, *from, *to);
    }
    let mut svg = SVGWriter::new();
    if g.nodes.is_empty() {
        return svg.finalize();
    }
    vg.do_it(false, false, false, &mut svg);
    // layout-rs sizes the canvas by text length, far below the drawing; the nodes' boxes (edges
    // run between them) give the real extent.
    let (mut w, mut h) = (0f64, 0f64);
    for handle in handles.values() {
        let (_, bottom_right) = vg.pos(*handle).bbox(false);
        w = w.max(bottom_right.x);
        h = h.max(bottom_right.y);
    }
    fit(&svg.finalize(), w + 30.0, h + 30.0)
}

/// Sorts the lines of the `<style>` block: layout-rs keeps its font classes in a `HashMap`, so
/// their order changes from run to run, and a redrawn picture should differ only if it changed.
fn stable_styles(svg: &str) -> String {
    let (Some(a), Some(b)) = (svg.find("<style>\n"), svg.find("</style>")) else { return svg.to_string() };
    let start = a + "<style>\n".len();
    if b < start {
        return svg.to_string();
    }
    let mut lines: Vec<&str> = svg[start..b].lines().collect();
    lines.sort_unstable();
    let mut out = String::with_capacity(svg.len());
    out.push_str(&svg[..start]);
    for l in lines {
        out.push_str(l);
        out.push('\n');
    }
    out.push_str(&svg[b..]);
    out
}

/// Replaces the size of the `<svg>` element.
fn fit(svg: &str, w: f64, h: f64) -> String {
    let svg = &stable_styles(svg);
    let Some(start) = svg.find("<svg ") else { return svg.to_string() };
    let Some(len) = svg[start..].find('>') else { return svg.to_string() };
    let tag = format!(
        "<svg width=\"{w:.0}\" height=\"{h:.0}\" viewBox=\"0 0 {w:.0} {h:.0}\" xmlns=\"http://www.w3.org/2000/svg\">"
    );
    format!("{}{tag}{}", &svg[..start], &svg[start + len + 1..])
}

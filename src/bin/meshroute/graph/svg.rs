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
use std::collections::HashMap;

const FONT: usize = 13;

pub fn render(g: &Graph) -> String {
    let dir = Orientation::LeftToRight;
    let mut vg = VisualGraph::new(dir);
    let mut handles = HashMap::new();
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
        let look = StyleAttr::new(Color::fast(line), if n.broken.is_some() { 2 } else { 1 }, Some(Color::fast(fill)), rounded, FONT);
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
    svg.finalize()
}

//! SVG charts drawn in memory for the HTML reports of `demo` and `replay` (plotters'
//! SVG backend: no fonts or files needed).

use plotters::coord::Shift;
use plotters::prelude::*;

/// What a chart's drawing returns.
pub type Drawn = Result<(), Box<dyn std::error::Error>>;

/// The size of every report chart, in pixels.
pub const SIZE: (u32, u32) = (960, 320);

/// The chart `plot` draws on a white canvas, as an SVG document; the error's text when
/// it cannot be drawn (a report is still written, without that chart).
pub fn svg(plot: impl FnOnce(&DrawingArea<SVGBackend, Shift>) -> Drawn) -> Result<String, String> {
    let mut buf = String::new();
    let outcome = {
        let root = SVGBackend::with_string(&mut buf, SIZE).into_drawing_area();
        let drawn = root
            .fill(&WHITE)
            .map_err(Into::into)
            .and_then(|_| plot(&root));
        drawn.and_then(|_| root.present().map_err(Into::into))
    };
    outcome.map(|()| buf).map_err(|e| e.to_string())
}

/// A legend's line sample in `c`.
pub fn legend(x: i32, y: i32, c: RGBColor) -> PathElement<(i32, i32)> {
    PathElement::new(vec![(x, y), (x + 20, y)], c)
}

//! Line charts of per-round metrics (PNG, plotters).

use std::path::Path;

use plotters::element::DashedPathElement;
use plotters::prelude::*;

/// One named line.
pub struct Series {
    /// Legend label.
    pub label: String,
    /// (x, y) points.
    pub points: Vec<(f64, f64)>,
    /// Drawn dashed, without point markers: a reference to compare the solid lines with.
    pub dashed: bool,
}

impl Series {
    /// A solid line with a marker at every point.
    pub fn line(label: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Self {
            label: label.into(),
            points,
            dashed: false,
        }
    }

    /// A dashed reference line.
    pub fn reference(label: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Self {
            label: label.into(),
            points,
            dashed: true,
        }
    }
}

/// Dash length and gap of reference lines, in pixels.
const DASH: (u32, u32) = (10, 6);

/// Colours of reference lines, in order: dark, so they read against the white background.
const REFERENCE_COLORS: [RGBColor; 3] = [
    RGBColor(60, 60, 60),
    RGBColor(0, 90, 160),
    RGBColor(150, 60, 0),
];

/// Draws `series` as a line chart with a legend.
pub fn line_chart(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
) -> anyhow::Result<()> {
    let pts = series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
    );
    for &(x, y) in pts.filter(|(x, y)| x.is_finite() && y.is_finite()) {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if !x0.is_finite() {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if x1 - x0 < 1e-9 {
        x1 = x0 + 1.0;
    }
    let pad = ((y1 - y0) * 0.08).max(1e-3);
    let root = BitMapBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x0..x1, (y0 - pad)..(y1 + pad))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let (mut solid, mut dashed) = (0, 0);
    // References last, so they stay visible where a line runs along them.
    let ordered = series
        .iter()
        .filter(|s| !s.dashed)
        .chain(series.iter().filter(|s| s.dashed));
    for s in ordered {
        let color = if s.dashed {
            dashed += 1;
            REFERENCE_COLORS[(dashed - 1) % REFERENCE_COLORS.len()].to_rgba()
        } else {
            solid += 1;
            Palette99::pick(solid - 1).to_rgba()
        };
        let style = color.stroke_width(2);
        let drawn = if s.dashed {
            chart.draw_series(DashedLineSeries::new(
                s.points.iter().copied(),
                DASH.0,
                DASH.1,
                style,
            ))
        } else {
            chart.draw_series(LineSeries::new(s.points.iter().copied(), style))
        };
        let dashed = s.dashed;
        drawn
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .label(s.label.clone())
            .legend(move |(x, y)| {
                if dashed {
                    DashedPathElement::new(vec![(x, y), (x + 20, y)], 6, 4, style).into_dyn()
                } else {
                    PathElement::new(vec![(x, y), (x + 20, y)], style).into_dyn()
                }
            });
        if !dashed {
            chart
                .draw_series(s.points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

//! PNG plots (plotters, rendered through fontconfig and freetype).

use crate::fl::RunMetrics;
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::Path;

/// Why a plot could not be written.
#[derive(Debug, thiserror::Error)]
#[error("could not draw {path}: {message}")]
pub struct PlotError {
    /// The file being written.
    pub path: String,
    /// What the drawing backend said.
    pub message: String,
}

/// Distinguishable line colours (Okabe-Ito), in series order.
const SERIES_COLORS: [RGBColor; 8] = [
    RGBColor(213, 94, 0),
    RGBColor(0, 114, 178),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 0, 0),
    RGBColor(240, 228, 66),
];

/// Draws test accuracy (percent) against epoch for every run into a PNG.
pub fn plot_accuracy(
    path: &Path,
    title: &str,
    runs: &[(&str, &RunMetrics)],
) -> Result<(), PlotError> {
    let points = || runs.iter().flat_map(|(_, r)| r.epochs.iter());
    let max_epoch = points().map(|m| m.epoch).max().unwrap_or(1).max(2);
    let lowest = points()
        .map(|m| 100.0 * m.test_accuracy)
        .fold(100.0, f64::min);
    let y_min = (lowest - 1.0).clamp(0.0, 99.0).floor();
    let series = runs
        .iter()
        .map(|(name, run)| Series {
            name: (*name).to_owned(),
            points: run
                .epochs
                .iter()
                .map(|m| (m.epoch as f64, 100.0 * m.test_accuracy))
                .collect(),
            style: SeriesStyle::LineAndMarkers,
            color: None,
        })
        .collect();
    plot_lines(
        path,
        &LinePlot {
            title: title.to_owned(),
            x: Axis {
                label: "epoch".into(),
                scale: Scale::Linear,
                range: Some((1.0, max_epoch as f64)),
                ticks: max_epoch.min(20),
            },
            y: Axis {
                label: "test accuracy (%)".into(),
                scale: Scale::Linear,
                range: Some((y_min, 100.0)),
                ticks: 10,
            },
            series,
            legend: SeriesLabelPosition::LowerRight,
        },
    )
}

/// How an axis maps values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scale {
    /// Evenly spaced values.
    Linear,
    /// Evenly spaced powers of ten (every value must be positive).
    Log,
}

/// One axis of a [`LinePlot`].
#[derive(Clone, Debug, PartialEq)]
pub struct Axis {
    /// The axis title.
    pub label: String,
    /// Linear or logarithmic.
    pub scale: Scale,
    /// Fixed bounds; `None` fits the data with a margin.
    pub range: Option<(f64, f64)>,
    /// Roughly how many tick labels to draw.
    pub ticks: usize,
}

impl Axis {
    /// An axis of `scale` fitted to the data, with about ten ticks.
    pub fn fitted(label: &str, scale: Scale) -> Self {
        Self {
            label: label.to_owned(),
            scale,
            range: None,
            ticks: 10,
        }
    }

    /// The drawn bounds: the fixed range, or the data's with a margin (a factor of 1.5 on
    /// log axes, 5% of the span on linear ones).
    fn bounds(&self, values: impl Iterator<Item = f64>) -> (f64, f64) {
        if let Some(range) = self.range {
            return range;
        }
        let (lo, hi) = values
            .filter(|v| v.is_finite() && (self.scale == Scale::Linear || *v > 0.0))
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                (lo.min(v), hi.max(v))
            });
        match (self.scale, lo <= hi) {
            (_, false) => (0.1, 1.0),
            (Scale::Log, true) => (lo / 1.5, hi * 1.5),
            (Scale::Linear, true) => {
                let pad = ((hi - lo) * 0.05).max(hi.abs() * 0.05).max(1e-9);
                (if lo >= 0.0 { 0.0 } else { lo - pad }, hi + pad)
            }
        }
    }
}

/// How a series is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeriesStyle {
    /// Measured points joined by a line, each marked.
    LineAndMarkers,
    /// Measured points only.
    Markers,
    /// A thin line without markers (e.g. a fitted model).
    Line,
}

/// One named series of a [`LinePlot`].
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// (x, y) points in drawing order.
    pub points: Vec<(f64, f64)>,
    /// How to draw it.
    pub style: SeriesStyle,
    /// Palette index of its colour; `None` takes the series' position.
    pub color: Option<usize>,
}

/// An x-y chart of one or more series.
#[derive(Clone, Debug)]
pub struct LinePlot {
    /// Title above the chart.
    pub title: String,
    /// Horizontal axis.
    pub x: Axis,
    /// Vertical axis.
    pub y: Axis,
    /// The series, coloured in order.
    pub series: Vec<Series>,
    /// Where the legend goes.
    pub legend: SeriesLabelPosition,
}

/// Draws `plot` into a PNG at `path`.
pub fn plot_lines(path: &Path, plot: &LinePlot) -> Result<(), PlotError> {
    let xs = || {
        plot.series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0))
    };
    let ys = || {
        plot.series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
    };
    let (x0, x1) = plot.x.bounds(xs());
    let (y0, y1) = plot.y.bounds(ys());
    let result = match (plot.x.scale, plot.y.scale) {
        (Scale::Linear, Scale::Linear) => draw_lines(path, plot, x0..x1, y0..y1),
        (Scale::Linear, Scale::Log) => draw_lines(path, plot, x0..x1, (y0..y1).log_scale()),
        (Scale::Log, Scale::Linear) => draw_lines(path, plot, (x0..x1).log_scale(), y0..y1),
        (Scale::Log, Scale::Log) => {
            draw_lines(path, plot, (x0..x1).log_scale(), (y0..y1).log_scale())
        }
    };
    result.map_err(|e| PlotError {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

/// A tick label: integers as integers, other values to three significant digits.
fn tick_label(v: &f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        let digits = (2 - v.abs().log10().floor() as i32).clamp(0, 6) as usize;
        format!("{v:.digits$}")
    }
}

fn draw_lines<X, Y>(
    path: &Path,
    plot: &LinePlot,
    x: X,
    y: Y,
) -> Result<(), Box<dyn std::error::Error>>
where
    X: AsRangedCoord<Value = f64>,
    Y: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let root = BitMapBackend::new(path, (900, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(&plot.title, ("sans-serif", 24))
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(x, y)?;
    chart
        .configure_mesh()
        .x_desc(plot.x.label.as_str())
        .y_desc(plot.y.label.as_str())
        .x_labels(plot.x.ticks)
        .y_labels(plot.y.ticks)
        .x_label_formatter(&tick_label)
        .y_label_formatter(&tick_label)
        .draw()?;
    for (i, series) in plot.series.iter().enumerate() {
        let color = SERIES_COLORS[series.color.unwrap_or(i) % SERIES_COLORS.len()].to_rgba();
        let points = series.points.iter().copied();
        let width = if series.style == SeriesStyle::Line {
            1
        } else {
            2
        };
        let legend = move |(x, y): (i32, i32)| {
            PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(width))
        };
        if series.style == SeriesStyle::Markers {
            chart
                .draw_series(points.map(|p| Circle::new(p, 4, color.filled())))?
                .label(series.name.as_str())
                .legend(legend);
            continue;
        }
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(width)))?
            .label(series.name.as_str())
            .legend(legend);
        if series.style == SeriesStyle::LineAndMarkers {
            chart.draw_series(points.map(|p| Circle::new(p, 3, color.filled())))?;
        }
    }
    chart
        .configure_series_labels()
        .position(plot.legend.clone())
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// Draws one bar per (label, value) into a PNG at `path`, each bar's value written above it.
pub fn plot_bars(
    path: &Path,
    title: &str,
    y_label: &str,
    bars: &[(String, f64)],
) -> Result<(), PlotError> {
    draw_bars(path, title, y_label, bars).map_err(|e| PlotError {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

fn draw_bars(
    path: &Path,
    title: &str,
    y_label: &str,
    bars: &[(String, f64)],
) -> Result<(), Box<dyn std::error::Error>> {
    let top = bars.iter().map(|b| b.1).fold(0.0, f64::max).max(1e-9) * 1.15;
    let root = BitMapBackend::new(path, (900, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(
            (0..bars.len().saturating_sub(1)).into_segmented(),
            0f64..top,
        )?;
    let name_at = |x: &SegmentValue<usize>| match x {
        SegmentValue::CenterOf(i) => bars.get(*i).map_or(String::new(), |b| b.0.clone()),
        _ => String::new(),
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(bars.len())
        .x_label_formatter(&name_at)
        .y_desc(y_label)
        .y_label_formatter(&tick_label)
        .draw()?;
    chart.draw_series(
        Histogram::vertical(&chart)
            .margin(25)
            .style_func(|x, _| match x {
                SegmentValue::Exact(i) | SegmentValue::CenterOf(i) => {
                    SERIES_COLORS[i % SERIES_COLORS.len()].filled()
                }
                SegmentValue::Last => BLACK.filled(),
            })
            .data(bars.iter().enumerate().map(|(i, b)| (i, b.1))),
    )?;
    chart.draw_series(bars.iter().enumerate().map(|(i, (_, value))| {
        Text::new(
            tick_label(value),
            (SegmentValue::CenterOf(i), value + top * 0.02),
            TextStyle::from(("sans-serif", 18).into_font())
                .pos(Pos::new(HPos::Center, VPos::Bottom)),
        )
    }))?;
    root.present()?;
    Ok(())
}

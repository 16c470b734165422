//! The report's pictures, as SVG: strip plots (every run or probe a dot,
//! the median a bar) and line charts. Two generic drawings, fed by the
//! report with plain numbers, so no benchmark's types leak in here.

use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::prelude::*;

use super::median;

const ROW_HEIGHT: u32 = 26;
const WIDTH: u32 = 960;
const LABEL_WIDTH: u32 = 330;
const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// One row of a strip plot: its label and its values.
pub struct Row {
    pub label: String,
    pub values: Vec<f64>,
}

/// Every value of every row as a dot, each row's median as a tick, over a
/// logarithmic x axis (values that span decades: µs errors, seconds of
/// tools from 10 ms to 15 s); values at or below 0.001 are drawn at it.
pub fn strips(path: &Path, title: &str, x_desc: &str, rows: &[Row]) -> Result<()> {
    let rows: Vec<&Row> = rows.iter().filter(|r| !r.values.is_empty()).collect();
    if rows.is_empty() {
        return Ok(());
    }
    let all = rows.iter().flat_map(|r| r.values.iter().copied());
    let max = all.clone().fold(f64::MIN, f64::max);
    let min = all.fold(f64::MAX, f64::min);
    let height = 90 + ROW_HEIGHT * rows.len() as u32;
    let root = SVGBackend::new(path, (WIDTH, height)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_error)?;
    let n = rows.len() as f64;
    let labels: Vec<String> = rows.iter().map(|r| r.label.clone()).collect();
    let label_of = move |y: &f64| {
        let i = y.round();
        if (y - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < labels.len() {
            labels[i as usize].clone()
        } else {
            String::new()
        }
    };
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(LABEL_WIDTH);
    let y_range = -0.6..n - 0.4;
    let draw_row = |row: usize, r: &Row, floor: f64| {
        let color = PALETTE[row % PALETTE.len()];
        let y = row as f64;
        let dots = r.values.iter().enumerate().map(move |(i, v)| {
            // A little vertical spread so equal values stay visible.
            let dy = ((i % 5) as f64 - 2.0) * 0.06;
            Circle::new((v.max(floor), y + dy), 3, color.mix(0.6).filled())
        });
        let m = median(&r.values).unwrap_or(0.0).max(floor);
        (
            dots.collect::<Vec<_>>(),
            PathElement::new(vec![(m, y - 0.35), (m, y + 0.35)], BLACK.stroke_width(2)),
        )
    };
    let floor = min.max(1e-3);
    // All values at or below the floor still get a valid range.
    let max = max.max(floor * 2.0);
    let mut chart = builder
        .build_cartesian_2d((floor * 0.8..max * 1.25).log_scale(), y_range)
        .map_err(draw_error)?;
    chart
        .configure_mesh()
        .y_labels(rows.len() * 2 + 1)
        .y_label_formatter(&label_of)
        .x_desc(x_desc)
        .disable_y_mesh()
        .draw()
        .map_err(draw_error)?;
    for (i, r) in rows.iter().enumerate() {
        let (dots, tick) = draw_row(i, r, floor);
        chart.draw_series(dots).map_err(draw_error)?;
        chart
            .draw_series(std::iter::once(tick))
            .map_err(draw_error)?;
    }
    root.present().map_err(draw_error)?;
    Ok(())
}

/// One line of a line chart: its name and its (x, y) points.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// Lines over a logarithmic x axis (numbers of targets), with a legend.
pub fn lines(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[Series],
) -> Result<()> {
    let points = series.iter().flat_map(|s| s.points.iter().copied());
    let (x_max, y_max) = points
        .clone()
        .fold((1.0f64, 0.0f64), |(x, y), (px, py)| (x.max(px), y.max(py)));
    let x_min = points.map(|p| p.0).fold(f64::MAX, f64::min).max(1.0);
    if series.iter().all(|s| s.points.is_empty()) {
        return Ok(());
    }
    let root = SVGBackend::new(path, (WIDTH, 440)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_error)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(
            (x_min * 0.8..x_max * 1.25).log_scale(),
            0.0..y_max * 1.1 + 1e-9,
        )
        .map_err(draw_error)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_labels(6)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()
        .map_err(draw_error)?;
    for (i, s) in series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        chart
            .draw_series(LineSeries::new(s.points.clone(), color.stroke_width(2)))
            .map_err(draw_error)?
            .label(s.name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        chart
            .draw_series(s.points.iter().map(|&p| Circle::new(p, 4, color.filled())))
            .map_err(draw_error)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(draw_error)?;
    root.present().map_err(draw_error)?;
    Ok(())
}

fn draw_error<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing: {e:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_valid_svg_with_every_label() {
        let dir = std::env::temp_dir().join(format!("xtask-plots-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let rows = [
            Row {
                label: "agent (eBPF stamps)".into(),
                values: vec![2.0, 3.5, 4.0],
            },
            Row {
                label: "ping".into(),
                values: vec![90.0, 120.0],
            },
            Row {
                label: "exactly on the wire".into(),
                values: vec![0.0],
            },
            Row {
                label: "never measured".into(),
                values: vec![],
            },
        ];
        {
            let path = dir.join("strips.svg");
            strips(&path, "RTT error", "µs", &rows).unwrap();
            let svg = std::fs::read_to_string(&path).unwrap();
            assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
            assert!(svg.contains("agent (eBPF stamps)") && svg.contains("ping"));
            assert!(!svg.contains("never measured"), "empty rows are left out");
            assert_eq!(svg.matches("<circle").count(), 6, "one dot per value");
        }
        let path = dir.join("lines.svg");
        let series = [Series {
            name: "agent".into(),
            points: vec![(64.0, 10.0), (256.0, 30.0), (1024.0, 60.0)],
        }];
        lines(&path, "traces per second", "targets", "traces/s", &series).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.contains("agent") && svg.contains("<polyline"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

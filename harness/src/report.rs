//! The report of a recorded run, written into its directory: `results.json` (every check and
//! figure), `junit.xml` (one test case per check, for CI) and `report.html` (one self-contained
//! page: plots with the fault windows shaded, the checks, the timeline and the manifest).

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::checks::{self, Check, Verdict};
use crate::history::History;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot write {path}: {reason}")]
    Write { path: String, reason: String },
    #[error("cannot draw {what}: {reason}")]
    Plot { what: String, reason: String },
}

/// The figures of a run.
#[derive(Clone, Debug, Serialize)]
pub struct Figures {
    pub duration_s: f64,
    pub max_height: u64,
    pub blocks: usize,
    pub block_interval_p50_ms: f64,
    pub block_interval_max_ms: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct RunResults {
    pub name: String,
    pub passed: bool,
    pub checks: Vec<Check>,
    pub figures: Figures,
    pub warnings: Vec<String>,
}

/// A fault window: label, start and end in seconds since the run started.
pub fn fault_windows(history: &History) -> Vec<(String, f64, f64)> {
    let start = history.run.as_ref().map_or(0, |run| run.started_ms) as f64;
    let end = history
        .run
        .as_ref()
        .and_then(|run| run.ended_ms)
        .map_or(f64::MAX, |end| (end as f64 - start) / 1000.0);
    let mut windows = Vec::new();
    for (index, event) in history.timeline.iter().enumerate() {
        if event.kind != "fault_start" {
            continue;
        }
        let until = history.timeline[index + 1..]
            .iter()
            .find(|later| later.kind == "fault_end" && later.label == event.label)
            .map_or(end, |later| (later.at_ms as f64 - start) / 1000.0);
        windows.push((
            event.label.clone(),
            (event.at_ms as f64 - start) / 1000.0,
            until,
        ));
    }
    windows
}

pub fn figures(history: &History) -> Figures {
    let intervals: Vec<f64> = checks::block_intervals(history)
        .into_iter()
        .map(|(_, ms)| ms)
        .collect();
    let mut sorted = intervals.clone();
    sorted.sort_by(f64::total_cmp);
    let heights = checks::height_series(history);
    Figures {
        duration_s: history.run.as_ref().map_or(0.0, |run| {
            run.ended_ms.map_or(0.0, |end| {
                (end.saturating_sub(run.started_ms)) as f64 / 1000.0
            })
        }),
        max_height: heights
            .iter()
            .flat_map(|(_, points)| points.iter().map(|(_, h)| *h as u64))
            .max()
            .unwrap_or(0),
        blocks: intervals.len() + usize::from(!intervals.is_empty()),
        block_interval_p50_ms: sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN),
        block_interval_max_ms: sorted.last().copied().unwrap_or(f64::NAN),
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A chart's axis ends: x to the last point; y above the largest value, or for scattered
/// points near the 99th percentile so that one outlier does not flatten the rest (the few
/// above are drawn on the top edge). Also how many are above, and the largest.
fn axes(series: &[(String, Vec<(f64, f64)>)], dots: bool) -> (f64, f64, usize, f64) {
    let points = series.iter().flat_map(|(_, p)| p.iter());
    let x_max = points.clone().map(|(x, _)| *x).fold(1.0_f64, f64::max);
    let mut ys: Vec<f64> = points.map(|(_, y)| *y).collect();
    ys.sort_by(f64::total_cmp);
    let largest = ys.last().copied().unwrap_or(1.0).max(1.0);
    let y_max = if dots && ys.len() >= 20 {
        (ys[ys.len() * 99 / 100] * 1.5).clamp(1.0, largest) * 1.05
    } else {
        largest * 1.05
    };
    let above = ys.iter().filter(|y| **y > y_max).count();
    (x_max, y_max, above, largest)
}

/// An SVG chart: one line (or, with `dots`, one set of points) per series, fault windows
/// shaded and labelled.
fn chart(
    title: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
    windows: &[(String, f64, f64)],
    dots: bool,
) -> Result<String, ReportError> {
    use plotters::prelude::*;
    let error = |e: String| ReportError::Plot {
        what: title.into(),
        reason: e,
    };
    let (x_max, y_max, above, largest) = axes(series, dots);
    let title = if above > 0 {
        format!("{title} ({above} above the axis, up to {largest:.0}, drawn at the top)")
    } else {
        title.to_string()
    };
    let title = title.as_str();
    let series: Vec<(String, Vec<(f64, f64)>)> = series
        .iter()
        .map(|(name, points)| {
            let clipped = points.iter().map(|(x, y)| (*x, y.min(y_max))).collect();
            (name.clone(), clipped)
        })
        .collect();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (960, 360)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| error(e.to_string()))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(32)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..x_max, 0f64..y_max)
            .map_err(|e| error(e.to_string()))?;
        chart
            .configure_mesh()
            .x_desc("seconds since start")
            .y_desc(y_label)
            .draw()
            .map_err(|e| error(e.to_string()))?;
        for (label, from, to) in windows {
            let to = to.min(x_max);
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(*from, 0.0), (to, y_max)],
                    RGBColor(255, 170, 170).mix(0.35).filled(),
                )))
                .map_err(|e| error(e.to_string()))?;
            chart
                .draw_series(std::iter::once(Text::new(
                    label.clone(),
                    (*from, y_max * 0.97),
                    ("sans-serif", 13).into_font().color(&RED),
                )))
                .map_err(|e| error(e.to_string()))?;
        }
        for (index, (name, points)) in series.iter().enumerate() {
            let color = Palette99::pick(index).to_rgba();
            let drawn = if dots {
                chart.draw_series(
                    points
                        .iter()
                        .map(move |point| Circle::new(*point, 2, color.filled())),
                )
            } else {
                chart.draw_series(LineSeries::new(
                    points.iter().copied(),
                    color.stroke_width(2),
                ))
            };
            drawn
                .map_err(|e| error(e.to_string()))?
                .label(name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
        }
        if series.len() > 1 {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .position(SeriesLabelPosition::LowerRight)
                .draw()
                .map_err(|e| error(e.to_string()))?;
        }
        root.present().map_err(|e| error(e.to_string()))?;
    }
    Ok(svg)
}

fn junit(name: &str, checks: &[Check]) -> String {
    let failures = checks.iter().filter(|c| c.verdict == Verdict::Fail).count();
    let skipped = checks
        .iter()
        .filter(|c| c.verdict == Verdict::Skipped)
        .count();
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        xml,
        "<testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" skipped=\"{skipped}\">",
        escape(name),
        checks.len()
    );
    for check in checks {
        let _ = write!(
            xml,
            "  <testcase classname=\"devnet.{}\" name=\"{}\">",
            escape(name),
            escape(&check.name)
        );
        match check.verdict {
            Verdict::Fail => {
                let _ = write!(xml, "<failure message=\"{}\"/>", escape(&check.detail));
            }
            Verdict::Skipped => {
                let _ = write!(xml, "<skipped message=\"{}\"/>", escape(&check.detail));
            }
            Verdict::Pass => {
                let _ = write!(xml, "<system-out>{}</system-out>", escape(&check.detail));
            }
        }
        xml.push_str("</testcase>\n");
    }
    xml.push_str("</testsuite>\n");
    xml
}

/// Runs every check on `history` and writes results.json, junit.xml and report.html into `dir`.
/// The three plots of the report: heights, block intervals and commit latency, with the fault
/// windows shaded.
fn plots(history: &History) -> Result<String, ReportError> {
    let windows = fault_windows(history);
    let heights = chart(
        "Height per node",
        "height",
        &checks::height_series(history),
        &windows,
        false,
    )?;
    let intervals = chart(
        "Block interval",
        "ms since the previous block",
        &[("interval".into(), checks::block_intervals(history))],
        &windows,
        false,
    )?;
    let latency = chart(
        "Commit latency per node (proposal seen to decision)",
        "ms",
        &checks::commit_latency_series(history),
        &windows,
        true,
    )?;
    Ok(heights + &intervals + &latency)
}

/// report.html: the verdicts, the plots, the figures, the timeline, the warnings and the
/// manifest.
fn html(history: &History, results: &RunResults) -> Result<String, ReportError> {
    let (name, checks) = (&results.name, &results.checks);
    let mut html = String::new();
    let _ = write!(
        html,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title><style>\
         body{{font-family:sans-serif;margin:24px;max-width:1000px}}\
         table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}}\
         .pass{{color:#070}}.fail{{color:#b00;font-weight:bold}}.skipped{{color:#777}}\
         pre{{background:#f6f6f6;padding:8px;overflow:auto}}</style></head><body>\
         <h1>{title}: {verdict}</h1>",
        title = escape(name),
        verdict = if results.passed { "passed" } else { "FAILED" }
    );
    html.push_str("<h2>Checks</h2><table><tr><th>check</th><th>verdict</th><th>detail</th></tr>");
    for check in checks {
        let class = match check.verdict {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Skipped => "skipped",
        };
        let _ = write!(
            html,
            "<tr><td>{}</td><td class=\"{class}\">{class}</td><td>{}</td></tr>",
            escape(&check.name),
            escape(&check.detail)
        );
    }
    html.push_str("</table><h2>Plots</h2><p>Shaded: fault windows, from the timeline.</p>");
    html.push_str(&plots(history)?);
    let f = &results.figures;
    let _ = write!(
        html,
        "<h2>Figures</h2><table><tr><td>duration</td><td>{:.1} s</td></tr>\
         <tr><td>highest height</td><td>{}</td></tr><tr><td>block interval p50</td><td>{:.1} ms</td></tr>\
         <tr><td>block interval max</td><td>{:.1} ms</td></tr></table>",
        f.duration_s, f.max_height, f.block_interval_p50_ms, f.block_interval_max_ms
    );
    html.push_str("<h2>Timeline</h2><table><tr><th>t (s)</th><th>event</th><th>what</th></tr>");
    let start = history.run.as_ref().map_or(0, |run| run.started_ms) as f64;
    for event in &history.timeline {
        let _ = write!(
            html,
            "<tr><td>{:.1}</td><td>{}</td><td>{}</td></tr>",
            (event.at_ms as f64 - start) / 1000.0,
            escape(&event.kind),
            escape(&event.label)
        );
    }
    html.push_str("</table>");
    if !history.warnings.is_empty() {
        html.push_str("<h2>Warnings</h2><ul>");
        for warning in &history.warnings {
            let _ = write!(html, "<li>{}</li>", escape(warning));
        }
        html.push_str("</ul>");
    }
    if let Some(run) = &history.run {
        let _ = write!(
            html,
            "<h2>Manifest</h2><p>chain {} · seed {} · backend {} · commit {}</p><pre>{}</pre>",
            escape(&run.chain_id),
            run.seed,
            escape(&run.backend),
            escape(&run.git_commit),
            escape(&run.manifest)
        );
    }
    html.push_str("</body></html>\n");
    html.push_str("</body></html>\n");
    Ok(html)
}

pub fn write(dir: &Path, history: &History) -> Result<RunResults, ReportError> {
    let checks = checks::run_all(history);
    let name = history
        .run
        .as_ref()
        .map_or("run".to_string(), |run| run.name.clone());
    let results = RunResults {
        name: name.clone(),
        passed: checks.iter().all(|c| c.verdict != Verdict::Fail),
        checks: checks.clone(),
        figures: figures(history),
        warnings: history.warnings.clone(),
    };
    let save = |file: &str, text: String| {
        std::fs::write(dir.join(file), text).map_err(|e| ReportError::Write {
            path: dir.join(file).display().to_string(),
            reason: e.to_string(),
        })
    };
    save(
        "results.json",
        serde_json::to_string_pretty(&results).map_err(|e| ReportError::Write {
            path: "results.json".into(),
            reason: e.to_string(),
        })? + "\n",
    )?;
    save("junit.xml", junit(&name, &checks))?;
    save("report.html", html(history, &results)?)?;
    Ok(results)
}

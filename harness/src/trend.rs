//! The history of benchmark results: every `results.json` under a directory (nightly run
//! directories, baselines), one series per suite and figure in time order, its change points
//! ([`crate::changepoint`]) and an SVG plot of each series.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::bench::{figures, median, Results};
use crate::changepoint::{change_points, ChangePoint};

#[derive(Debug, thiserror::Error)]
pub enum TrendError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}: no results.json under it (devnet bench writes one per run directory)")]
    Empty(PathBuf),
    #[error("cannot draw {path}: {message}")]
    Plot { path: PathBuf, message: String },
}

/// One result in a series: when it ran, what code it ran, and the figure's median over runs.
#[derive(Clone, Debug, Serialize)]
pub struct Point {
    pub time_ms: u64,
    pub git_commit: String,
    pub file: PathBuf,
    pub value: f64,
}

/// One figure of one suite over time.
#[derive(Clone, Debug, Serialize)]
pub struct Series {
    pub suite: String,
    pub figure: String,
    pub points: Vec<Point>,
    pub changes: Vec<ChangePoint>,
}

/// What [`load_dir`] found: results with their files, in time order, and the JSON files that
/// were not bench results, each with the reason.
#[derive(Debug)]
pub struct Loaded {
    pub found: Vec<(PathBuf, Results)>,
    pub skipped: Vec<String>,
}

/// Every results file under `dir` (at most four levels down), parsed; files that are not bench
/// results are returned separately with the reason, so that one bad file does not hide the rest.
pub fn load_dir(dir: &Path) -> Result<Loaded, TrendError> {
    let mut found = Vec::new();
    let mut skipped = Vec::new();
    let mut pending = vec![(dir.to_path_buf(), 0)];
    while let Some((current, depth)) = pending.pop() {
        let entries = std::fs::read_dir(&current).map_err(|source| TrendError::Read {
            path: current.clone(),
            source,
        })?;
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            if path.is_dir() {
                if depth < 4 {
                    pending.push((path, depth + 1));
                }
                continue;
            }
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if !name.ends_with(".json") {
                continue;
            }
            let text = std::fs::read_to_string(&path).map_err(|source| TrendError::Read {
                path: path.clone(),
                source,
            })?;
            match serde_json::from_str::<Results>(&text) {
                Ok(results) => found.push((path, results)),
                Err(error) => skipped.push(format!("{}: {error}", path.display())),
            }
        }
    }
    if found.is_empty() {
        return Err(TrendError::Empty(dir.to_path_buf()));
    }
    found.sort_by(|a, b| (a.1.fingerprint.time_ms, &a.0).cmp(&(b.1.fingerprint.time_ms, &b.0)));
    Ok(Loaded { found, skipped })
}

/// The series of every suite and figure in `results` (already in time order), with change
/// points at significance `alpha`.
pub fn series(results: &[(PathBuf, Results)], alpha: f64) -> Vec<Series> {
    let mut out: Vec<Series> = Vec::new();
    for (file, result) in results {
        for (figure, mut values) in figures(result) {
            if values.is_empty() {
                continue;
            }
            let point = Point {
                time_ms: result.fingerprint.time_ms,
                git_commit: result.fingerprint.git_commit.clone(),
                file: file.clone(),
                value: median(&mut values),
            };
            match out
                .iter_mut()
                .find(|s| s.suite == result.suite && s.figure == figure)
            {
                Some(series) => series.points.push(point),
                None => out.push(Series {
                    suite: result.suite.clone(),
                    figure,
                    points: vec![point],
                    changes: Vec::new(),
                }),
            }
        }
    }
    for series in &mut out {
        let values: Vec<f64> = series.points.iter().map(|p| p.value).collect();
        series.changes = change_points(&values, alpha);
    }
    out
}

/// A file name for a series' plot: `<suite>__<figure>.svg` with only safe characters.
pub fn plot_file_name(series: &Series) -> String {
    let clean = |text: &str| -> String {
        text.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    format!("{}__{}.svg", clean(&series.suite), clean(&series.figure))
}

/// Draws `series` as an SVG: one point per result, joined, with a dashed line at each change
/// point and the segment means drawn across.
pub fn plot(series: &Series, path: &Path) -> Result<(), TrendError> {
    use plotters::prelude::*;
    let error = |message: String| TrendError::Plot {
        path: path.to_path_buf(),
        message,
    };
    let values: Vec<f64> = series.points.iter().map(|p| p.value).collect();
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    let low = finite.iter().copied().fold(f64::INFINITY, f64::min);
    let high = finite.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let (low, high) = if finite.is_empty() {
        (0.0, 1.0)
    } else if high - low < 1e-9 {
        (low - 1.0, high + 1.0)
    } else {
        let pad = (high - low) * 0.1;
        (
            (low - pad).max(if low >= 0.0 { 0.0 } else { f64::MIN }),
            high + pad,
        )
    };
    let count = values.len().max(2);
    let root = SVGBackend::new(path, (900, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| error(e.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{} / {}", series.suite, series.figure),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..(count - 1) as f64, low..high)
        .map_err(|e| error(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("result (oldest first)")
        .y_desc(series.figure.as_str())
        .draw()
        .map_err(|e| error(e.to_string()))?;
    let points: Vec<(f64, f64)> = values
        .iter()
        .enumerate()
        .filter(|(_, v)| v.is_finite())
        .map(|(i, v)| (i as f64, *v))
        .collect();
    chart
        .draw_series(LineSeries::new(points.clone(), &BLUE))
        .map_err(|e| error(e.to_string()))?;
    chart
        .draw_series(
            points
                .iter()
                .map(|point| Circle::new(*point, 3, BLUE.filled())),
        )
        .map_err(|e| error(e.to_string()))?;
    let mut bounds = vec![0usize];
    bounds.extend(series.changes.iter().map(|c| c.index));
    bounds.push(values.len());
    for pair in bounds.windows(2) {
        let segment: Vec<f64> = values[pair[0]..pair[1]]
            .iter()
            .copied()
            .filter(|v| v.is_finite())
            .collect();
        if segment.is_empty() {
            continue;
        }
        let mean = segment.iter().sum::<f64>() / segment.len() as f64;
        let from = pair[0] as f64;
        let to = (pair[1].saturating_sub(1)) as f64;
        chart
            .draw_series(LineSeries::new(vec![(from, mean), (to, mean)], &GREEN))
            .map_err(|e| error(e.to_string()))?;
    }
    for change in &series.changes {
        let x = change.index as f64 - 0.5;
        chart
            .draw_series(DashedLineSeries::new(
                vec![(x, low), (x, high)],
                6,
                4,
                RED.stroke_width(2),
            ))
            .map_err(|e| error(e.to_string()))?;
    }
    root.present().map_err(|e| error(e.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::{Fingerprint, Run};

    fn result(time_ms: u64, first_block_s: f64) -> Results {
        Results {
            suite: "s".into(),
            nodes: 4,
            fingerprint: Fingerprint {
                time_ms,
                git_commit: format!("c{time_ms}"),
                ..Fingerprint::default()
            },
            runs: (0..3)
                .map(|k| Run {
                    time_to_first_block_s: first_block_s + k as f64 * 0.01,
                    steps: Vec::new(),
                })
                .collect(),
        }
    }

    #[test]
    fn a_directory_of_results_gives_ordered_series_change_points_and_plots() {
        let dir = tempfile::tempdir().unwrap();
        // Written out of order: the series must follow the fingerprint times.
        for index in (0..10u64).rev() {
            let level = if index < 6 { 1.0 } else { 2.0 } + (index % 3) as f64 * 0.02;
            let run_dir = dir.path().join(format!("run-{index}"));
            std::fs::create_dir_all(&run_dir).unwrap();
            std::fs::write(
                run_dir.join("results.json"),
                serde_json::to_string(&result(1_000 + index, level)).unwrap(),
            )
            .unwrap();
        }
        std::fs::write(dir.path().join("notes.json"), "{\"not\": \"results\"}").unwrap();
        let Loaded { found, skipped } = load_dir(dir.path()).unwrap();
        assert_eq!(found.len(), 10);
        assert_eq!(skipped.len(), 1, "{skipped:?}");
        let all = series(&found, 0.05);
        let first_block = all
            .iter()
            .find(|s| s.figure == "time_to_first_block_s")
            .unwrap();
        let commits: Vec<&str> = first_block
            .points
            .iter()
            .map(|p| p.git_commit.as_str())
            .collect();
        assert_eq!(commits[0], "c1000");
        assert_eq!(commits[9], "c1009");
        assert_eq!(first_block.changes.len(), 1, "{:?}", first_block.changes);
        assert_eq!(first_block.changes[0].index, 6);

        let svg = dir.path().join(plot_file_name(first_block));
        plot(first_block, &svg).unwrap();
        let text = std::fs::read_to_string(&svg).unwrap();
        assert!(text.starts_with("<svg"), "{}", &text[..text.len().min(80)]);
        assert!(text.contains("time_to_first_block_s"));
    }

    #[test]
    fn an_empty_directory_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let error = load_dir(dir.path()).unwrap_err().to_string();
        assert!(error.contains("no results.json"), "{error}");
    }
}

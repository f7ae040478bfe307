//! The ranked table of a sweep's trials (`shimmer sweep --summary`): best
//! monitored value first, with the swept values, also written as CSV.
//!
//! Finished trials are ranked by their best value of the monitored metric
//! (`summary.json`'s `monitor` and `mode`, `val/loss` and `min` by
//! default); unfinished trials follow, failed trials come last.

use super::manifest::{Manifest, SweepDir, TrialRecord, TrialState};
use anyhow::Result;
use shimmer_train::{MonitorMode, RunStatus, RunSummary};
use std::cmp::Ordering;

/// One trial's line in the table.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// Trial index.
    pub index: usize,
    /// Trial name (zero-padded index, its run folder's name).
    pub name: String,
    /// Launcher state, refined by the run's own summary.
    pub state: TrialState,
    /// Best value of the monitored metric.
    pub value: Option<f64>,
    /// Step of the best value.
    pub best_step: Option<u64>,
    /// Steps trained.
    pub steps: Option<u64>,
    /// Seconds the run took.
    pub wall_time_s: Option<f64>,
    /// Swept values as YAML text, in the table's parameter order.
    pub values: Vec<String>,
    /// Why it failed.
    pub error: Option<String>,
}

/// A ranked table of trials.
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    /// The monitored metric, e.g. `val/loss`.
    pub monitor: String,
    /// Whether lower (`min`) or higher (`max`) is better.
    pub maximize: bool,
    /// Swept keys (the value columns).
    pub params: Vec<String>,
    /// Trials, best first.
    pub rows: Vec<Row>,
}

/// Builds one trial's row from its launcher record and run summary.
pub fn row(
    dir: &SweepDir,
    index: usize,
    values: Vec<String>,
    record: &TrialRecord,
    run: Option<&RunSummary>,
) -> Row {
    let mut state = record.state;
    let run_status = run.map(|r| r.status);
    if matches!(state, TrialState::Pending | TrialState::Running)
        && run_status == Some(RunStatus::Finished)
    {
        state = TrialState::Finished;
    }
    let value = run.and_then(|r| r.best_value.or_else(|| r.metrics.get(&r.monitor).copied()));
    Row {
        index,
        name: dir.trial_name(index),
        state,
        value: value.filter(|v| !v.is_nan()),
        best_step: run.and_then(|r| r.best_step),
        steps: run.map(|r| r.steps),
        wall_time_s: run.map(|r| r.wall_time_s).or(record.wall_time_s),
        values,
        error: record
            .error
            .clone()
            .or_else(|| run.and_then(|r| r.error.clone())),
    }
}

/// Reads every trial of a sweep and ranks them.
pub fn collect(manifest: &Manifest, dir: &SweepDir) -> Result<Table> {
    let mut rows = Vec::with_capacity(manifest.trials.len());
    let mut monitor = None;
    for trial in &manifest.trials {
        let record = dir.record(trial.index)?;
        let run = dir.run_summary(trial.index);
        if monitor.is_none()
            && let Some(r) = &run
        {
            monitor = Some((r.monitor.clone(), r.mode == MonitorMode::Max));
        }
        let values = manifest
            .params
            .iter()
            .map(|p| trial.values.get(p).cloned().unwrap_or_default())
            .collect();
        rows.push(row(dir, trial.index, values, &record, run.as_ref()));
    }
    let (monitor, maximize) = monitor.unwrap_or_else(|| ("val/loss".to_string(), false));
    rank(&mut rows, maximize);
    Ok(Table {
        monitor,
        maximize,
        params: manifest.params.clone(),
        rows,
    })
}

/// Sorts rows best first: finished trials by value (those without a value
/// after them), then pending/running/interrupted ones, then failed ones;
/// ties by trial index.
pub fn rank(rows: &mut [Row], maximize: bool) {
    let group = |r: &Row| match (r.state, r.value) {
        (TrialState::Finished, Some(_)) => 0,
        (TrialState::Finished, None) => 1,
        (TrialState::Failed, _) => 3,
        _ => 2,
    };
    rows.sort_by(|a, b| {
        group(a)
            .cmp(&group(b))
            .then_with(|| match (a.value, b.value) {
                (Some(x), Some(y)) if group(a) == 0 => {
                    let o = x.partial_cmp(&y).unwrap_or(Ordering::Equal);
                    if maximize { o.reverse() } else { o }
                }
                _ => Ordering::Equal,
            })
            .then_with(|| a.index.cmp(&b.index))
    });
}

fn short(v: f64) -> String {
    if v != 0.0 && (v.abs() < 1e-3 || v.abs() >= 1e6) {
        format!("{v:.4e}")
    } else {
        format!("{v:.6}")
    }
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

impl Table {
    fn header(&self) -> Vec<String> {
        let mode = if self.maximize { "max" } else { "min" };
        let mut h = vec![
            "rank".to_string(),
            "trial".to_string(),
            "state".to_string(),
            format!("{} ({mode})", self.monitor),
            "best_step".to_string(),
            "steps".to_string(),
            "time_s".to_string(),
        ];
        h.extend(self.params.iter().cloned());
        h.push("error".to_string());
        h
    }

    fn cells(&self, rank: usize, r: &Row, for_csv: bool) -> Vec<String> {
        let mut c = vec![
            if r.state == TrialState::Finished && r.value.is_some() {
                (rank + 1).to_string()
            } else {
                "-".to_string()
            },
            r.name.clone(),
            r.state.as_str().to_string(),
            r.value
                .map(|v| if for_csv { v.to_string() } else { short(v) })
                .unwrap_or_default(),
            opt(r.best_step),
            opt(r.steps),
            r.wall_time_s.map(|t| format!("{t:.1}")).unwrap_or_default(),
        ];
        c.extend(r.values.iter().cloned());
        let error = r.error.clone().unwrap_or_default();
        c.push(if for_csv || error.chars().count() <= 80 {
            error
        } else {
            format!("{}...", error.chars().take(77).collect::<String>())
        });
        c
    }

    /// The table as aligned text columns, for a terminal.
    pub fn to_text(&self) -> String {
        let mut lines = vec![self.header()];
        lines.extend(
            self.rows
                .iter()
                .enumerate()
                .map(|(i, r)| self.cells(i, r, false)),
        );
        aligned(&lines)
    }

    /// The table as CSV (full-precision values, whole errors).
    pub fn to_csv(&self) -> String {
        let mut lines = vec![self.header()];
        lines.extend(
            self.rows
                .iter()
                .enumerate()
                .map(|(i, r)| self.cells(i, r, true)),
        );
        // Quoting as RFC 4180 (the `csv` crate): cells with commas, quotes
        // or line breaks are quoted, quotes doubled.
        let mut out = csv::WriterBuilder::new()
            .terminator(csv::Terminator::Any(b'\n'))
            .from_writer(Vec::new());
        for line in &lines {
            // Writing to memory cannot fail.
            let _ = out.write_record(line);
        }
        let bytes = out.into_inner().unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Counts of trials per state, e.g. `3 finished, 1 failed`.
    pub fn counts(&self) -> String {
        let mut parts = Vec::new();
        for state in [
            TrialState::Finished,
            TrialState::Running,
            TrialState::Pending,
            TrialState::Interrupted,
            TrialState::Failed,
        ] {
            let n = self.rows.iter().filter(|r| r.state == state).count();
            if n > 0 {
                parts.push(format!("{n} {}", state.as_str()));
            }
        }
        parts.join(", ")
    }
}

/// Rows of cells as text columns padded to their widest cell, two spaces
/// apart, one line per row (the sweep's summary and status tables).
pub fn aligned<R: AsRef<[String]>>(rows: &[R]) -> String {
    let columns = rows.iter().map(|r| r.as_ref().len()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.as_ref().get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let text: Vec<String> = row
            .as_ref()
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(text.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(index: usize, state: TrialState, value: Option<f64>) -> Row {
        Row {
            index,
            name: format!("{index:03}"),
            state,
            value,
            best_step: None,
            steps: None,
            wall_time_s: None,
            values: vec![format!("{index}")],
            error: (state == TrialState::Failed).then(|| "boom, \"bad\"".to_string()),
        }
    }

    fn ranked(maximize: bool) -> Vec<usize> {
        use TrialState::*;
        let mut rows = vec![
            r(0, Failed, Some(0.01)),
            r(1, Finished, Some(0.5)),
            r(2, Interrupted, None),
            r(3, Finished, Some(0.2)),
            r(4, Finished, None),
            r(5, Finished, Some(0.9)),
        ];
        rank(&mut rows, maximize);
        rows.iter().map(|r| r.index).collect()
    }

    #[test]
    fn min_mode_ranks_low_first_failed_last() {
        assert_eq!(ranked(false), [3, 1, 5, 4, 2, 0]);
    }

    #[test]
    fn max_mode_ranks_high_first_failed_last() {
        assert_eq!(ranked(true), [5, 1, 3, 4, 2, 0]);
    }

    #[test]
    fn text_and_csv_show_ranks_values_and_errors() {
        let mut rows = vec![
            r(0, TrialState::Failed, None),
            r(1, TrialState::Finished, Some(0.25)),
        ];
        rank(&mut rows, false);
        let table = Table {
            monitor: "val/loss".into(),
            maximize: false,
            params: vec!["optim.lr".into()],
            rows,
        };
        let text = table.to_text();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("rank  trial  state"), "{text}");
        assert!(lines[0].contains("val/loss (min)") && lines[0].contains("optim.lr"));
        assert!(
            lines[1].starts_with("1     001    finished  0.250000"),
            "{text}"
        );
        assert!(lines[2].starts_with("-     000    failed"), "{text}");
        let csv = table.to_csv();
        assert!(csv.contains("\n1,001,finished,0.25,,,,1,\n"), "{csv}");
        assert!(csv.ends_with(",\"boom, \"\"bad\"\"\"\n"), "{csv}");
        assert_eq!(table.counts(), "1 finished, 1 failed");
    }
}

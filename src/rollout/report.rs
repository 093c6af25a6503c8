//! What a rollout tells: owns the line printed per step, the progress bar
//! while a step runs (only when stdout is a terminal), and the JSON report
//! (`--report FILE`).

use std::io::Write;

use serde::Serialize;

use super::plan::Weights;

/// One step as it ended.
#[derive(Debug, Clone, Serialize)]
pub struct StepRecord {
    /// 1-based.
    pub step: usize,
    /// The canary's share of the group, in percent.
    pub share: f64,
    /// The weights the step set.
    pub weights: Weights,
    /// The canary's requests in the step.
    pub requests: u64,
    /// Its failed (5xx) requests.
    pub errors: u64,
    /// `errors / requests` (0 without requests).
    pub error_ratio: f64,
    /// The canary's 99th percentile latency, in milliseconds.
    pub p99_ms: Option<f64>,
    /// The baseline's 99th percentile it was compared with, in milliseconds.
    pub baseline_p99_ms: Option<f64>,
    /// How long the step ran.
    pub duration_ms: u64,
    /// How many times its window was extended for lack of requests.
    pub extensions: u32,
    /// `pass`, `breach`, `inconclusive` or `interrupted`.
    pub verdict: &'static str,
    /// Why, in words.
    pub reason: String,
}

/// The whole rollout, as `--report` writes it.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The routing group.
    pub group: String,
    /// The member rolled out.
    pub canary: String,
    /// What the figures came from.
    pub source: String,
    /// The planned shares.
    pub steps_planned: Vec<f64>,
    /// `promoted`, `rolled_back` or `interrupted`.
    pub outcome: &'static str,
    /// The weights before the rollout.
    pub weights_before: Weights,
    /// The weights it left.
    pub weights_after: Option<Weights>,
    /// Every step run.
    pub steps: Vec<StepRecord>,
}

/// A millisecond figure as printed.
pub fn ms(value: Option<f64>) -> String {
    match value {
        Some(v) if v >= 100.0 => format!("{v:.0} ms"),
        Some(v) => format!("{v:.2} ms"),
        None => "-".to_owned(),
    }
}

/// The line printed when a step ends.
pub fn step_line(record: &StepRecord, steps: usize) -> String {
    let baseline = match record.baseline_p99_ms {
        Some(_) => format!(" (baseline {})", ms(record.baseline_p99_ms)),
        None => String::new(),
    };
    format!(
        "step {}/{steps}  share {:>5.1}%  requests {:>6}  errors {:>6.2}%  p99 {}{baseline}  {}: {}",
        record.step,
        record.share,
        record.requests,
        record.error_ratio * 100.0,
        ms(record.p99_ms),
        record.verdict,
        record.reason,
    )
}

/// Weights as one JSON line.
pub fn weights_text(weights: &Weights) -> String {
    serde_json::to_string(weights).unwrap_or_default()
}

/// The progress bar of a running step, redrawn in place on a terminal.
#[derive(Debug)]
pub struct Progress {
    terminal: bool,
}

impl Progress {
    /// Draws only when stdout is a terminal.
    pub fn new() -> Self {
        Self {
            terminal: std::io::IsTerminal::is_terminal(&std::io::stdout()),
        }
    }

    /// Redraws: the window's `done` fraction, the step and its figures.
    pub fn draw(&self, step: usize, share: f64, done: f64, requests: u64, errors: u64) {
        if !self.terminal {
            return;
        }
        const WIDTH: usize = 30;
        let filled = ((done.clamp(0.0, 1.0)) * WIDTH as f64).round() as usize;
        let mut out = std::io::stdout().lock();
        let _ = write!(
            out,
            "\r\x1b[2Kstep {step} {share:.1}% [{}{}] {:>3.0}%  requests {requests}  errors {errors}",
            "#".repeat(filled),
            ".".repeat(WIDTH - filled),
            done.clamp(0.0, 1.0) * 100.0
        );
        let _ = out.flush();
    }

    /// Clears the bar before a line is printed.
    pub fn clear(&self) {
        if self.terminal {
            let mut out = std::io::stdout().lock();
            let _ = write!(out, "\r\x1b[2K");
            let _ = out.flush();
        }
    }
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

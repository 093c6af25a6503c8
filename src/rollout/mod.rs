//! `rpcgate rollout`: owns a canary release that runs itself. It steps a
//! routing group's weights through the locator admin API ([`plan`]),
//! judges each step on the canary's `member`-labelled series as the
//! gateways saw them ([`source`]), and promotes the canary (exit 0) or
//! rolls it back (exit 1); a signal leaves the last completed step (exit
//! 2). It only reads metrics and writes weights: nothing in the request
//! path depends on it.
//!
//! The rules (docs/rollout.md):
//! - each step sets the canary to its share of the group; the others keep
//!   their relative weights from before the rollout, scaled to the rest;
//! - a step is judged on the requests the canary answered since the step
//!   began (deltas of the counters); once it has `--min-requests`, a
//!   breach (error ratio over `--max-error-ratio`, or p99 over
//!   `--max-p99-ratio` × the baseline's) rolls back at once, without
//!   waiting for the window's end;
//! - a window that ends with fewer than `--min-requests` is extended, by a
//!   whole window each time, at most `--max-extensions` times (default
//!   [`DEFAULT_MAX_EXTENSIONS`]); then the rollout is rolled back as
//!   inconclusive;
//! - rollback: the canary's weight 0, the others their weights from before;
//!   promotion (the last step, 100, passed): the canary holds all the
//!   weight, the others 0.

pub mod client;
pub mod plan;
pub mod report;
pub mod source;

use std::path::PathBuf;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::time::Instant;

pub use self::client::BaseUrl;
use self::plan::Weights;
pub use self::report::{Report, StepRecord};
use self::source::{Snapshot, Source};

/// Exit status: the canary was promoted.
pub const EXIT_PROMOTED: i32 = 0;
/// Exit status: the canary was rolled back (a breach, too few requests,
/// or a failed weight write).
pub const EXIT_ROLLED_BACK: i32 = 1;
/// Exit status: bad input (nothing was changed), or interrupted by a
/// signal (the last completed step's weights left).
pub const EXIT_STOPPED: i32 = 2;

/// The default `--max-extensions`: a step may take up to four windows.
pub const DEFAULT_MAX_EXTENSIONS: u32 = 3;

/// `rpcgate rollout`'s flags.
#[derive(Debug, Clone, clap::Args)]
pub struct RolloutArgs {
    /// The locator admin API (`http://host:port`).
    #[arg(long, value_name = "URL")]
    pub admin: String,
    /// The routing group to roll out in.
    #[arg(long, value_name = "NAME")]
    pub group: String,
    /// The member that is rolled out.
    #[arg(long, value_name = "MEMBER")]
    pub canary: String,
    /// The canary's shares of the group, in percent, rising to 100.
    #[arg(long, value_name = "P,P,...", default_value = "10,50,100")]
    pub steps: String,
    /// How long each step is watched, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 60_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub step_ms: u64,
    /// A gateway's `/metrics` URL (repeat for every gateway).
    #[arg(long = "metrics", value_name = "URL")]
    pub metrics: Vec<String>,
    /// Read the figures from this Prometheus server's query API instead
    /// (it sums the same series over every gateway it scrapes).
    #[arg(long, value_name = "URL", conflicts_with = "metrics")]
    pub prometheus: Option<String>,
    /// The largest share of the canary's requests that may fail (5xx).
    #[arg(long, value_name = "RATIO", default_value_t = 0.01)]
    pub max_error_ratio: f64,
    /// The largest ratio of the canary's p99 latency to the baseline's.
    /// [default: not judged]
    #[arg(long, value_name = "RATIO")]
    pub max_p99_ratio: Option<f64>,
    /// Requests the canary must answer in a step before it is judged.
    #[arg(long, value_name = "N", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub min_requests: u64,
    /// Times a step's window is extended when it saw too few requests,
    /// before the rollout is rolled back as inconclusive.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_EXTENSIONS)]
    pub max_extensions: u32,
    /// How often the figures are read, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(10..))]
    pub poll_ms: u64,
    /// The file holding the admin API's bearer token (not world-readable).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Write a JSON report of every step to this file.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
}

/// Runs a rollout to its end and returns the exit status
/// ([`EXIT_PROMOTED`], [`EXIT_ROLLED_BACK`] or [`EXIT_STOPPED`]). Bad input
/// is one line on stderr; everything else is printed on stdout.
pub async fn run(args: RolloutArgs) -> i32 {
    match Rollout::prepare(args).await {
        Ok(rollout) => rollout.run().await,
        Err(message) => {
            eprintln!("rpcgate rollout: {message}");
            EXIT_STOPPED
        }
    }
}

/// How a step ended.
enum StepEnd {
    Pass,
    Breach,
    Inconclusive,
    Interrupted,
}

/// A prepared rollout: everything checked, nothing changed yet.
struct Rollout {
    args: RolloutArgs,
    admin: BaseUrl,
    token: Option<String>,
    source: Source,
    steps: Vec<f64>,
    before: Weights,
    baseline: Vec<String>,
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Rollout {
    async fn prepare(args: RolloutArgs) -> Result<Self, String> {
        // First, so a signal during the checks is not the default action.
        let interrupt = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
        let terminate = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
        let steps = plan::parse_steps(&args.steps)?;
        if !(args.max_error_ratio >= 0.0 && args.max_error_ratio <= 1.0) {
            return Err("--max-error-ratio must be within 0 and 1".into());
        }
        if args
            .max_p99_ratio
            .is_some_and(|r| !(r > 0.0 && r.is_finite()))
        {
            return Err("--max-p99-ratio must be above 0".into());
        }
        let admin = BaseUrl::parse("--admin", &args.admin)?;
        let token = match &args.token_file {
            Some(file) => {
                let content =
                    crate::secret_file::read(file).map_err(|e| format!("--token-file: {e}"))?;
                let token = String::from_utf8(content)
                    .map_err(|_| format!("--token-file {}: not text", file.display()))?;
                Some(token.trim().to_owned())
            }
            None => None,
        };
        let source = match &args.prometheus {
            Some(url) => Source::Prometheus(BaseUrl::parse("--prometheus", url)?),
            None if args.metrics.is_empty() => {
                return Err("give every gateway's --metrics URL, or --prometheus".into());
            }
            None => Source::Gateways(
                args.metrics
                    .iter()
                    .map(|url| BaseUrl::parse("--metrics", url))
                    .collect::<Result<_, _>>()?,
            ),
        };
        let before = read_group(&admin, &args.group).await?;
        plan::check_group(&args.group, &before, &args.canary)?;
        source
            .snapshot(&args.group)
            .await
            .map_err(|e| format!("cannot read the metrics: {e}"))?;
        // May we write? Put the weights back as they are: nothing changes.
        put_group(&admin, token.as_deref(), &args.group, &before).await?;
        let baseline = plan::baseline_members(&before, &args.canary);
        Ok(Self {
            args,
            admin,
            token,
            source,
            steps,
            before,
            baseline,
            interrupt,
            terminate,
        })
    }

    async fn run(mut self) -> i32 {
        let progress = report::Progress::new();
        let mut report = Report {
            group: self.args.group.clone(),
            canary: self.args.canary.clone(),
            source: self.source.describe(),
            steps_planned: self.steps.clone(),
            outcome: "interrupted",
            weights_before: self.before.clone(),
            weights_after: None,
            steps: Vec::new(),
        };
        println!(
            "rollout of `{}` in group `{}`: steps {} of {} ms each, judged on {} (before: {})",
            self.args.canary,
            self.args.group,
            self.steps
                .iter()
                .map(|s| format!("{s}%"))
                .collect::<Vec<_>>()
                .join(", "),
            self.args.step_ms,
            report.source,
            report::weights_text(&self.before),
        );
        let mut completed: Option<(usize, Weights)> = None;
        let mut reference_p99: Option<f64> = None;
        let total = self.steps.len();
        for (index, share) in self.steps.clone().into_iter().enumerate() {
            let weights = plan::step_weights(&self.before, &self.args.canary, share);
            if let Err(e) = put_group(
                &self.admin,
                self.token.as_deref(),
                &self.args.group,
                &weights,
            )
            .await
            {
                println!("cannot set the weights of step {}: {e}", index + 1);
                report.outcome = "rolled_back";
                return self.roll_back(report, "a weight write failed").await;
            }
            let (end, record) = self
                .watch(
                    index + 1,
                    share,
                    weights.clone(),
                    &progress,
                    &mut reference_p99,
                )
                .await;
            progress.clear();
            println!("{}", report::step_line(&record, total));
            report.steps.push(record);
            match end {
                StepEnd::Pass => completed = Some((index + 1, weights)),
                StepEnd::Breach | StepEnd::Inconclusive => {
                    report.outcome = "rolled_back";
                    let why = if matches!(end, StepEnd::Breach) {
                        "a breach"
                    } else {
                        "too few requests to judge"
                    };
                    return self.roll_back(report, why).await;
                }
                StepEnd::Interrupted => {
                    let (step, left) = match &completed {
                        Some((step, weights)) => (format!("step {step}"), weights.clone()),
                        None => ("before the rollout".to_owned(), self.before.clone()),
                    };
                    let written =
                        put_group(&self.admin, self.token.as_deref(), &self.args.group, &left)
                            .await;
                    match written {
                        Ok(()) => println!(
                            "interrupted: left `{}` at the weights of the last completed step ({step}): {}",
                            self.args.group,
                            report::weights_text(&left)
                        ),
                        Err(e) => println!(
                            "interrupted: could not set the weights of the last completed step ({step}): {e}"
                        ),
                    }
                    report.outcome = "interrupted";
                    report.weights_after = Some(left);
                    write_report(self.args.report.as_deref(), &report);
                    return EXIT_STOPPED;
                }
            }
        }
        let after = plan::step_weights(&self.before, &self.args.canary, 100.0);
        println!(
            "promoted: `{}` holds all the weight of `{}`: {}",
            self.args.canary,
            self.args.group,
            report::weights_text(&after)
        );
        report.outcome = "promoted";
        report.weights_after = Some(after);
        write_report(self.args.report.as_deref(), &report);
        EXIT_PROMOTED
    }

    async fn roll_back(&self, mut report: Report, why: &str) -> i32 {
        let weights = plan::rollback_weights(&self.before, &self.args.canary);
        match put_group(
            &self.admin,
            self.token.as_deref(),
            &self.args.group,
            &weights,
        )
        .await
        {
            Ok(()) => println!(
                "rolled back ({why}): `{}` weight 0, the others as before: {}",
                self.args.canary,
                report::weights_text(&weights)
            ),
            Err(e) => println!("rollback ({why}) FAILED, set the weights by hand: {e}"),
        }
        report.weights_after = Some(weights);
        write_report(self.args.report.as_deref(), &report);
        EXIT_ROLLED_BACK
    }

    /// Watches one step's window (and its extensions) and judges it.
    async fn watch(
        &mut self,
        step: usize,
        share: f64,
        weights: Weights,
        progress: &report::Progress,
        reference_p99: &mut Option<f64>,
    ) -> (StepEnd, StepRecord) {
        let window = Duration::from_millis(self.args.step_ms);
        let poll = Duration::from_millis(self.args.poll_ms).min(window);
        let started = Instant::now();
        let mut record = StepRecord {
            step,
            share,
            weights,
            requests: 0,
            errors: 0,
            error_ratio: 0.0,
            p99_ms: None,
            baseline_p99_ms: None,
            duration_ms: 0,
            extensions: 0,
            verdict: "interrupted",
            reason: String::new(),
        };
        let mut start: Option<Snapshot> = None;
        let mut last_error_reported = false;
        let mut deadline = started + window;
        loop {
            // The step's first snapshot right away; the next at each poll.
            if start.is_some() {
                let wake = (Instant::now() + poll).min(deadline);
                tokio::select! {
                    () = tokio::time::sleep_until(wake) => {}
                    _ = self.interrupt.recv() => return self.interrupted(record, started),
                    _ = self.terminate.recv() => return self.interrupted(record, started),
                }
            }
            let now = match self.source.snapshot(&self.args.group).await {
                Ok(now) => now,
                Err(e) => {
                    if !last_error_reported {
                        progress.clear();
                        eprintln!("rpcgate rollout: cannot read the metrics (retrying): {e}");
                        last_error_reported = true;
                    }
                    if start.is_none() || Instant::now() < deadline {
                        continue;
                    }
                    start.clone().unwrap_or_default()
                }
            };
            let Some(first) = &start else {
                start = Some(now);
                continue;
            };
            let seen = now.since(first);
            let canary = seen.member(&self.args.canary);
            let baseline = seen.sum(&self.baseline);
            record.requests = canary.requests() as u64;
            record.errors = canary.errors() as u64;
            record.error_ratio = if record.requests == 0 {
                0.0
            } else {
                canary.errors() / canary.requests()
            };
            record.p99_ms = canary.quantile(0.99).map(|s| s * 1000.0);
            if baseline.requests() as u64 >= self.args.min_requests {
                *reference_p99 = baseline.quantile(0.99).map(|s| s * 1000.0);
            }
            record.baseline_p99_ms = *reference_p99;
            record.duration_ms = started.elapsed().as_millis() as u64;
            let windows = f64::from(record.extensions + 1);
            let done = started.elapsed().as_secs_f64() / (window.as_secs_f64() * windows);
            progress.draw(step, share, done, record.requests, record.errors);
            if record.requests >= self.args.min_requests {
                if record.error_ratio > self.args.max_error_ratio {
                    record.verdict = "breach";
                    record.reason = format!(
                        "error ratio {:.2}% over {:.2}%",
                        record.error_ratio * 100.0,
                        self.args.max_error_ratio * 100.0
                    );
                    return (StepEnd::Breach, record);
                }
                if let (Some(max), Some(p99), Some(base)) = (
                    self.args.max_p99_ratio,
                    record.p99_ms,
                    record.baseline_p99_ms,
                ) && base > 0.0
                    && p99 > max * base
                {
                    record.verdict = "breach";
                    record.reason = format!("p99 {:.1}x the baseline's, over {max}x", p99 / base);
                    return (StepEnd::Breach, record);
                }
            }
            if Instant::now() < deadline {
                continue;
            }
            if record.requests >= self.args.min_requests {
                record.verdict = "pass";
                record.reason = if record.extensions == 0 {
                    "within bounds".to_owned()
                } else {
                    format!("within bounds (window extended {}x)", record.extensions)
                };
                return (StepEnd::Pass, record);
            }
            if record.extensions < self.args.max_extensions {
                record.extensions += 1;
                deadline += window;
                continue;
            }
            record.verdict = "inconclusive";
            record.reason = format!(
                "{} requests, under --min-requests {}, after {} windows",
                record.requests,
                self.args.min_requests,
                record.extensions + 1
            );
            return (StepEnd::Inconclusive, record);
        }
    }

    fn interrupted(&self, mut record: StepRecord, started: Instant) -> (StepEnd, StepRecord) {
        record.verdict = "interrupted";
        record.reason = "a signal stopped the rollout".to_owned();
        record.duration_ms = started.elapsed().as_millis() as u64;
        (StepEnd::Interrupted, record)
    }
}

/// The group's weights from the admin API.
async fn read_group(admin: &BaseUrl, group: &str) -> Result<Weights, String> {
    let (status, body) = admin
        .send(hyper::Method::GET, "/groups", None, None)
        .await
        .map_err(|e| format!("cannot reach the admin API: {e}"))?;
    if status != 200 {
        return Err(format!("{}/groups answered {status}", admin.as_str()));
    }
    let mut groups: std::collections::BTreeMap<String, Weights> = serde_json::from_slice(&body)
        .map_err(|e| format!("{}/groups: not a map of groups: {e}", admin.as_str()))?;
    groups.remove(group).ok_or_else(|| {
        format!(
            "no group `{group}` at {} (groups: {})",
            admin.as_str(),
            groups.keys().cloned().collect::<Vec<_>>().join(", ")
        )
    })
}

/// Sets the group's weights through the admin API.
async fn put_group(
    admin: &BaseUrl,
    token: Option<&str>,
    group: &str,
    weights: &Weights,
) -> Result<(), String> {
    let body = serde_json::to_vec(weights).map_err(|e| e.to_string())?;
    let (status, answer) = admin
        .send(
            hyper::Method::PUT,
            &format!("/groups/{group}"),
            token,
            Some(body),
        )
        .await
        .map_err(|e| format!("cannot reach the admin API: {e}"))?;
    match status {
        200 => Ok(()),
        401 => Err(format!(
            "{}/groups/{group}: 401, the admin API wants its token (--token-file)",
            admin.as_str()
        )),
        _ => Err(format!(
            "{}/groups/{group} answered {status}: {}",
            admin.as_str(),
            String::from_utf8_lossy(&answer)
        )),
    }
}

fn write_report(file: Option<&std::path::Path>, report: &Report) {
    let Some(file) = file else {
        return;
    };
    let written = serde_json::to_vec_pretty(report)
        .map_err(|e| e.to_string())
        .and_then(|json| std::fs::write(file, json).map_err(|e| e.to_string()));
    match written {
        Ok(()) => println!("report written to {}", file.display()),
        Err(e) => eprintln!(
            "rpcgate rollout: cannot write the report {}: {e}",
            file.display()
        ),
    }
}

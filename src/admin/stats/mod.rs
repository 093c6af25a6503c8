//! `GET /stats`: owns the rates the `/ui` page shows, computed over a
//! short window when asked, from what the gateway already keeps: the
//! Prometheus recorder's counters (rendered and read back) and the pools'
//! and groups' state. Nothing here runs on the request path: a request
//! touches the same atomics it always did, and `/stats` only reads them.
//!
//! Each call takes a [`Sample`] of the counters and keeps it (at most one
//! per [`MIN_SPACING`], none older than [`WINDOW`]); the rates are the
//! difference between the new sample and the oldest one kept, divided by
//! the time between them. The first call after a quiet spell has no
//! earlier sample, so its rates are `null` (the page says "measuring").
//! When nobody asks, nothing is sampled and nothing is kept but the last
//! few samples.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::metrics::{
    LIMIT, LIMIT_HITS, MEMBER, MEMBER_PICKS, OUTLIER_EJECTIONS, REQUEST_SECONDS, REQUESTS, SERVICE,
    STATUS, STREAM_KIND, STREAMS_OPEN,
};
use crate::pool::Pools;

mod report;
mod series;

use self::report::EjectionView;
pub use self::report::Report;
use self::series::Series;

/// The longest window rates are computed over: long enough to smooth a
/// once-a-second page, short enough that a weight change shows within
/// seconds.
pub const WINDOW: Duration = Duration::from_secs(5);

/// Samples closer together than this are not both kept (several pages
/// open at once share the samples).
const MIN_SPACING: Duration = Duration::from_millis(250);

/// How many outlier ejections `/stats` remembers.
const RECENT_EJECTIONS: usize = 20;

/// The rate state behind `/stats`: the last few samples and the
/// ejections seen between them.
#[derive(Debug, Default)]
pub struct Stats {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    samples: VecDeque<Sample>,
    ejections: VecDeque<Ejection>,
}

/// An ejection `/stats` saw happen (its counter went up between samples).
#[derive(Debug, Clone)]
struct Ejection {
    group: String,
    member: String,
    seen: Instant,
}

/// The counters at one instant.
#[derive(Debug, Default, Clone)]
struct Sample {
    at: Option<Instant>,
    /// Answered requests by (service, member), per status class 1xx..5xx.
    requests: HashMap<(String, String), [f64; 5]>,
    /// Latency histogram buckets by (service, member): (upper bound, cumulative count).
    latency: HashMap<(String, String), Vec<(f64, f64)>>,
    /// Member picks by (group, member).
    picks: HashMap<(String, String), f64>,
    /// Limit hits by limit.
    limits: BTreeMap<String, f64>,
    /// Outlier ejections by (group, member).
    ejections: HashMap<(String, String), f64>,
    /// Open streams by kind (a gauge).
    streams: BTreeMap<String, f64>,
}

impl Stats {
    /// Samples the counters now and answers the `/stats` document.
    pub fn report(&self, pools: &Pools) -> Report {
        let now = Instant::now();
        let metrics = crate::metrics::render();
        let mut current = metrics.as_deref().map(Sample::parse).unwrap_or_default();
        current.at = Some(now);
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.samples.retain(|s| {
            s.at.is_some_and(|at| now.saturating_duration_since(at) <= WINDOW)
        });
        // Ejections: what went up since the newest sample kept.
        if let Some(newest) = state.samples.back() {
            let mut seen: Vec<Ejection> = current
                .ejections
                .iter()
                .filter(|(key, n)| **n > newest.ejections.get(*key).copied().unwrap_or(0.0))
                .map(|((group, member), _)| Ejection {
                    group: group.clone(),
                    member: member.clone(),
                    seen: now,
                })
                .collect();
            seen.sort_by(|a, b| (&a.group, &a.member).cmp(&(&b.group, &b.member)));
            state.ejections.extend(seen);
            while state.ejections.len() > RECENT_EJECTIONS {
                state.ejections.pop_front();
            }
        }
        let base = state
            .samples
            .front()
            .filter(|s| {
                s.at.is_some_and(|at| now.saturating_duration_since(at) > Duration::ZERO)
            })
            .cloned();
        let keep = state
            .samples
            .back()
            .and_then(|s| s.at)
            .is_none_or(|at| now.saturating_duration_since(at) >= MIN_SPACING);
        if keep {
            state.samples.push_back(current.clone());
        }
        let ejections = state
            .ejections
            .iter()
            .rev()
            .map(|e| EjectionView {
                group: e.group.clone(),
                member: e.member.clone(),
                ago_s: now.saturating_duration_since(e.seen).as_secs_f64(),
            })
            .collect();
        drop(state);
        Report::build(metrics.is_some(), &current, base.as_ref(), pools, ejections)
    }
}

// === impl Sample ===

impl Sample {
    /// Reads the series `/stats` needs out of Prometheus text.
    fn parse(text: &str) -> Self {
        let mut sample = Self::default();
        for line in text.lines() {
            let Some(series) = Series::parse(line) else {
                continue;
            };
            let label = |name: &str| series.label(name).unwrap_or_default().to_owned();
            let pair = || (label(SERVICE), label(MEMBER));
            match series.name {
                n if n == REQUESTS => {
                    let class = match series.label(STATUS) {
                        Some("1xx") => 0,
                        Some("2xx") => 1,
                        Some("3xx") => 2,
                        Some("4xx") => 3,
                        _ => 4,
                    };
                    sample.requests.entry(pair()).or_default()[class] += series.value;
                }
                n if n.strip_suffix("_bucket") == Some(REQUEST_SECONDS) => {
                    let le = match series.label("le") {
                        Some("+Inf") => f64::INFINITY,
                        Some(le) => match le.parse() {
                            Ok(le) => le,
                            Err(_) => continue,
                        },
                        None => continue,
                    };
                    sample
                        .latency
                        .entry(pair())
                        .or_default()
                        .push((le, series.value));
                }
                n if n == MEMBER_PICKS => {
                    *sample.picks.entry(pair()).or_default() += series.value;
                }
                n if n == LIMIT_HITS => {
                    *sample.limits.entry(label(LIMIT)).or_default() += series.value;
                }
                n if n == OUTLIER_EJECTIONS => {
                    *sample.ejections.entry(pair()).or_default() += series.value;
                }
                n if n == STREAMS_OPEN => {
                    *sample.streams.entry(label(STREAM_KIND)).or_default() += series.value;
                }
                _ => {}
            }
        }
        for buckets in sample.latency.values_mut() {
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        sample
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_prometheus_series() {
        let text = "# HELP x\n\
            rpcgate_requests_total{service=\"canary\",member=\"echo-v1\",status=\"2xx\"} 30\n\
            rpcgate_requests_total{service=\"canary\",member=\"echo-v1\",status=\"5xx\"} 2\n\
            rpcgate_member_picks_total{service=\"canary\",member=\"echo-v1\"} 31\n\
            rpcgate_limit_hits_total{limit=\"a\\\"b\"} 4\n\
            rpcgate_streams_open{kind=\"sse\"} 1\n\
            rpcgate_request_duration_seconds_bucket{service=\"s\",member=\"s\",le=\"0.001\"} 5\n\
            rpcgate_request_duration_seconds_bucket{service=\"s\",member=\"s\",le=\"+Inf\"} 10\n";
        let sample = Sample::parse(text);
        let key = ("canary".to_owned(), "echo-v1".to_owned());
        assert_eq!(sample.requests[&key], [0.0, 30.0, 0.0, 0.0, 2.0]);
        assert_eq!(sample.picks[&key], 31.0);
        assert_eq!(sample.limits["a\"b"], 4.0);
        assert_eq!(sample.streams["sse"], 1.0);
        let latency = &sample.latency[&("s".to_owned(), "s".to_owned())];
        assert_eq!(latency, &[(0.001, 5.0), (f64::INFINITY, 10.0)]);
    }
}

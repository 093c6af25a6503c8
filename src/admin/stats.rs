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

use serde::Serialize;
use tokio::time::Instant;

use crate::metrics::{
    LIMIT, LIMIT_HITS, MEMBER, MEMBER_PICKS, OUTLIER_EJECTIONS, REQUEST_SECONDS, REQUESTS, SERVICE,
    STATUS, STREAM_KIND, STREAMS_OPEN,
};
use crate::pool::Pools;

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

/// One line of Prometheus text: `name{label="value",...} value`.
#[derive(Debug)]
struct Series<'a> {
    name: &'a str,
    labels: Vec<(&'a str, String)>,
    value: f64,
}

impl<'a> Series<'a> {
    fn parse(line: &'a str) -> Option<Self> {
        if line.starts_with('#') || line.trim().is_empty() {
            return None;
        }
        let (head, value) = line.trim_end().rsplit_once(' ')?;
        let value: f64 = value.parse().ok()?;
        let (name, labels) = match head.split_once('{') {
            Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}')?)?),
            None => (head, Vec::new()),
        };
        Some(Self {
            name,
            labels,
            value,
        })
    }

    fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `a="x",b="y\"z"` into pairs, unescaping `\\`, `\"` and `\n`.
fn parse_labels(mut text: &str) -> Option<Vec<(&str, String)>> {
    let mut labels = Vec::new();
    loop {
        text = text.trim_start_matches(',');
        if text.is_empty() {
            return Some(labels);
        }
        let (name, rest) = text.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        labels.push((name, value));
        text = &rest[end + 1..];
    }
}

// === impl Report ===

/// The `/stats` document.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Whether the process has a metrics recorder (without one, only pool
    /// and group state are shown).
    pub metrics: bool,
    /// The seconds the rates are computed over (`None`: no earlier
    /// sample yet, ask again in a second).
    pub window_s: Option<f64>,
    /// Per service (and group): request rate, errors, latency.
    pub services: Vec<ServiceRates>,
    /// Per routing group: each member's share of traffic against its
    /// weight, and its state.
    pub groups: Vec<GroupView>,
    /// Per pool: its connections by state.
    pub pools: Vec<PoolView>,
    /// Open streams by kind.
    pub streams: BTreeMap<String, f64>,
    /// Client limits that fired.
    pub limits: Vec<LimitView>,
    /// Outlier ejections seen while `/stats` was being asked, newest
    /// first.
    pub ejections: Vec<EjectionView>,
}

/// One service's rates over the window.
#[derive(Debug, Serialize)]
pub struct ServiceRates {
    /// The service (a group's name for requests routed through it).
    pub service: String,
    /// Whether it is a routing group.
    pub group: bool,
    /// Requests answered per second.
    pub rps: Option<f64>,
    /// The share of them answered 5xx (0 to 1).
    pub error_ratio: Option<f64>,
    /// Median latency, in milliseconds (bucket-interpolated).
    pub p50_ms: Option<f64>,
    /// 99th percentile latency, in milliseconds (bucket-interpolated).
    pub p99_ms: Option<f64>,
    /// Requests answered since the gateway started.
    pub total: f64,
}

/// A routing group as the page shows it.
#[derive(Debug, Serialize)]
pub struct GroupView {
    /// The group.
    pub group: String,
    /// Member picks per second.
    pub rps: Option<f64>,
    /// Its members.
    pub members: Vec<MemberShare>,
}

/// One member: its share of traffic against its weight.
#[derive(Debug, Serialize)]
pub struct MemberShare {
    /// The member's service name.
    pub member: String,
    /// active, slow_start, connecting or ejected.
    pub state: &'static str,
    /// Its weight (points on the ring).
    pub weight: u32,
    /// Its weight's share of the group's (0 to 1).
    pub weight_share: f64,
    /// Its effective weight's share (after slow start and ejection).
    pub effective_share: f64,
    /// Its share of the group's picks over the window (0 to 1).
    pub traffic_share: Option<f64>,
    /// Its picks per second.
    pub rps: Option<f64>,
    /// Its connections by state.
    pub connections: BTreeMap<&'static str, usize>,
    /// Times ejected so far.
    pub ejections: u32,
    /// Seconds left of the current ejection.
    pub ejected_for_s: Option<f64>,
}

/// One pool's connections.
#[derive(Debug, Serialize)]
pub struct PoolView {
    /// The service it connects to.
    pub service: String,
    /// Whether it serves a routing group's member.
    pub member: bool,
    /// Its configured size.
    pub size: usize,
    /// Connections by state (live, stale, draining, closed).
    pub connections: BTreeMap<&'static str, usize>,
    /// Channels open on them.
    pub in_flight: usize,
}

/// One client limit.
#[derive(Debug, Serialize)]
pub struct LimitView {
    /// The limit's name.
    pub limit: String,
    /// Hits per second over the window.
    pub per_s: Option<f64>,
    /// Hits since the gateway started.
    pub total: f64,
}

/// One outlier ejection.
#[derive(Debug, Serialize)]
pub struct EjectionView {
    /// The group.
    pub group: String,
    /// The member ejected.
    pub member: String,
    /// Seconds since `/stats` saw it (within a second of when it happened
    /// while the page is open).
    pub ago_s: f64,
}

impl Report {
    fn build(
        metrics: bool,
        now: &Sample,
        base: Option<&Sample>,
        pools: &Pools,
        ejections: Vec<EjectionView>,
    ) -> Self {
        let window = base.and_then(|b| Some(now.at?.saturating_duration_since(b.at?)));
        let window_s = window.map(|w| w.as_secs_f64()).filter(|w| *w > 0.0);
        let rate = |delta: f64| window_s.map(|w| delta.max(0.0) / w);
        let groups_list = pools.groups();
        let is_group = |name: &str| groups_list.iter().any(|g| g.name() == name);

        // Services: members summed.
        let mut services: BTreeMap<&str, ServiceSums> = BTreeMap::new();
        for ((service, member), counts) in &now.requests {
            let entry = services.entry(service).or_default();
            let before = base
                .and_then(|b| b.requests.get(&(service.clone(), member.clone())))
                .copied()
                .unwrap_or_default();
            for class in 0..5 {
                entry.0[class] += counts[class];
                entry.1[class] += (counts[class] - before[class]).max(0.0);
            }
        }
        for ((service, member), buckets) in &now.latency {
            let Some(entry) = services.get_mut(service.as_str()) else {
                continue;
            };
            let before = base.and_then(|b| b.latency.get(&(service.clone(), member.clone())));
            add_buckets(&mut entry.2, buckets, before.map(Vec::as_slice));
        }
        let services = services
            .into_iter()
            .map(|(service, (total, delta, buckets))| {
                let answered: f64 = delta.iter().sum();
                let measured = window_s.is_some();
                ServiceRates {
                    service: service.to_owned(),
                    group: is_group(service),
                    rps: rate(answered),
                    error_ratio: (measured && answered > 0.0).then(|| delta[4] / answered),
                    p50_ms: measured.then(|| quantile(&buckets, 0.5)).flatten(),
                    p99_ms: measured.then(|| quantile(&buckets, 0.99)).flatten(),
                    total: total.iter().sum(),
                }
            })
            .collect();

        let groups = groups_list
            .iter()
            .map(|group| {
                let view = group.view();
                let key = |member: &str| (group.name().to_owned(), member.to_owned());
                let picks: Vec<f64> = view
                    .iter()
                    .map(|m| {
                        let k = key(&m.member);
                        let before = base.and_then(|b| b.picks.get(&k)).copied().unwrap_or(0.0);
                        (now.picks.get(&k).copied().unwrap_or(0.0) - before).max(0.0)
                    })
                    .collect();
                let all_picks: f64 = picks.iter().sum();
                let weights: f64 = view.iter().map(|m| f64::from(m.weight)).sum();
                let effective: f64 = view.iter().map(|m| m.effective_weight).sum();
                let share = |part: f64, whole: f64| if whole > 0.0 { part / whole } else { 0.0 };
                let members = view
                    .into_iter()
                    .zip(&picks)
                    .map(|(m, picked)| MemberShare {
                        state: m.state,
                        weight: m.weight,
                        weight_share: share(f64::from(m.weight), weights),
                        effective_share: share(m.effective_weight, effective),
                        traffic_share: (window_s.is_some() && all_picks > 0.0)
                            .then(|| picked / all_picks),
                        rps: rate(*picked),
                        connections: m.connections,
                        ejections: m.ejections,
                        ejected_for_s: m.ejected_for_s,
                        member: m.member,
                    })
                    .collect();
                GroupView {
                    group: group.name().to_owned(),
                    rps: rate(all_picks),
                    members,
                }
            })
            .collect();

        let pools = pools
            .all()
            .iter()
            .map(|pool| {
                let mut connections = BTreeMap::new();
                let mut in_flight = 0;
                for conn in pool.snapshot() {
                    *connections.entry(conn.state).or_insert(0) += 1;
                    in_flight += conn.in_flight;
                }
                PoolView {
                    service: pool.service().to_owned(),
                    member: pool.is_member(),
                    size: pool.settings().size,
                    connections,
                    in_flight,
                }
            })
            .collect();

        let limits = now
            .limits
            .iter()
            .map(|(limit, total)| LimitView {
                limit: limit.clone(),
                per_s: rate(
                    total
                        - base
                            .and_then(|b| b.limits.get(limit))
                            .copied()
                            .unwrap_or(0.0),
                ),
                total: *total,
            })
            .collect();

        Self {
            metrics,
            window_s,
            services,
            groups,
            pools,
            streams: now.streams.clone(),
            limits,
            ejections,
        }
    }
}

/// A service's counts, members summed: answered by class since start, the
/// same over the window, and the window's latency buckets.
type ServiceSums = ([f64; 5], [f64; 5], Vec<(f64, f64)>);

/// Adds `now - before` (cumulative bucket counts) into `sum`.
fn add_buckets(sum: &mut Vec<(f64, f64)>, now: &[(f64, f64)], before: Option<&[(f64, f64)]>) {
    for (i, (le, count)) in now.iter().enumerate() {
        let earlier = before
            .and_then(|b| b.iter().find(|(l, _)| l == le))
            .map_or(0.0, |(_, c)| *c);
        let delta = (count - earlier).max(0.0);
        match sum.get_mut(i) {
            Some(slot) if slot.0 == *le => slot.1 += delta,
            _ => match sum.iter_mut().find(|(l, _)| l == le) {
                Some(slot) => slot.1 += delta,
                None => {
                    sum.push((*le, delta));
                    sum.sort_by(|a, b| a.0.total_cmp(&b.0));
                }
            },
        }
    }
}

/// The `q` quantile of cumulative `buckets` (sorted by bound), in
/// milliseconds, interpolated linearly within its bucket (as Prometheus'
/// `histogram_quantile` does); `None` with no samples. A quantile in the
/// `+Inf` bucket is the largest finite bound.
fn quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let target = q * total;
    let mut lower = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= target {
            if le.is_infinite() {
                return Some(lower.0 * 1000.0);
            }
            let within = count - lower.1;
            let fraction = if within > 0.0 {
                (target - lower.1) / within
            } else {
                1.0
            };
            return Some((lower.0 + (le - lower.0) * fraction) * 1000.0);
        }
        lower = (le, count);
    }
    Some(lower.0 * 1000.0)
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

    #[test]
    fn quantiles_interpolate_within_buckets() {
        let buckets = [(0.001, 50.0), (0.002, 100.0), (f64::INFINITY, 100.0)];
        assert_eq!(quantile(&buckets, 0.5), Some(1.0));
        let p75 = quantile(&buckets, 0.75).unwrap();
        assert!((p75 - 1.5).abs() < 1e-9, "{p75}");
        assert_eq!(quantile(&[(0.001, 0.0), (f64::INFINITY, 0.0)], 0.5), None);
        // All in +Inf: the largest finite bound.
        assert_eq!(
            quantile(&[(0.001, 0.0), (f64::INFINITY, 4.0)], 0.5),
            Some(1.0)
        );
    }

    #[test]
    fn buckets_are_differenced() {
        let mut sum = Vec::new();
        add_buckets(
            &mut sum,
            &[(0.001, 10.0), (f64::INFINITY, 12.0)],
            Some(&[(0.001, 4.0), (f64::INFINITY, 4.0)]),
        );
        assert_eq!(sum, vec![(0.001, 6.0), (f64::INFINITY, 8.0)]);
    }
}

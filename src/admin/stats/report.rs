//! The `/stats` document: rates, shares and percentiles from two
//! samples, with the pools' and groups' state read when asked.

use std::collections::BTreeMap;

use serde::Serialize;

use super::Sample;
use crate::pool::Pools;

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
    pub(super) fn build(
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

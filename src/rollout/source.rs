//! Where a rollout reads what the gateways saw: owns the group's
//! `member`-labelled series ([`crate::metrics::REQUESTS`] by status class,
//! the [`crate::metrics::REQUEST_SECONDS`] buckets) as a [`Snapshot`],
//! read from every gateway's `/metrics` (summed) or from Prometheus
//! (PromQL summing the same series over every gateway it scrapes), and the
//! step's figures as the difference of two snapshots.

use std::collections::BTreeMap;

use super::client::{BaseUrl, query_escape};
use crate::metrics::{MEMBER, REQUEST_SECONDS, REQUESTS, SERVICE, STATUS};

/// One member's counters: answered requests by status class (1xx..5xx)
/// and the latency histogram's cumulative buckets (`le` → count).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    /// Requests by status class, 1xx first.
    pub classes: [f64; 5],
    /// Cumulative bucket counts by upper bound (`+Inf` as infinity).
    pub buckets: Vec<(f64, f64)>,
}

impl Series {
    fn add_bucket(&mut self, le: f64, count: f64) {
        match self.buckets.iter_mut().find(|(bound, _)| *bound == le) {
            Some((_, total)) => *total += count,
            None => {
                self.buckets.push((le, count));
                self.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            }
        }
    }

    fn add(&mut self, other: &Self) {
        for (mine, theirs) in self.classes.iter_mut().zip(other.classes) {
            *mine += theirs;
        }
        for (le, count) in &other.buckets {
            self.add_bucket(*le, *count);
        }
    }

    /// What happened between `earlier` and `self` (a counter that went
    /// back, after a gateway restarted, counts from 0).
    fn since(&self, earlier: &Self) -> Self {
        let delta = |now: f64, then: f64| if now >= then { now - then } else { now };
        let mut classes = self.classes;
        for (class, then) in classes.iter_mut().zip(earlier.classes) {
            *class = delta(*class, then);
        }
        let buckets = self
            .buckets
            .iter()
            .map(|(le, now)| {
                let then = earlier
                    .buckets
                    .iter()
                    .find(|(b, _)| b == le)
                    .map_or(0.0, |(_, c)| *c);
                (*le, delta(*now, then))
            })
            .collect();
        Self { classes, buckets }
    }

    /// All requests.
    pub fn requests(&self) -> f64 {
        self.classes.iter().sum()
    }

    /// Failed requests: the 5xx class (the gateway's and the app's errors;
    /// 4xx are the clients').
    pub fn errors(&self) -> f64 {
        self.classes[4]
    }

    /// The `q` quantile of the latency, in seconds, interpolated within
    /// its bucket as Prometheus' `histogram_quantile` does; `None` without
    /// samples.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.buckets.last().map(|(_, c)| *c)?;
        if total <= 0.0 {
            return None;
        }
        let rank = q * total;
        let (mut lower, mut below) = (0.0, 0.0);
        for (le, count) in &self.buckets {
            if *count >= rank {
                if le.is_infinite() {
                    return Some(lower);
                }
                let inside = count - below;
                if inside <= 0.0 {
                    return Some(*le);
                }
                return Some(lower + (le - lower) * (rank - below) / inside);
            }
            (lower, below) = (*le, *count);
        }
        Some(lower)
    }
}

/// Every member's counters at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// By member name.
    pub members: BTreeMap<String, Series>,
}

impl Snapshot {
    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &Self) -> Self {
        let empty = Series::default();
        Self {
            members: self
                .members
                .iter()
                .map(|(name, now)| {
                    let then = earlier.members.get(name).unwrap_or(&empty);
                    (name.clone(), now.since(then))
                })
                .collect(),
        }
    }

    /// `member`'s counters (empty if it served nothing).
    pub fn member(&self, member: &str) -> Series {
        self.members.get(member).cloned().unwrap_or_default()
    }

    /// The counters of `members` together.
    pub fn sum(&self, members: &[String]) -> Series {
        let mut total = Series::default();
        for member in members {
            if let Some(series) = self.members.get(member) {
                total.add(series);
            }
        }
        total
    }

    fn merge(&mut self, other: Self) {
        for (name, series) in other.members {
            self.members.entry(name).or_default().add(&series);
        }
    }
}

fn class_index(status: &str) -> Option<usize> {
    let digit = status.bytes().next()?;
    (b'1'..=b'5')
        .contains(&digit)
        .then(|| usize::from(digit - b'1'))
}

fn parse_le(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        _ => text.parse().ok(),
    }
}

/// Parses `{a="x",b="y"}`'s inside into pairs (Prometheus text escapes).
fn parse_labels(text: &str) -> Option<Vec<(String, String)>> {
    let mut labels = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let (name, after) = rest.split_once('=')?;
        let after = after.strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break i,
                c => value.push(c),
            }
        };
        labels.push((name.trim().to_owned(), value));
        rest = after[end + 1..]
            .trim_start()
            .trim_start_matches(',')
            .trim_start();
    }
    Some(labels)
}

/// The group's series in a gateway's `/metrics` text.
pub fn parse_exposition(text: &str, group: &str) -> Snapshot {
    let bucket_name = format!("{REQUEST_SECONDS}_bucket");
    let mut snapshot = Snapshot::default();
    for line in text.lines() {
        let Some((name, rest)) = line.split_once('{') else {
            continue;
        };
        let is_requests = name == REQUESTS;
        if !is_requests && name != bucket_name {
            continue;
        }
        let Some((labels, value)) = rest.rsplit_once('}') else {
            continue;
        };
        let (Some(labels), Some(value)) = (
            parse_labels(labels),
            value
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<f64>().ok()),
        ) else {
            continue;
        };
        let label = |key: &str| {
            labels
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        if label(SERVICE) != Some(group) {
            continue;
        }
        let Some(member) = label(MEMBER) else {
            continue;
        };
        let series = snapshot.members.entry(member.to_owned()).or_default();
        if is_requests {
            if let Some(class) = label(STATUS).and_then(class_index) {
                series.classes[class] += value;
            }
        } else if let Some(le) = label("le").and_then(parse_le) {
            series.add_bucket(le, value);
        }
    }
    snapshot
}

/// Where the figures come from.
#[derive(Debug)]
pub enum Source {
    /// Every gateway's `/metrics`, summed.
    Gateways(Vec<BaseUrl>),
    /// A Prometheus server's query API, summing over what it scrapes.
    Prometheus(BaseUrl),
}

impl Source {
    /// Says what it reads, for the first line printed.
    pub fn describe(&self) -> String {
        match self {
            Self::Gateways(urls) if urls.len() == 1 => urls[0].as_str().to_owned(),
            Self::Gateways(urls) => format!("{} gateways' /metrics", urls.len()),
            Self::Prometheus(url) => format!("Prometheus at {}", url.as_str()),
        }
    }

    /// The group's counters now.
    ///
    /// # Errors
    ///
    /// A source cannot be read (one line naming it).
    pub async fn snapshot(&self, group: &str) -> Result<Snapshot, String> {
        match self {
            Self::Gateways(urls) => {
                let mut total = Snapshot::default();
                for url in urls {
                    let (status, body) = url.send(hyper::Method::GET, "", None, None).await?;
                    if status != 200 {
                        return Err(format!("{}: status {status}", url.as_str()));
                    }
                    total.merge(parse_exposition(&String::from_utf8_lossy(&body), group));
                }
                Ok(total)
            }
            Self::Prometheus(url) => {
                let selector = format!(
                    "{{{SERVICE}=\"{}\"}}",
                    group.replace('\\', "\\\\").replace('"', "\\\"")
                );
                let requests = query(
                    url,
                    &format!("sum by ({MEMBER}, {STATUS}) ({REQUESTS}{selector})"),
                )
                .await?;
                let buckets = query(
                    url,
                    &format!("sum by ({MEMBER}, le) ({REQUEST_SECONDS}_bucket{selector})"),
                )
                .await?;
                let mut snapshot = Snapshot::default();
                for (labels, value) in requests {
                    let (Some(member), Some(class)) = (
                        labels.get(MEMBER),
                        labels.get(STATUS).and_then(|s| class_index(s)),
                    ) else {
                        continue;
                    };
                    snapshot.members.entry(member.clone()).or_default().classes[class] += value;
                }
                for (labels, value) in buckets {
                    let (Some(member), Some(le)) = (
                        labels.get(MEMBER),
                        labels.get("le").and_then(|s| parse_le(s)),
                    ) else {
                        continue;
                    };
                    snapshot
                        .members
                        .entry(member.clone())
                        .or_default()
                        .add_bucket(le, value);
                }
                Ok(snapshot)
            }
        }
    }
}

/// A PromQL instant query's vector: each sample's labels and value.
async fn query(
    url: &BaseUrl,
    promql: &str,
) -> Result<Vec<(BTreeMap<String, String>, f64)>, String> {
    let (status, body) = url
        .send(
            hyper::Method::GET,
            &format!("/api/v1/query?query={}", query_escape(promql)),
            None,
            None,
        )
        .await?;
    let answer: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
        format!(
            "{}: not a Prometheus answer (status {status}): {e}",
            url.as_str()
        )
    })?;
    if answer["status"] != "success" {
        return Err(format!(
            "{}: the query failed (status {status}): {}",
            url.as_str(),
            answer["error"].as_str().unwrap_or("no reason given")
        ));
    }
    let mut samples = Vec::new();
    for sample in answer["data"]["result"].as_array().into_iter().flatten() {
        let labels = sample["metric"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
            .collect();
        let Some(value) = sample["value"][1].as_str().and_then(|v| v.parse().ok()) else {
            continue;
        };
        samples.push((labels, value));
    }
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP rpcgate_requests_total Requests
rpcgate_requests_total{service="canary",member="v2",status="2xx"} 90
rpcgate_requests_total{service="canary",member="v2",status="5xx"} 10
rpcgate_requests_total{service="canary",member="v1",status="2xx"} 300
rpcgate_requests_total{service="other",member="v2",status="5xx"} 77
rpcgate_request_duration_seconds_bucket{service="canary",member="v2",le="0.001"} 50
rpcgate_request_duration_seconds_bucket{service="canary",member="v2",le="0.01"} 100
rpcgate_request_duration_seconds_bucket{service="canary",member="v2",le="+Inf"} 100
rpcgate_request_duration_seconds_sum{service="canary",member="v2"} 0.3
"#;

    #[test]
    fn the_group_series_are_read_and_differenced() {
        let snapshot = parse_exposition(TEXT, "canary");
        let v2 = snapshot.member("v2");
        assert_eq!((v2.requests(), v2.errors()), (100.0, 10.0));
        assert_eq!(snapshot.member("v1").requests(), 300.0);
        // 99th of 100: in the 1-10 ms bucket, 49/50 of the way.
        let p99 = v2.quantile(0.99).unwrap();
        assert!((p99 - (0.001 + 0.009 * 49.0 / 50.0)).abs() < 1e-9, "{p99}");
        assert_eq!(v2.quantile(0.5), Some(0.001));
        let mut later = snapshot.clone();
        later.merge(parse_exposition(TEXT, "canary"));
        let step = later.since(&snapshot);
        assert_eq!(step.member("v2").errors(), 10.0);
        assert_eq!(step.sum(&["v1".into(), "v2".into()]).requests(), 400.0);
        assert_eq!(Series::default().quantile(0.99), None);
    }

    #[test]
    fn labels_with_escapes() {
        let labels = parse_labels(r#"a="x\"y",b="z""#).unwrap();
        assert_eq!(
            labels,
            vec![("a".into(), "x\"y".into()), ("b".into(), "z".into())]
        );
    }
}

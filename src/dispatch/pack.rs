//! Packing: owns the HTTP request → `enqueue` translation: the 5-tuple of
//! PROTOCOL.md §5.2 and the frame headers of §5.3 (forwarded headers, trace
//! ids from `X-Request-Id` or W3C `traceparent`, `trace_bit`,
//! `request_timeout`).

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Version};
use rand::Rng;

use super::{Policy, Watching};
#[cfg(test)]
use crate::proto::http::HttpRequest;
use crate::proto::http::{HeaderNames, RequestTuple};
use crate::proto::{Headers, TraceContext};
use crate::route;

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const X_COCAINE_TRACING_POLICY: HeaderName = HeaderName::from_static("x-cocaine-tracing-policy");

/// A request ready to send: the event, the 5-tuple, the enqueue headers.
#[derive(Debug, Clone)]
pub struct PackedRequest {
    /// The event name.
    pub event: Bytes,
    /// The encoded 5-tuple (the first and only `write`).
    pub tuple: Bytes,
    /// The `enqueue` frame's headers.
    pub headers: Headers,
    /// The trace ids sent.
    pub trace: TraceContext,
}

/// How the trace ids and verbosity of a request were decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceDecision {
    /// The ids.
    pub trace: TraceContext,
    /// The high 64 bits of the W3C trace id (`traceparent`'s first half);
    /// zero for ids from `X-Request-Id` or made here.
    pub trace_hi: u64,
    /// Whether `trace.parent_id` is a caller's span (from `traceparent`)
    /// rather than the trace id repeated (the Cocaine root convention).
    pub remote_parent: bool,
    /// `trace_bit`.
    pub verbose: bool,
}

/// `X-Request-Id` was present and is not a hex u64.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid `X-Request-Id` header value: expected up to 16 hex digits")]
pub struct BadRequestId;

impl TraceDecision {
    /// Trace ids from `X-Request-Id` (hex u64, leading zeros allowed, no
    /// `0x`), else from a W3C `traceparent` (its low 64 trace bits and its
    /// parent id), else random. `trace_bit` from `X-Cocaine-Tracing-Policy`
    /// (`Auto`, or a probability), else `traceparent`'s sampled flag, else
    /// a roll against `probability`.
    pub fn from_headers(headers: &HeaderMap, probability: f64) -> Result<Self, BadRequestId> {
        let mut rng = rand::rng();
        let span_id = rng.random();
        let mut sampled = None;
        let mut trace_hi = 0;
        let trace = if let Some(value) = headers.get(X_REQUEST_ID) {
            let id = parse_hex_u64(value.as_bytes()).ok_or(BadRequestId)?;
            TraceContext {
                trace_id: id,
                span_id,
                parent_id: id,
            }
        } else if let Some((hi, trace_id, parent_id, flag)) = headers
            .get(TRACEPARENT)
            .and_then(|v| parse_traceparent(v.as_bytes()))
        {
            sampled = Some(flag);
            trace_hi = hi;
            TraceContext {
                trace_id,
                span_id,
                parent_id,
            }
        } else {
            let id = rng.random();
            TraceContext {
                trace_id: id,
                span_id,
                parent_id: id,
            }
        };
        let policy = headers
            .get(X_COCAINE_TRACING_POLICY)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|p| (0.0..=1.0).contains(p));
        let verbose = match (policy, sampled) {
            (Some(p), _) => rng.random_bool(p),
            (None, Some(flag)) => flag,
            (None, None) => rng.random_bool(probability.clamp(0.0, 1.0)),
        };
        Ok(Self {
            trace,
            trace_hi,
            remote_parent: sampled.is_some(),
            verbose,
        })
    }
}

impl TraceDecision {
    /// Fresh random ids, not sampled: for a request whose own ids could
    /// not be read.
    pub fn fresh() -> Self {
        let mut rng = rand::rng();
        let id = rng.random();
        Self {
            trace: TraceContext {
                trace_id: id,
                span_id: rng.random(),
                parent_id: id,
            },
            trace_hi: 0,
            remote_parent: false,
            verbose: false,
        }
    }

    /// A child of this decision: the same trace and sampling, a new span
    /// whose parent is this one's (a JSON-RPC call of its request).
    pub fn child(&self) -> Self {
        Self {
            trace: TraceContext {
                trace_id: self.trace.trace_id,
                span_id: rand::random(),
                parent_id: self.trace.span_id,
            },
            trace_hi: self.trace_hi,
            remote_parent: true,
            verbose: self.verbose,
        }
    }
}

fn parse_hex_u64(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 16 || !value.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(value).ok()?, 16).ok()
}

/// `00-<32 hex trace>-<16 hex parent>-<2 hex flags>`: the trace id's high
/// and low halves, the parent, the sampled flag.
fn parse_traceparent(value: &[u8]) -> Option<(u64, u64, u64, bool)> {
    let text = std::str::from_utf8(value).ok()?.trim();
    let mut parts = text.split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version.len() != 2 || trace.len() != 32 || parent.len() != 16 || flags.len() != 2 {
        return None;
    }
    let trace_hi = parse_hex_u64(&trace.as_bytes()[..16])?;
    let trace_id = parse_hex_u64(&trace.as_bytes()[16..])?;
    let parent_id = parse_hex_u64(parent.as_bytes())?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    (trace_id != 0 || trace_hi != 0).then_some((trace_hi, trace_id, parent_id, flags & 1 == 1))
}

/// HTTP/1.1 and HTTP/2 pack as `1.1`, anything older as `1.0`. PROTOCOL.md
/// §5.2 says "anything else gives 1.0" for the old proxy, which predates
/// HTTP/2; workers accept only `1.1` and `1.0`, and HTTP/2 keeps 1.1's
/// semantics, so `1.1` is the conservative choice there.
fn version_text(version: Version) -> &'static [u8] {
    if version >= Version::HTTP_11 {
        b"1.1"
    } else {
        b"1.0"
    }
}

/// The 5-tuple written straight from the request (proto's one encoder),
/// with every header line its own pair and names title-cased.
fn encode_tuple(
    method: &str,
    uri: &str,
    version: &[u8],
    headers: &HeaderMap,
    body: &[u8],
) -> Bytes {
    RequestTuple {
        method: method.as_bytes(),
        uri: uri.as_bytes(),
        version,
        headers: || headers.iter().map(line),
        names: HeaderNames::TitleCase,
        body,
    }
    .to_bytes()
}

fn line<'h>((name, value): (&'h HeaderName, &'h HeaderValue)) -> (&'h [u8], &'h [u8]) {
    (name.as_str().as_bytes(), value.as_bytes())
}

/// Packs a request for `event`: the 5-tuple with `uri` (as routing decided
/// it), every header line its own pair, and the buffered `body`; and the
/// enqueue headers.
#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename these
pub fn pack_request(
    method: &Method,
    version: Version,
    headers: &HeaderMap,
    uri: &str,
    body: Bytes,
    event: &str,
    forward: &BTreeMap<String, String>,
    decision: TraceDecision,
    timeout: Duration,
) -> PackedRequest {
    let tuple = encode_tuple(method.as_str(), uri, version_text(version), headers, &body);
    // Forwarded ones, the three trace ids, trace_bit, request_timeout.
    let mut frame_headers = Headers::with_capacity(forward.len() + 5);
    for (http_name, cocaine_name) in forward {
        for value in headers.get_all(http_name.as_str()) {
            // Names were validated with the config; a value can be anything.
            let _ = frame_headers.insert(
                cocaine_name.clone(),
                Bytes::copy_from_slice(value.as_bytes()),
            );
        }
    }
    frame_headers.set_trace(decision.trace);
    if decision.verbose {
        frame_headers.set_trace_bit(true);
    }
    frame_headers.set_request_timeout(timeout);
    PackedRequest {
        event: Bytes::copy_from_slice(event.as_bytes()),
        tuple,
        headers: frame_headers,
        trace: decision.trace,
    }
}

/// The `enqueue` for a request whose body is `body`.
pub(super) fn pack(
    policy: &Policy,
    parts: &hyper::http::request::Parts,
    target: &route::Target,
    body: Bytes,
    decision: TraceDecision,
    timeout: Duration,
    watching: Watching,
) -> PackedRequest {
    let mut packed = pack_request(
        &parts.method,
        parts.version,
        &parts.headers,
        &target.uri,
        body,
        &target.event,
        &policy.config().request.forward_headers,
        decision,
        timeout,
    );
    if watching.traceparent {
        packed
            .headers
            .set_traceparent(crate::otlp::traceparent(&decision));
    }
    packed
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `content-type` → `Content-Type`, the reference for the encoder's.
    fn title_case(name: &mut [u8]) {
        let mut upper = true;
        for b in name {
            if upper {
                b.make_ascii_uppercase();
            }
            upper = *b == b'-';
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (n, v) in pairs {
            map.append(*n, HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn request_ids_are_hex_u64() {
        let d = TraceDecision::from_headers(&headers(&[("x-request-id", "00000000000004d2")]), 0.0)
            .unwrap();
        assert_eq!((d.trace.trace_id, d.trace.parent_id), (0x4d2, 0x4d2));
        for bad in ["0x4d2", "xyz", "00000000000000000", ""] {
            let map = {
                let mut m = HeaderMap::new();
                m.insert("x-request-id", HeaderValue::from_str(bad).unwrap());
                m
            };
            assert_eq!(
                TraceDecision::from_headers(&map, 0.0),
                Err(BadRequestId),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn traceparent_and_policy() {
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let d = TraceDecision::from_headers(&headers(&[("traceparent", tp)]), 0.0).unwrap();
        assert_eq!(d.trace.trace_id, 0x8448_eb21_1c80_319c);
        assert_eq!(d.trace.parent_id, 0xb7ad_6b71_6920_3331);
        assert_eq!(d.trace_hi, 0x0af7_6519_16cd_43dd, "the whole W3C trace id");
        assert!(d.remote_parent);
        assert!(d.verbose, "sampled flag");
        let d = TraceDecision::from_headers(
            &headers(&[("traceparent", tp), ("x-cocaine-tracing-policy", "0")]),
            1.0,
        )
        .unwrap();
        assert!(!d.verbose, "the policy header wins");
        let d = TraceDecision::from_headers(&headers(&[("x-cocaine-tracing-policy", "1")]), 0.0)
            .unwrap();
        assert!(d.verbose);
    }

    #[test]
    fn the_tuple_is_byte_for_byte_the_reference_encoding() {
        let mut map = headers(&[
            ("host", "api.example"),
            ("x-forwarded-for", "10.0.0.1"),
            ("cookie", "a=1"),
            ("cookie", "b=2"),
        ]);
        // Long enough for the str16 and array16 forms.
        map.append("x-long", HeaderValue::from_str(&"v".repeat(300)).unwrap());
        for i in 0..20 {
            map.append("x-many", HeaderValue::from_str(&i.to_string()).unwrap());
        }
        let body = vec![b'b'; 70_000];
        let reference = HttpRequest {
            method: Bytes::from_static(b"PUT"),
            uri: Bytes::from_static(b"/a/b?c=d"),
            version: Bytes::from_static(b"1.1"),
            headers: map
                .iter()
                .map(|(n, v)| {
                    let mut name = n.as_str().as_bytes().to_vec();
                    title_case(&mut name);
                    (Bytes::from(name), Bytes::copy_from_slice(v.as_bytes()))
                })
                .collect(),
            body: Bytes::from(body.clone()),
        }
        .to_bytes();
        let tuple = encode_tuple("PUT", "/a/b?c=d", b"1.1", &map, &body);
        assert_eq!(tuple, reference);
        assert_eq!(tuple.len(), reference.len());
        let decoded = HttpRequest::decode(&tuple).unwrap();
        assert_eq!(decoded.headers[1].0, "X-Forwarded-For");
        assert_eq!(decoded.headers.len(), 25);
    }

    #[test]
    fn packs_every_header_line_and_the_enqueue_headers() {
        let map = headers(&[
            ("host", "api.example"),
            ("authorization", "OAuth abc"),
            ("cookie", "a=1"),
            ("cookie", "b=2"),
        ]);
        let decision = TraceDecision {
            trace: TraceContext {
                trace_id: 1,
                span_id: 2,
                parent_id: 1,
            },
            trace_hi: 0,
            remote_parent: false,
            verbose: false,
        };
        let forward = [("authorization".to_owned(), "authorization".to_owned())].into();
        let packed = pack_request(
            &Method::POST,
            Version::HTTP_11,
            &map,
            "/v1/ping?x=1",
            Bytes::from_static(b"hi"),
            "http",
            &forward,
            decision,
            Duration::from_secs(30),
        );
        let tuple = HttpRequest::decode(&packed.tuple).unwrap();
        assert_eq!(tuple.method, "POST");
        assert_eq!(tuple.uri, "/v1/ping?x=1");
        assert_eq!(tuple.version, "1.1");
        assert_eq!(tuple.body, "hi");
        let names: Vec<_> = tuple
            .headers
            .iter()
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        assert_eq!(names[2], ("Cookie".into(), "a=1".into()));
        assert_eq!(names[3], ("Cookie".into(), "b=2".into()));
        assert_eq!(
            packed.headers.get(b"authorization").map(|v| &v[..]),
            Some(&b"OAuth abc"[..])
        );
        assert_eq!(packed.headers.trace(), Some(decision.trace));
        assert_eq!(
            packed.headers.request_timeout(),
            Some(Duration::from_secs(30))
        );
        assert_eq!(packed.headers.trace_bit(), None);
    }
}

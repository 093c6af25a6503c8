//! Routing: owns deciding, from a request head alone, which virtual service
//! and event a request goes to and which uri the app sees. Pure: no I/O.
//!
//! In order (configured routes, then PROTOCOL.md §5.1):
//! 1. configured routes: host and/or path prefix → service and event, with
//!    the prefix optionally stripped. The most specific match wins: host
//!    and prefix beat either alone, a longer prefix beats a shorter one, a
//!    host beats no host; among equals, the first in the file.
//! 2. `X-Cocaine-Service` + `X-Cocaine-Event` (unless `routing.by_header`
//!    is off): the uri is the full original path and query. One of them
//!    alone is a 400.
//! 3. `/<service>/<event>/<rest>` (unless `routing.by_path` is off): the
//!    uri is `<rest>` (with a leading `/`). Empty names are refused with 404.
//!
//! No match is a 404. With `routing.expose` set, rules 2 and 3 reach only
//! the listed services: any other name is answered exactly as an unknown
//! service is, so a client cannot probe what exists. Configured routes
//! always reach their own service.
//!
//! Before any of these, a path with a `.` or `..` segment (also written
//! `%2e`) is refused with 400: it is neither normalised nor passed on, so
//! no service, event or app ever sees one. The uri a rule makes is checked
//! again, as a stripped prefix or a service name read into the query can
//! leave one. So is a path with an encoded `/` or `\` (`%2f`, `%5c`, any
//! case), unless `routing.allow_encoded_slash`: an app that decodes it
//! would see a segment boundary the gateway did not, and could be walked
//! out of its path.

use hyper::header::{HeaderMap, HeaderName};

use crate::config::{RouteConfig, RoutingConfig};

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The virtual service (an app or a routing group).
    pub service: String,
    /// The event.
    pub event: String,
    /// The uri the app sees (path and query).
    pub uri: String,
}

/// Why a request has no target.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// Only one of the two routing headers was given (400).
    #[error(
        "either none or both `X-Cocaine-Service` and `X-Cocaine-Event` headers must be specified"
    )]
    OneHeader,
    /// A service or event name is empty (404).
    #[error("empty service or event name")]
    EmptyName,
    /// Nothing matched (404).
    #[error("no route for this request")]
    NoMatch,
    /// The header or path rule named a service `routing.expose` does not
    /// list: answered exactly as an unknown service (the same status, kind
    /// and message), so a client cannot tell the two apart.
    #[error("service `{0}` is not available")]
    NotExposed(String),
    /// The path has a `.` or `..` segment, plain or percent-encoded (400).
    #[error("the request path has a `.` or `..` segment")]
    DotSegment,
    /// The path has an encoded `/` or `\` (`%2f`, `%5c`, any case) and
    /// `routing.allow_encoded_slash` is off (400).
    #[error("the request path has an encoded `/` or `\\` (%2f, %5c)")]
    EncodedSlash,
}

impl RouteError {
    /// Whether the client sent a malformed request (400) rather than one
    /// nothing serves (404).
    pub fn is_bad_request(&self) -> bool {
        matches!(
            self,
            Self::OneHeader | Self::DotSegment | Self::EncodedSlash
        )
    }
}

const X_COCAINE_SERVICE: HeaderName = HeaderName::from_static("x-cocaine-service");
const X_COCAINE_EVENT: HeaderName = HeaderName::from_static("x-cocaine-event");

/// Routes a request by its path-and-query, host and headers.
pub fn route(
    path_and_query: &str,
    host: Option<&str>,
    headers: &HeaderMap,
    routes: &[RouteConfig],
    rules: &RoutingConfig,
) -> Result<Target, RouteError> {
    let path = path_and_query
        .split_once('?')
        .map_or(path_and_query, |(path, _)| path);
    if path.split('/').any(is_dot_segment) {
        return Err(RouteError::DotSegment);
    }
    if !rules.allow_encoded_slash && has_encoded_slash(path) {
        return Err(RouteError::EncodedSlash);
    }
    if let Some(target) = by_config(path_and_query, host, routes) {
        return no_dot_segment(target);
    }
    let target = if rules.by_header {
        by_header(path_and_query, headers)?
    } else {
        None
    };
    let target = match target {
        Some(target) => Some(target),
        None if rules.by_path => by_path(path_and_query)?,
        None => None,
    };
    let target = target.ok_or(RouteError::NoMatch)?;
    if let Some(expose) = &rules.expose
        && !expose.contains(&target.service)
    {
        return Err(RouteError::NotExposed(target.service));
    }
    no_dot_segment(target)
}

/// `target`, unless the uri its app sees has a dot segment where the
/// request's path had none: a stripped prefix (`/static` off
/// `/static../x`), or a service name read across the `?` (`/a?b/c/../x`).
fn no_dot_segment(target: Target) -> Result<Target, RouteError> {
    let path = target.uri.split_once('?').map_or(&*target.uri, |(p, _)| p);
    if path.split('/').any(is_dot_segment) {
        return Err(RouteError::DotSegment);
    }
    Ok(target)
}

/// `X-Cocaine-Service` + `X-Cocaine-Event`; one alone is a 400.
fn by_header(path_and_query: &str, headers: &HeaderMap) -> Result<Option<Target>, RouteError> {
    let service = headers
        .get(X_COCAINE_SERVICE)
        .map(|v| v.to_str().unwrap_or(""));
    let event = headers
        .get(X_COCAINE_EVENT)
        .map(|v| v.to_str().unwrap_or(""));
    match (service, event) {
        (Some(service), Some(event)) => {
            if service.is_empty() || event.is_empty() {
                return Err(RouteError::EmptyName);
            }
            Ok(Some(Target {
                service: service.to_owned(),
                event: event.to_owned(),
                uri: path_and_query.to_owned(),
            }))
        }
        (Some(_), None) | (None, Some(_)) => Err(RouteError::OneHeader),
        (None, None) => Ok(None),
    }
}

/// Whether a path segment is `.` or `..`, with any of its dots written
/// `%2e` or `%2E` (RFC 3986 §6.2.2.2: they are the same segment).
fn is_dot_segment(segment: &str) -> bool {
    let mut rest = segment.as_bytes();
    let mut dots = 0;
    while !rest.is_empty() {
        rest = match rest {
            [b'.', tail @ ..] => tail,
            [b'%', b'2', b'e' | b'E', tail @ ..] => tail,
            _ => return false,
        };
        dots += 1;
    }
    matches!(dots, 1 | 2)
}

/// Whether `path` has `%2f` or `%5c` (an encoded `/` or `\`), any case.
fn has_encoded_slash(path: &str) -> bool {
    path.as_bytes()
        .windows(3)
        .any(|w| matches!(w, [b'%', b'2', b'f' | b'F'] | [b'%', b'5', b'c' | b'C']))
}

/// `/([^/]*)/([^/?]*)(.*)` without a regex engine.
fn by_path(path_and_query: &str) -> Result<Option<Target>, RouteError> {
    let Some(rest) = path_and_query.strip_prefix('/') else {
        return Ok(None);
    };
    let Some((service, rest)) = rest.split_once('/') else {
        return Ok(None);
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (event, rest) = rest.split_at(end);
    if service.is_empty() || event.is_empty() {
        return Err(RouteError::EmptyName);
    }
    let uri = if rest.starts_with('/') {
        rest.to_owned()
    } else {
        format!("/{rest}")
    };
    Ok(Some(Target {
        service: service.to_owned(),
        event: event.to_owned(),
        uri,
    }))
}

/// The most specific configured route that matches (see the module docs).
fn by_config(path_and_query: &str, host: Option<&str>, routes: &[RouteConfig]) -> Option<Target> {
    if routes.is_empty() {
        return None;
    }
    let host = host.map(|h| h.split(':').next().unwrap_or(h).to_ascii_lowercase());
    let mut best: Option<(&RouteConfig, (bool, usize, bool))> = None;
    for route in routes {
        if let Some(want) = &route.host
            && host.as_deref() != Some(want.as_str())
        {
            continue;
        }
        if let Some(prefix) = &route.prefix
            && !path_and_query.starts_with(prefix.as_str())
        {
            continue;
        }
        let rank = (
            route.host.is_some() && route.prefix.is_some(),
            route.prefix.as_ref().map_or(0, String::len),
            route.host.is_some(),
        );
        if best.is_none_or(|(_, top)| rank > top) {
            best = Some((route, rank));
        }
    }
    let (route, _) = best?;
    let uri = match &route.prefix {
        Some(prefix) if route.strip_prefix => {
            let rest = path_and_query.strip_prefix(prefix.as_str()).unwrap_or("");
            if rest.starts_with('/') {
                rest.to_owned()
            } else {
                format!("/{rest}")
            }
        }
        _ => path_and_query.to_owned(),
    };
    Some(Target {
        service: route.service.clone(),
        event: route.event.clone(),
        uri,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn path(p: &str) -> Result<Target, RouteError> {
        route(p, None, &HeaderMap::new(), &[], &RoutingConfig::default())
    }

    fn target(service: &str, event: &str, uri: &str) -> Target {
        Target {
            service: service.into(),
            event: event.into(),
            uri: uri.into(),
        }
    }

    #[test]
    fn the_spec_table() {
        assert_eq!(
            path("/echo/http/a/b?x=1"),
            Ok(target("echo", "http", "/a/b?x=1"))
        );
        assert_eq!(path("/echo/http?x=1"), Ok(target("echo", "http", "/?x=1")));
        assert_eq!(path("/echo/http"), Ok(target("echo", "http", "/")));
        assert_eq!(path("/"), Err(RouteError::NoMatch));
        assert_eq!(path("/ping"), Err(RouteError::NoMatch));
        assert_eq!(path("//http/x"), Err(RouteError::EmptyName));
        assert_eq!(path("/echo//x"), Err(RouteError::EmptyName));
    }

    #[test]
    fn dot_segments_are_refused_in_any_spelling() {
        for bad in [
            "/hello/../echo/http/",
            "/hello/http/../../../config",
            "/hello/http/./x",
            "/./hello/http/",
            "/hello/http/..",
            "/hello/http/.",
            "/hello/http/%2e%2e/x",
            "/hello/http/%2E./x",
            "/hello/http/.%2e?x=1",
            "/hello/%2e/x",
        ] {
            assert_eq!(path(bad), Err(RouteError::DotSegment), "{bad}");
        }
        assert!(RouteError::DotSegment.is_bad_request());
        // Also when the headers route: the app would see the path.
        let mut h = HeaderMap::new();
        h.insert("x-cocaine-service", HeaderValue::from_static("svc"));
        h.insert("x-cocaine-event", HeaderValue::from_static("ev"));
        assert_eq!(
            route("/a/../b", None, &h, &[], &RoutingConfig::default()),
            Err(RouteError::DotSegment)
        );
    }

    #[test]
    fn encoded_slashes_are_refused_unless_allowed() {
        let mut h = HeaderMap::new();
        let routes = [prefix_route(None, Some("/files/"), "storage")];
        let refused = RoutingConfig::default();
        for bad in [
            "/echo/http/a%2fb",
            "/echo/http/a%2Fb",
            "/echo/http/..%5c..%5cetc",
            "/echo/http/%5C",
            "/echo%2fhttp/x",
            "/files/a%2f..%2f..%2fsecret",
        ] {
            assert_eq!(
                route(bad, None, &h, &routes, &refused),
                Err(RouteError::EncodedSlash),
                "{bad}"
            );
        }
        assert!(RouteError::EncodedSlash.is_bad_request());
        // Not a slash, or in the query: the app's business.
        assert_eq!(
            route(
                "/echo/http/a%2eb%25%2%2?p=a%2fb",
                None,
                &h,
                &routes,
                &refused
            ),
            Ok(target("echo", "http", "/a%2eb%25%2%2?p=a%2fb"))
        );
        // The header rule: the app sees the path too.
        h.insert("x-cocaine-service", HeaderValue::from_static("svc"));
        h.insert("x-cocaine-event", HeaderValue::from_static("ev"));
        assert_eq!(
            route("/a%2Fb", None, &h, &[], &refused),
            Err(RouteError::EncodedSlash)
        );
        let allowed = RoutingConfig {
            allow_encoded_slash: true,
            ..RoutingConfig::default()
        };
        assert_eq!(
            route("/a%2Fb", None, &h, &[], &allowed),
            Ok(target("svc", "ev", "/a%2Fb"))
        );
        assert_eq!(
            route("/files/a%2fb", None, &HeaderMap::new(), &routes, &allowed),
            Ok(target("storage", "http", "/a%2fb"))
        );
    }

    #[test]
    fn dots_that_are_not_whole_segments_are_fine() {
        assert_eq!(
            path("/echo/http/a.b/...//.x/x./%2e%2e%2e/%2ex"),
            Ok(target("echo", "http", "/a.b/...//.x/x./%2e%2e%2e/%2ex"))
        );
        // The query is not a path: dots there are the app's business.
        assert_eq!(
            path("/echo/http/?p=../../x&q=./"),
            Ok(target("echo", "http", "/?p=../../x&q=./"))
        );
    }

    #[test]
    fn headers_come_first_and_must_come_in_pairs() {
        let mut h = HeaderMap::new();
        h.insert("x-cocaine-service", HeaderValue::from_static("svc"));
        assert_eq!(
            route("/a/b/c", None, &h, &[], &RoutingConfig::default()),
            Err(RouteError::OneHeader)
        );
        assert!(RouteError::OneHeader.is_bad_request());
        h.insert("x-cocaine-event", HeaderValue::from_static("ev"));
        assert_eq!(
            route("/a/b/c?q", None, &h, &[], &RoutingConfig::default()),
            Ok(target("svc", "ev", "/a/b/c?q"))
        );
    }

    #[test]
    fn configured_routes_by_host_and_prefix() {
        let routes = [
            RouteConfig {
                host: Some("api.example".into()),
                prefix: None,
                service: "api".into(),
                event: "http".into(),
                strip_prefix: false,
            },
            RouteConfig {
                host: None,
                prefix: Some("/static".into()),
                service: "files".into(),
                event: "get".into(),
                strip_prefix: true,
            },
        ];
        let h = HeaderMap::new();
        assert_eq!(
            route(
                "/x",
                Some("API.example:8080"),
                &h,
                &routes,
                &RoutingConfig::default()
            ),
            Ok(target("api", "http", "/x"))
        );
        assert_eq!(
            route("/static?v=1", None, &h, &routes, &RoutingConfig::default()),
            Ok(target("files", "get", "/?v=1"))
        );
        assert_eq!(
            route(
                "/nope",
                Some("other"),
                &h,
                &routes,
                &RoutingConfig::default()
            ),
            Err(RouteError::NoMatch)
        );
    }

    fn prefix_route(host: Option<&str>, prefix: Option<&str>, service: &str) -> RouteConfig {
        RouteConfig {
            host: host.map(str::to_owned),
            prefix: prefix.map(str::to_owned),
            service: service.into(),
            event: "http".into(),
            strip_prefix: true,
        }
    }

    #[test]
    fn configured_routes_come_first_and_the_most_specific_wins() {
        let routes = [
            prefix_route(None, Some("/v2/"), "prefix"),
            prefix_route(Some("api.example.com"), None, "host"),
            prefix_route(Some("api.example.com"), Some("/v2/"), "both"),
            prefix_route(None, Some("/v2/users/"), "longer"),
        ];
        let h = HeaderMap::new();
        let rules = RoutingConfig::default();
        let at = |path: &str, host: Option<&str>| route(path, host, &h, &routes, &rules);
        // The shipped example: host + prefix, ahead of the path rule.
        assert_eq!(
            at("/v2/users", Some("api.example.com")),
            Ok(target("both", "http", "/users"))
        );
        // A longer prefix beats a shorter one (and a host alone).
        assert_eq!(
            at("/v2/users/7", Some("api.example.com")),
            Ok(target("both", "http", "/users/7"))
        );
        assert_eq!(at("/v2/users/7", None), Ok(target("longer", "http", "/7")));
        assert_eq!(at("/v2/x", None), Ok(target("prefix", "http", "/x")));
        assert_eq!(
            at("/a/b", Some("api.example.com")),
            Ok(target("host", "http", "/a/b"))
        );
        // Nothing configured matches: the path rule.
        assert_eq!(at("/echo/http/x", None), Ok(target("echo", "http", "/x")));
    }

    #[test]
    fn the_uri_an_app_sees_never_has_a_dot_segment() {
        // Found by the `route` fuzz target: `/static..` has no dot segment,
        // but with `/static` stripped the app would see `/..`.
        let routes = [prefix_route(None, Some("/static"), "files")];
        let h = HeaderMap::new();
        let rules = RoutingConfig::default();
        for bad in [
            "/static..",
            "/static../etc/passwd",
            "/static.?x",
            "/static%2e%2e/x",
        ] {
            assert_eq!(
                route(bad, None, &h, &routes, &rules),
                Err(RouteError::DotSegment),
                "{bad}"
            );
        }
        assert_eq!(
            route("/static.css", None, &h, &routes, &rules),
            Ok(target("files", "http", "/.css"))
        );
        // The path rule's service is `[^/]*`: it may run into the query,
        // whose rest would then become the app's path.
        assert_eq!(path("/a?b/c/../x"), Err(RouteError::DotSegment));
        assert_eq!(path("/a?b/c/x/..y"), Ok(target("a?b", "c", "/x/..y")));
    }

    #[test]
    fn the_convention_rules_can_be_switched_off() {
        let mut h = HeaderMap::new();
        h.insert("x-cocaine-service", HeaderValue::from_static("svc"));
        h.insert("x-cocaine-event", HeaderValue::from_static("ev"));
        let no_header = RoutingConfig {
            by_header: false,
            ..RoutingConfig::default()
        };
        assert_eq!(
            route("/a/b/c", None, &h, &[], &no_header),
            Ok(target("a", "b", "/c"))
        );
        let neither = RoutingConfig {
            by_header: false,
            by_path: false,
            ..RoutingConfig::default()
        };
        assert_eq!(
            route("/a/b/c", None, &h, &[], &neither),
            Err(RouteError::NoMatch)
        );
    }

    #[test]
    fn expose_limits_the_convention_rules_not_configured_routes() {
        let rules = RoutingConfig {
            expose: Some(["echo".to_owned()].into()),
            ..RoutingConfig::default()
        };
        let routes = [prefix_route(None, Some("/files/"), "storage")];
        let mut h = HeaderMap::new();
        assert_eq!(
            route("/echo/http/", None, &h, &routes, &rules),
            Ok(target("echo", "http", "/"))
        );
        assert_eq!(
            route("/node/info/", None, &h, &routes, &rules),
            Err(RouteError::NotExposed("node".into()))
        );
        assert_eq!(
            route("/files/a", None, &h, &routes, &rules),
            Ok(target("storage", "http", "/a"))
        );
        h.insert("x-cocaine-service", HeaderValue::from_static("locator"));
        h.insert("x-cocaine-event", HeaderValue::from_static("resolve"));
        assert_eq!(
            route("/echo/http/", None, &h, &routes, &rules),
            Err(RouteError::NotExposed("locator".into()))
        );
    }
}

//! Routing: owns deciding, from a request head alone, which virtual service
//! and event a request goes to and which uri the app sees. Pure: no I/O.
//!
//! In order (PROTOCOL.md §5.1, then configured routes):
//! 1. `X-Cocaine-Service` + `X-Cocaine-Event`: the uri is the full original
//!    path and query. One of them alone is a 400.
//! 2. `/<service>/<event>/<rest>`: the uri is `<rest>` (with a leading `/`).
//!    Empty names are refused with 404.
//! 3. configured routes: host and/or path prefix → service and event, with
//!    the prefix optionally stripped.
//!
//! No match is a 404.

use hyper::header::{HeaderMap, HeaderName};

use crate::config::RouteConfig;

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
}

impl RouteError {
    /// Whether the client sent a malformed request (400) rather than one
    /// nothing serves (404).
    pub fn is_bad_request(&self) -> bool {
        matches!(self, Self::OneHeader)
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
) -> Result<Target, RouteError> {
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
            return Ok(Target {
                service: service.to_owned(),
                event: event.to_owned(),
                uri: path_and_query.to_owned(),
            });
        }
        (Some(_), None) | (None, Some(_)) => return Err(RouteError::OneHeader),
        (None, None) => {}
    }
    if let Some(target) = by_path(path_and_query)? {
        return Ok(target);
    }
    by_config(path_and_query, host, routes).ok_or(RouteError::NoMatch)
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

fn by_config(path_and_query: &str, host: Option<&str>, routes: &[RouteConfig]) -> Option<Target> {
    let host = host.map(|h| h.split(':').next().unwrap_or(h).to_ascii_lowercase());
    routes.iter().find_map(|route| {
        if let Some(want) = &route.host {
            if host.as_deref() != Some(want.as_str()) {
                return None;
            }
        }
        let uri = match &route.prefix {
            Some(prefix) => {
                let rest = path_and_query.strip_prefix(prefix.as_str())?;
                if route.strip_prefix {
                    if rest.starts_with('/') {
                        rest.to_owned()
                    } else {
                        format!("/{rest}")
                    }
                } else {
                    path_and_query.to_owned()
                }
            }
            None => path_and_query.to_owned(),
        };
        Some(Target {
            service: route.service.clone(),
            event: route.event.clone(),
            uri,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn path(p: &str) -> Result<Target, RouteError> {
        route(p, None, &HeaderMap::new(), &[])
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
    fn headers_come_first_and_must_come_in_pairs() {
        let mut h = HeaderMap::new();
        h.insert("x-cocaine-service", HeaderValue::from_static("svc"));
        assert_eq!(route("/a/b/c", None, &h, &[]), Err(RouteError::OneHeader));
        assert!(RouteError::OneHeader.is_bad_request());
        h.insert("x-cocaine-event", HeaderValue::from_static("ev"));
        assert_eq!(
            route("/a/b/c?q", None, &h, &[]),
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
            route("/x", Some("API.example:8080"), &h, &routes),
            Ok(target("api", "http", "/x"))
        );
        assert_eq!(
            route("/static?v=1", None, &h, &routes),
            Ok(target("files", "get", "/?v=1"))
        );
        assert_eq!(
            route("/nope", Some("other"), &h, &routes),
            Err(RouteError::NoMatch)
        );
    }
}

//! The rollout's HTTP client: owns plain `http://` requests to the locator
//! admin API, the gateways' `/metrics` and Prometheus, one connection per
//! request (a few a second at most), each bounded by [`TIMEOUT`].

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

/// How long one request may take, connect to last byte.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// The largest response body read (a busy gateway's `/metrics` is a few
/// hundred KiB).
const MAX_BODY: usize = 32 << 20;

/// A base URL: `http://host:port[/path]`.
#[derive(Debug, Clone)]
pub struct BaseUrl {
    host: String,
    port: u16,
    path: String,
    text: String,
}

impl BaseUrl {
    /// Parses `text`; only `http://` (the admin APIs, `/metrics` and
    /// Prometheus are plain HTTP on a trusted network).
    ///
    /// # Errors
    ///
    /// One line naming the flag and the URL.
    pub fn parse(flag: &str, text: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("{flag} `{text}`: {why}");
        let uri: hyper::Uri = text.parse().map_err(|_| bad("not a URL"))?;
        if uri.scheme_str() != Some("http") {
            return Err(bad("only http:// URLs are supported"));
        }
        let host = uri.host().ok_or_else(|| bad("no host"))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let path = uri
            .path_and_query()
            .map_or("", |p| p.as_str())
            .trim_end_matches('/')
            .to_owned();
        Ok(Self {
            host,
            port: uri.port_u16().unwrap_or(80),
            path,
            text: text.trim_end_matches('/').to_owned(),
        })
    }

    /// The URL as given (without a trailing `/`).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Sends `method` to this URL's path followed by `suffix`, with an
    /// optional bearer `token` and JSON `body`; returns the status and the
    /// body.
    ///
    /// # Errors
    ///
    /// It cannot connect, the exchange fails, or it takes over [`TIMEOUT`].
    pub async fn send(
        &self,
        method: hyper::Method,
        suffix: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, Bytes), String> {
        let what = format!("{}{suffix}", self.text);
        tokio::time::timeout(TIMEOUT, self.exchange(method, suffix, token, body))
            .await
            .map_err(|_| format!("{what}: no answer within {TIMEOUT:?}"))?
            .map_err(|e| format!("{what}: {e}"))
    }

    async fn exchange(
        &self,
        method: hyper::Method,
        suffix: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, Bytes), String> {
        let stream = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        let path = format!("{}{suffix}", self.path);
        let path = if path.is_empty() {
            "/".to_owned()
        } else {
            path
        };
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, format!("{}:{}", self.host, self.port));
        if let Some(token) = token {
            request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if body.is_some() {
            request = request.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let body = http_body_util::Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, body))
    }
}

/// Percent-encodes `text` for a query string value.
pub fn query_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_escapes() {
        let url = BaseUrl::parse("--admin", "http://127.0.0.1:10054/").unwrap();
        assert_eq!(
            (url.host.as_str(), url.port, url.path.as_str()),
            ("127.0.0.1", 10054, "")
        );
        let url = BaseUrl::parse("--metrics", "http://[::1]:9090/metrics").unwrap();
        assert_eq!((url.host.as_str(), url.path.as_str()), ("::1", "/metrics"));
        assert!(BaseUrl::parse("--admin", "https://x:1").is_err());
        assert!(BaseUrl::parse("--admin", "not a url").is_err());
        assert_eq!(
            query_escape("sum by (a) (x{s=\"c\"})"),
            "sum%20by%20%28a%29%20%28x%7Bs%3D%22c%22%7D%29"
        );
    }
}

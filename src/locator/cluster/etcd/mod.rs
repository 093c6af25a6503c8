//! A small etcd v3 client over etcd's JSON gateway (grpc-gateway, `/v3/...`):
//! owns the HTTP/1.1 requests for kv put / range / delete, leases and the
//! watch stream, and the base64 of keys and values; TLS to `https://`
//! endpoints (a CA to check etcd's certificate, a client certificate for
//! etcd's `--client-cert-auth`) and etcd's own auth (a user and password
//! traded for a token, sent with every call and traded again when etcd
//! says it is no longer valid). It knows nothing of the locator;
//! [`super::store`] does.
//!
//! Every unary call opens a fresh connection to the first endpoint that
//! answers (etcd is local or on a LAN, the calls are rare: a publish, a
//! weight change, a keepalive every TTL/3), so there is no pool to manage.
//! The watch keeps its own connection open and streams JSON objects. No
//! task is spawned: whoever reads a response drives its connection.

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde::Deserialize;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::locator::config::EtcdSecurity;

mod connect;
mod error;
mod watch;
mod wire;
use self::connect::*;
pub use self::error::*;
pub use self::watch::*;
pub use self::wire::*;

/// How long a unary call may take, connect included.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// The largest watch message buffered while incomplete; etcd's own limit on
/// a request is 1.5 MiB, and a watch response batches a few of them.
const MAX_WATCH_MESSAGE: usize = 16 << 20;

/// The largest unary response read.
const MAX_RESPONSE: usize = 64 << 20;

/// One key and its value, decoded from base64.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value bytes.
    pub value: Vec<u8>,
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// The key was created or changed.
    Put(KeyValue),
    /// The key was deleted (or its lease ended).
    Delete(String),
}

/// An etcd client over its JSON gateway.
#[derive(Debug, Clone)]
pub struct EtcdClient {
    /// Tried in order.
    endpoints: Vec<Endpoint>,
    /// For `https://` endpoints.
    tls: Option<Arc<rustls::ClientConfig>>,
    /// Whether `tls` offers a client certificate.
    client_cert: bool,
    /// etcd's auth, when a user is configured.
    auth: Option<Arc<Auth>>,
}

/// One etcd endpoint.
#[derive(Debug, Clone)]
struct Endpoint {
    /// `host:port`, to connect to and for the `Host` header.
    authority: String,
    /// The name etcd's certificate must hold, for `https://`; `None` for
    /// `http://`.
    tls_name: Option<ServerName<'static>>,
}

/// A user, its password and the current token.
struct Auth {
    user: String,
    password: String,
    /// The token etcd gave for them; `None` before the first call and
    /// after etcd rejected it. Held across an authenticate call, so that
    /// concurrent calls wait for one token rather than each asking.
    token: tokio::sync::Mutex<Option<Arc<str>>>,
    /// Authenticate calls that succeeded.
    authentications: AtomicU64,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password or the token.
        f.debug_struct("Auth")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl EtcdClient {
    /// A client for `urls` (`http://host:port`), without TLS or auth.
    pub fn new(urls: &[String]) -> Result<Self, String> {
        Self::with_security(urls, &EtcdSecurity::default()).map_err(|e| e.reason)
    }

    /// A client for `urls` (`http://` or `https://host:port`) with TLS and
    /// auth as `security` says. Reads the CA, the client certificate and
    /// key and the password now. Refuses: `https://` without a CA file, a
    /// TLS file with an `http://` endpoint (TLS would not be used), a
    /// certificate without its key, a user without a password file or the
    /// reverse, a password file readable by every user, and credentials
    /// sent in clear (a user with an `http://` endpoint off loopback).
    pub fn with_security(urls: &[String], security: &EtcdSecurity) -> Result<Self, EtcdSetupError> {
        let endpoints = urls
            .iter()
            .map(|url| endpoint(url))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| setup_error("etcd", e))?;
        if endpoints.is_empty() {
            return Err(setup_error("etcd", "at least one etcd endpoint is needed"));
        }
        let plain = urls
            .iter()
            .zip(&endpoints)
            .find(|(_, e)| e.tls_name.is_none())
            .map(|(url, _)| url);
        let secure = urls
            .iter()
            .zip(&endpoints)
            .find(|(_, e)| e.tls_name.is_some())
            .map(|(url, _)| url);
        let tls = match (&security.ca_file, secure) {
            (None, Some(url)) => {
                return Err(setup_error(
                    "etcd_ca_file",
                    format!(
                        "`{url}` is https://: set etcd_ca_file to the CA that signed etcd's certificate"
                    ),
                ));
            }
            (Some(_), None) => {
                return Err(setup_error(
                    "etcd_ca_file",
                    "is set but every etcd endpoint is http://: use https:// endpoints",
                ));
            }
            (Some(ca), Some(_)) => {
                if let Some(url) = plain {
                    return Err(setup_error(
                        "etcd",
                        format!(
                            "`{url}` is http:// beside https:// endpoints: TLS would not be used with it"
                        ),
                    ));
                }
                Some(Arc::new(client_tls(ca, security)?))
            }
            (None, None) => None,
        };
        if tls.is_none() && (security.cert_file.is_some() || security.key_file.is_some()) {
            let key = if security.cert_file.is_some() {
                "etcd_cert_file"
            } else {
                "etcd_key_file"
            };
            return Err(setup_error(
                key,
                "needs https:// endpoints and etcd_ca_file",
            ));
        }
        let auth = match (&security.user, &security.password_file) {
            (None, None) => None,
            (Some(_), None) => {
                return Err(setup_error(
                    "etcd_password_file",
                    "etcd_user is set: the password file is needed too",
                ));
            }
            (None, Some(_)) => {
                return Err(setup_error(
                    "etcd_user",
                    "etcd_password_file is set: the user is needed too",
                ));
            }
            (Some(user), Some(file)) => {
                if user.is_empty() {
                    return Err(setup_error("etcd_user", "must not be empty"));
                }
                if let Some(url) = urls
                    .iter()
                    .zip(&endpoints)
                    .find(|(_, e)| e.tls_name.is_none() && !is_loopback(&e.authority))
                    .map(|(url, _)| url)
                {
                    return Err(setup_error(
                        "etcd_user",
                        format!(
                            "the password and token would cross the network in clear to `{url}`: \
                             use https:// (or an http:// endpoint on loopback)"
                        ),
                    ));
                }
                let password =
                    read_secret(file).map_err(|e| setup_error("etcd_password_file", e))?;
                Some(Arc::new(Auth {
                    user: user.clone(),
                    password,
                    token: tokio::sync::Mutex::new(None),
                    authentications: AtomicU64::new(0),
                }))
            }
        };
        Ok(Self {
            endpoints,
            tls,
            client_cert: security.cert_file.is_some(),
            auth,
        })
    }

    /// How many times this client (and its clones) got a token from etcd:
    /// the first call, then once each time etcd rejected the token.
    pub fn authentications(&self) -> u64 {
        self.auth
            .as_ref()
            .map_or(0, |auth| auth.authentications.load(Ordering::Relaxed))
    }

    /// One read of `prefix` (a count only): checks, before serving, that
    /// etcd is reachable, trusted, trusts us, takes our credentials and
    /// lets us read the prefix.
    pub async fn check(&self, prefix: &str) -> Result<(), EtcdError> {
        let body = json!({
            "key": b64(prefix.as_bytes()),
            "range_end": b64(&prefix_end(prefix.as_bytes())),
            "count_only": true,
        });
        self.call("/v3/kv/range", &body).await.map(drop)
    }

    /// Posts `body` to a `/v3/...` path of the JSON gateway, with the auth
    /// token, and returns the JSON answer: the calls this client has no
    /// method for (user and role management, `auth/enable`).
    pub async fn post(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, EtcdError> {
        self.call(path, body).await
    }

    /// Writes `key = value`, attached to `lease` when not 0.
    pub async fn put(&self, key: &str, value: &[u8], lease: i64) -> Result<(), EtcdError> {
        let mut body = json!({"key": b64(key.as_bytes()), "value": b64(value)});
        if lease != 0 {
            body["lease"] = json!(lease.to_string());
        }
        self.call("/v3/kv/put", &body).await.map(drop)
    }

    /// Deletes `key`; whether it existed.
    pub async fn delete(&self, key: &str) -> Result<bool, EtcdError> {
        let reply = self
            .call("/v3/kv/deleterange", &json!({"key": b64(key.as_bytes())}))
            .await?;
        Ok(int(&reply["deleted"]).unwrap_or(0) > 0)
    }

    /// Every key under `prefix` and the store's revision of that read.
    pub async fn range_prefix(&self, prefix: &str) -> Result<(i64, Vec<KeyValue>), EtcdError> {
        let body = json!({
            "key": b64(prefix.as_bytes()),
            "range_end": b64(&prefix_end(prefix.as_bytes())),
        });
        let reply = self.call("/v3/kv/range", &body).await?;
        range_reply(&reply)
    }

    /// Grants a lease of `ttl` (rounded up to whole seconds); its id.
    pub async fn grant(&self, ttl: Duration) -> Result<i64, EtcdError> {
        let seconds = ttl.as_millis().div_ceil(1000).max(1);
        let reply = self
            .call("/v3/lease/grant", &json!({"TTL": seconds.to_string()}))
            .await?;
        match int(&reply["ID"]) {
            Some(id) if id != 0 => Ok(id),
            _ => Err(EtcdError::Refused(format!("lease grant: {reply}"))),
        }
    }

    /// Renews a lease once; an error if it has already expired.
    pub async fn keep_alive(&self, lease: i64) -> Result<(), EtcdError> {
        let reply = self
            .call("/v3/lease/keepalive", &json!({"ID": lease.to_string()}))
            .await?;
        // A streaming endpoint: the reply is `{"result": {...}}`, and a
        // lease that is gone answers with TTL 0 (omitted as a default).
        let ttl = int(&reply["result"]["TTL"]).unwrap_or(0);
        if ttl <= 0 {
            return Err(EtcdError::Refused(format!("lease {lease:x} has expired")));
        }
        Ok(())
    }

    /// Revokes a lease: every key attached to it is deleted.
    pub async fn revoke(&self, lease: i64) -> Result<(), EtcdError> {
        self.call("/v3/lease/revoke", &json!({"ID": lease.to_string()}))
            .await
            .map(drop)
    }

    /// Whether etcd answers a read (used to wait for readiness).
    pub async fn is_healthy(&self) -> bool {
        self.range_prefix("/health-probe").await.is_ok()
    }

    /// Opens a watch on every key under `prefix`, from `start_revision`.
    pub async fn watch(&self, prefix: &str, start_revision: i64) -> Result<Watch, EtcdError> {
        let body = json!({"create_request": {
            "key": b64(prefix.as_bytes()),
            "range_end": b64(&prefix_end(prefix.as_bytes())),
            "start_revision": start_revision.to_string(),
        }});
        let body = &body;
        self.authorized(move |token| async move {
            // The stream's head comes with the "created" answer, at once;
            // a watch that etcd refuses (a rejected token, no rights) is
            // cancelled in that answer, so it is read here.
            let open = async {
                let mut watch = self.request("/v3/watch", body, token.as_deref()).await?;
                watch.next().await?;
                Ok(watch)
            };
            tokio::time::timeout(CALL_TIMEOUT, open)
                .await
                .map_err(|_| EtcdError::Unreachable("/v3/watch: no answer within 3 s".into()))?
        })
        .await
    }

    async fn call(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, EtcdError> {
        self.authorized(move |token| self.call_once(path, body, token))
            .await
    }

    async fn call_once(
        &self,
        path: &str,
        body: &serde_json::Value,
        token: Option<Arc<str>>,
    ) -> Result<serde_json::Value, EtcdError> {
        let read = async {
            // Streaming endpoints (keepalive) send one JSON object and may
            // keep the stream open: read until one complete object.
            let mut stream = self.request(path, body, token.as_deref()).await?;
            stream.next_object(MAX_RESPONSE).await
        };
        tokio::time::timeout(CALL_TIMEOUT, read)
            .await
            .map_err(|_| EtcdError::Unreachable(format!("{path}: no answer within 3 s")))?
    }

    /// Runs `attempt` with the auth token (none without auth). When etcd
    /// rejects the token (expired, or revoked by a password change or an
    /// auth disable/enable), authenticates again and runs it once more.
    async fn authorized<T, F, Fut>(&self, mut attempt: F) -> Result<T, EtcdError>
    where
        F: FnMut(Option<Arc<str>>) -> Fut,
        Fut: Future<Output = Result<T, EtcdError>>,
    {
        let Some(auth) = &self.auth else {
            return attempt(None).await;
        };
        let token = self.token(auth).await?;
        match attempt(Some(Arc::clone(&token))).await {
            Err(EtcdError::TokenRejected(reason)) => {
                tracing::debug!(%reason, "etcd rejected the auth token; authenticating again");
                {
                    let mut slot = auth.token.lock().await;
                    // Another call may have renewed it meanwhile.
                    if slot.as_deref() == Some(&*token) {
                        *slot = None;
                    }
                }
                let token = self.token(auth).await?;
                attempt(Some(token)).await
            }
            other => other,
        }
    }

    /// The current token, authenticating first when there is none.
    async fn token(&self, auth: &Auth) -> Result<Arc<str>, EtcdError> {
        let mut slot = auth.token.lock().await;
        if let Some(token) = slot.as_ref() {
            return Ok(Arc::clone(token));
        }
        let body = json!({"name": auth.user, "password": auth.password});
        let authenticate = async {
            let mut stream = self.request("/v3/auth/authenticate", &body, None).await?;
            stream.next_object(MAX_RESPONSE).await
        };
        let reply = tokio::time::timeout(CALL_TIMEOUT, authenticate)
            .await
            .map_err(|_| {
                EtcdError::Unreachable("/v3/auth/authenticate: no answer within 3 s".into())
            })?
            .map_err(|e| match e {
                EtcdError::Unreachable(_) | EtcdError::Tls(_) => e,
                EtcdError::Refused(reason)
                | EtcdError::Auth(reason)
                | EtcdError::TokenRejected(reason) => {
                    EtcdError::Auth(format!("authenticating as `{}`: {reason}", auth.user))
                }
            })?;
        let token: Arc<str> = match reply["token"].as_str() {
            Some(token) if !token.is_empty() => token.into(),
            _ => {
                return Err(EtcdError::Auth(format!(
                    "authenticating as `{}`: etcd answered without a token",
                    auth.user
                )));
            }
        };
        auth.authentications.fetch_add(1, Ordering::Relaxed);
        *slot = Some(Arc::clone(&token));
        Ok(token)
    }

    /// Connects to `endpoint`: TCP, then TLS for `https://`. Without a
    /// client certificate, the second value says whether etcd asked for
    /// one: in TLS 1.3 the client's handshake ends before the server has
    /// checked it, so a refusal comes later, as an alert or a closed
    /// connection, and that flag is what tells it from an outage.
    async fn connect(
        &self,
        endpoint: &Endpoint,
    ) -> Result<(Box<dyn IoStream>, Option<Arc<CertificateAsked>>), EtcdError> {
        let authority = &endpoint.authority;
        let stream = match tokio::time::timeout(CALL_TIMEOUT, TcpStream::connect(authority)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(EtcdError::Unreachable(format!("{authority}: {e}"))),
            Err(_) => {
                return Err(EtcdError::Unreachable(format!(
                    "{authority}: connect timed out"
                )));
            }
        };
        let _ = stream.set_nodelay(true);
        let (Some(name), Some(config)) = (&endpoint.tls_name, &self.tls) else {
            return Ok((Box::new(stream), None));
        };
        let (config, asked) = if self.client_cert {
            (Arc::clone(config), None)
        } else {
            let asked = Arc::new(CertificateAsked::default());
            let mut config = rustls::ClientConfig::clone(config);
            config.client_auth_cert_resolver = Arc::clone(&asked) as _;
            (Arc::new(config), Some(asked))
        };
        let connector = tokio_rustls::TlsConnector::from(config);
        match tokio::time::timeout(CALL_TIMEOUT, connector.connect(name.clone(), stream)).await {
            Ok(Ok(stream)) => Ok((Box::new(stream), asked)),
            Ok(Err(e)) => Err(transport_error(authority, &e)),
            Err(_) => Err(EtcdError::Unreachable(format!(
                "{authority}: TLS handshake timed out"
            ))),
        }
    }

    /// Posts `body` to the first endpoint that accepts a connection and
    /// returns the response stream once the status is 200. The connection
    /// is driven by the returned [`Watch`] (no task of its own) and closes
    /// when it is dropped.
    async fn request(
        &self,
        path: &str,
        body: &serde_json::Value,
        token: Option<&str>,
    ) -> Result<Watch, EtcdError> {
        let payload = Bytes::from(body.to_string());
        let mut last = EtcdError::Unreachable("no endpoint".into());
        for endpoint in &self.endpoints {
            let (stream, asked) = match self.connect(endpoint).await {
                Ok(connected) => connected,
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            let authority = endpoint.authority.as_str();
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(|e| EtcdError::Unreachable(format!("{authority}: {e}")))?;
            let mut connection = Box::pin(connection);
            let mut request = Request::post(path)
                .header(hyper::header::HOST, authority)
                .header(hyper::header::CONTENT_TYPE, "application/json");
            if let Some(token) = token {
                // The JSON gateway takes the bare token (no "Bearer").
                request = request.header(hyper::header::AUTHORIZATION, token);
            }
            let request = request
                .body(Full::new(payload.clone()))
                .map_err(|e| EtcdError::Refused(format!("{path}: {e}")))?;
            let sent = tokio::select! {
                sent = sender.send_request(request) => sent.map_err(|e| transport_error(authority, &e)),
                ended = &mut connection => Err(match ended {
                    Ok(()) => EtcdError::Unreachable(format!("{authority}: connection closed before the response")),
                    Err(e) => transport_error(authority, &e),
                }),
            };
            let response = match sent {
                Ok(response) => response,
                Err(EtcdError::Unreachable(e)) if asked.as_ref().is_some_and(|a| a.asked()) => {
                    last = EtcdError::Tls(format!(
                        "{e} (etcd asked for a client certificate and none is configured: \
                         set etcd_cert_file and etcd_key_file)"
                    ));
                    continue;
                }
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            let status = response.status();
            let mut stream = Watch {
                body: response.into_body(),
                connection: Some(connection),
                buf: BytesMut::new(),
                pending: Vec::new(),
            };
            if !status.is_success() {
                let text = match stream.read_to_end(4096).await {
                    Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                    Err(e) => e.to_string(),
                };
                return Err(match serde_json::from_str::<serde_json::Value>(&text) {
                    Ok(object) if object.get("error").is_some() => classify(&object),
                    _ => classify_text(&format!("{path}: {status}: {}", text.trim()), None),
                });
            }
            return Ok(stream);
        }
        Err(last)
    }
}

/// One HTTP/1.1 client connection to etcd.
type Connection = hyper::client::conn::http1::Connection<TokioIo<Box<dyn IoStream>>, Full<Bytes>>;

#[cfg(test)]
mod tests;

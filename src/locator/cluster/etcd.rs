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

/// How long a unary call may take, connect included.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// The largest watch message buffered while incomplete; etcd's own limit on
/// a request is 1.5 MiB, and a watch response batches a few of them.
const MAX_WATCH_MESSAGE: usize = 16 << 20;

/// The largest unary response read.
const MAX_RESPONSE: usize = 64 << 20;

/// Why an etcd call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EtcdError {
    /// No endpoint could be reached, or the connection broke.
    #[error("etcd unreachable: {0}")]
    Unreachable(String),
    /// etcd answered with an error status or a body we do not understand.
    #[error("etcd refused the call: {0}")]
    Refused(String),
    /// The TLS handshake with etcd failed: its certificate is not trusted
    /// (`etcd_ca_file`), or it refused ours (`etcd_cert_file`).
    #[error("etcd TLS failed: {0}")]
    Tls(String),
    /// etcd refused our credentials or their rights: a bad password, no
    /// user while etcd has auth enabled, or no permission on the prefix.
    #[error("etcd auth failed: {0}")]
    Auth(String),
    /// etcd did not accept the auth token (expired or revoked); the client
    /// authenticates again and retries once before returning this.
    #[error("etcd rejected the auth token: {0}")]
    TokenRejected(String),
}

impl EtcdError {
    /// Whether this is a setting that retrying will not fix (TLS trust,
    /// client certificate, credentials), as opposed to etcd being away.
    pub fn is_misconfiguration(&self) -> bool {
        matches!(self, Self::Tls(_) | Self::Auth(_) | Self::TokenRejected(_))
    }
}

/// A client setting that was refused: the `[cluster]` key and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cluster.{key}: {reason}")]
pub struct EtcdSetupError {
    /// The key under `[cluster]` (`etcd`, `etcd_ca_file`, ...).
    pub key: &'static str,
    /// Why.
    pub reason: String,
}

fn setup_error(key: &'static str, reason: impl Into<String>) -> EtcdSetupError {
    EtcdSetupError {
        key,
        reason: reason.into(),
    }
}

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

/// The client-certificate resolver of a connection that has no
/// certificate to offer: notes that the server asked for one.
#[derive(Debug, Default)]
struct CertificateAsked(std::sync::atomic::AtomicBool);

impl CertificateAsked {
    fn asked(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

impl rustls::client::ResolvesClientCert for CertificateAsked {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.0.store(true, Ordering::Relaxed);
        None
    }

    fn has_certs(&self) -> bool {
        false
    }
}

/// What the connection to etcd is: TCP, or TLS over it.
trait IoStream: AsyncRead + AsyncWrite + Send + Unpin + std::fmt::Debug {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + std::fmt::Debug> IoStream for T {}

/// A watch stream: decoded events, batch by batch.
#[derive(Debug)]
pub struct Watch {
    body: Incoming,
    /// The HTTP/1.1 connection, polled beside the body; `None` once it
    /// has ended (what it had received is still in the body).
    connection: Option<Pin<Box<Connection>>>,
    buf: BytesMut,
    pending: Vec<serde_json::Value>,
}

impl Watch {
    /// The next batch of events and the store revision they bring the view
    /// to (the first answer, "created", is an empty batch). An error when the stream ends or etcd cancels the watch
    /// (for instance because the start revision was compacted).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: bytes read are kept in the buffer.
    pub async fn next(&mut self) -> Result<(i64, Vec<WatchEvent>), EtcdError> {
        let object = self.next_object(MAX_WATCH_MESSAGE).await?;
        watch_batch(&object)
    }

    /// Reads until one whole JSON object is buffered; objects may be split
    /// across chunks or share one.
    async fn next_object(&mut self, limit: usize) -> Result<serde_json::Value, EtcdError> {
        loop {
            if !self.pending.is_empty() {
                let object = self.pending.remove(0);
                if object.get("error").is_some() {
                    return Err(classify(&object));
                }
                return Ok(object);
            }
            take_objects(&mut self.buf, &mut self.pending)?;
            if !self.pending.is_empty() {
                continue;
            }
            if self.buf.len() > limit {
                return Err(EtcdError::Refused(format!(
                    "a message from etcd is larger than {limit} bytes"
                )));
            }
            match self.next_frame().await? {
                Some(data) => self.buf.extend_from_slice(&data),
                None => return Err(EtcdError::Unreachable("etcd closed the stream".into())),
            }
        }
    }

    /// The next data of the body, driving the connection meanwhile;
    /// `None` at the end of the body.
    async fn next_frame(&mut self) -> Result<Option<Bytes>, EtcdError> {
        loop {
            let frame = match self.connection.as_mut() {
                Some(connection) => tokio::select! {
                    biased;
                    frame = self.body.frame() => Some(frame),
                    ended = connection => {
                        if let Err(e) = ended {
                            return Err(EtcdError::Unreachable(e.to_string()));
                        }
                        None
                    }
                },
                None => Some(self.body.frame().await),
            };
            match frame {
                // The connection ended cleanly: read what the body holds.
                None => self.connection = None,
                Some(None) => return Ok(None),
                Some(Some(Err(e))) => return Err(EtcdError::Unreachable(e.to_string())),
                Some(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        return Ok(Some(data));
                    }
                }
            }
        }
    }

    /// Reads the body to its end, at most `limit` bytes kept.
    async fn read_to_end(&mut self, limit: usize) -> Result<Vec<u8>, EtcdError> {
        let mut out = Vec::new();
        while let Some(data) = self.next_frame().await? {
            let room = limit.saturating_sub(out.len());
            out.extend_from_slice(&data[..data.len().min(room)]);
        }
        Ok(out)
    }
}

/// One HTTP/1.1 client connection to etcd.
type Connection = hyper::client::conn::http1::Connection<TokioIo<Box<dyn IoStream>>, Full<Bytes>>;

#[derive(Debug, Deserialize)]
struct RawKv {
    key: String,
    #[serde(default)]
    value: String,
}

impl RawKv {
    fn decode(self) -> Result<KeyValue, EtcdError> {
        let bad = |what: &str| EtcdError::Refused(format!("{what} is not base64"));
        let key = unb64(&self.key).ok_or_else(|| bad("a key"))?;
        let key = String::from_utf8(key).map_err(|_| bad("a key (UTF-8)"))?;
        let value = unb64(&self.value).ok_or_else(|| bad("a value"))?;
        Ok(KeyValue { key, value })
    }
}

#[derive(Debug, Deserialize)]
struct RawEvent {
    #[serde(rename = "type")]
    kind: Option<String>,
    kv: RawKv,
}

/// Moves every whole JSON value at the front of `buf` to `pending`; an
/// incomplete one stays in `buf` for more bytes.
pub(crate) fn take_objects(
    buf: &mut BytesMut,
    pending: &mut Vec<serde_json::Value>,
) -> Result<(), EtcdError> {
    let mut stream = serde_json::Deserializer::from_slice(buf).into_iter::<serde_json::Value>();
    let mut consumed = 0;
    loop {
        match stream.next() {
            Some(Ok(value)) => {
                consumed = stream.byte_offset();
                pending.push(value);
            }
            Some(Err(e)) if e.is_eof() => break,
            Some(Err(e)) => {
                return Err(EtcdError::Refused(format!("bad JSON from etcd: {e}")));
            }
            None => {
                consumed = stream.byte_offset();
                break;
            }
        }
    }
    buf.advance(consumed);
    Ok(())
}

/// A range reply's revision and key-values.
pub(crate) fn range_reply(reply: &serde_json::Value) -> Result<(i64, Vec<KeyValue>), EtcdError> {
    let revision = int(&reply["header"]["revision"])
        .ok_or_else(|| EtcdError::Refused("a range reply without a revision".into()))?;
    let kvs = match reply.get("kvs") {
        None => Vec::new(),
        Some(kvs) => serde_json::from_value::<Vec<RawKv>>(kvs.clone())
            .map_err(|e| EtcdError::Refused(format!("range reply: {e}")))?
            .into_iter()
            .map(RawKv::decode)
            .collect::<Result<_, _>>()?,
    };
    Ok((revision, kvs))
}

/// A watch message's revision and events (see [`Watch::next`]).
pub(crate) fn watch_batch(object: &serde_json::Value) -> Result<(i64, Vec<WatchEvent>), EtcdError> {
    let result = &object["result"];
    let revision = int(&result["header"]["revision"]).unwrap_or(0);
    if result["canceled"].as_bool() == Some(true) {
        // A refused token or right comes as a reason in words
        // ("rpc error: code = Unauthenticated desc = ...").
        let reason = result["cancel_reason"]
            .as_str()
            .unwrap_or("no reason given");
        return Err(classify_text(&format!("watch canceled: {reason}"), None));
    }
    let Some(events) = result.get("events") else {
        return Ok((revision, Vec::new()));
    };
    let events: Vec<RawEvent> = serde_json::from_value(events.clone())
        .map_err(|e| EtcdError::Refused(format!("watch event: {e}")))?;
    let events = events
        .into_iter()
        .map(|event| {
            let kv = event.kv.decode()?;
            Ok(match event.kind.as_deref() {
                Some("DELETE") => WatchEvent::Delete(kv.key),
                _ => WatchEvent::Put(kv),
            })
        })
        .collect::<Result<_, EtcdError>>()?;
    Ok((revision, events))
}

/// An int64 as grpc-gateway writes it: a string, or a number.
fn int(value: &serde_json::Value) -> Option<i64> {
    match value {
        serde_json::Value::String(s) => s.parse().ok(),
        serde_json::Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

/// `http://host:port` or `https://host:port` → the endpoint (port 2379
/// when none is given).
fn endpoint(url: &str) -> Result<Endpoint, String> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| format!("`{url}` is not a URL: {e}"))?;
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err(format!("`{url}`: an etcd endpoint is http:// or https://")),
    };
    let authority = uri
        .authority()
        .ok_or_else(|| format!("`{url}` has no host"))?;
    let host = authority.host();
    let tls_name = if tls {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(bare.to_owned())
            .map_err(|e| format!("`{url}`: `{bare}` is not a name for TLS: {e}"))?;
        Some(name)
    } else {
        None
    };
    let authority = match authority.port_u16() {
        Some(_) => authority.to_string(),
        None => format!("{host}:2379"),
    };
    Ok(Endpoint {
        authority,
        tls_name,
    })
}

/// Whether `host:port` names this machine (`localhost`, 127.0.0.0/8, ::1).
fn is_loopback(authority: &str) -> bool {
    let host = authority
        .rsplit_once(':')
        .map_or(authority, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Reads a password file (see [`crate::secret_file`]); one trailing
/// newline is not part of the password.
fn read_secret(path: &Path) -> Result<String, String> {
    let content = crate::secret_file::read(path).map_err(|e| e.to_string())?;
    let text = String::from_utf8(content)
        .map_err(|_| format!("`{}` is not UTF-8 text", path.display()))?;
    let password = text.strip_suffix('\n').unwrap_or(&text);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        return Err(format!("`{}` is empty", path.display()));
    }
    Ok(password.to_owned())
}

/// The rustls client config: etcd's certificate must chain to `ca`; our
/// certificate is offered when `security` has one. TLS 1.2 and 1.3,
/// ALPN http/1.1 (this client speaks HTTP/1.1).
fn client_tls(ca: &Path, security: &EtcdSecurity) -> Result<rustls::ClientConfig, EtcdSetupError> {
    let read = |key: &'static str, path: &Path| {
        std::fs::read(path).map_err(|e| setup_error(key, format!("`{}`: {e}", path.display())))
    };
    let certs = |key: &'static str, path: &Path| {
        let chain = CertificateDer::pem_slice_iter(&read(key, path)?)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| setup_error(key, format!("`{}`: bad PEM: {e}", path.display())))?;
        if chain.is_empty() {
            return Err(setup_error(
                key,
                format!("`{}`: no certificate in the file", path.display()),
            ));
        }
        Ok(chain)
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs("etcd_ca_file", ca)? {
        roots.add(cert).map_err(|e| {
            setup_error(
                "etcd_ca_file",
                format!("`{}`: not a CA certificate: {e}", ca.display()),
            )
        })?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| setup_error("etcd_ca_file", e.to_string()))?
        .with_root_certificates(roots);
    let mut config = match (&security.cert_file, &security.key_file) {
        (None, None) => builder.with_no_client_auth(),
        (Some(cert), Some(key)) => {
            let chain = certs("etcd_cert_file", cert)?;
            let private =
                PrivateKeyDer::from_pem_slice(&read("etcd_key_file", key)?).map_err(|e| {
                    setup_error(
                        "etcd_key_file",
                        format!("`{}`: no usable private key: {e}", key.display()),
                    )
                })?;
            builder.with_client_auth_cert(chain, private).map_err(|e| {
                setup_error(
                    "etcd_key_file",
                    format!(
                        "`{}` does not go with `{}`: {e}",
                        key.display(),
                        cert.display()
                    ),
                )
            })?
        }
        (Some(_), None) => {
            return Err(setup_error(
                "etcd_key_file",
                "etcd_cert_file is set: its key is needed too",
            ));
        }
        (None, Some(_)) => {
            return Err(setup_error(
                "etcd_cert_file",
                "etcd_key_file is set: the certificate is needed too",
            ));
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A failed connection or exchange: a TLS error when rustls is in the
/// chain of causes (an untrusted etcd certificate, or etcd's alert when it
/// refused ours), else etcd is unreachable.
fn transport_error(authority: &str, error: &(dyn std::error::Error + 'static)) -> EtcdError {
    let mut next = Some(error);
    while let Some(e) = next {
        let tls = e.downcast_ref::<rustls::Error>().or_else(|| {
            e.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if let Some(tls) = tls {
            let hint = match tls {
                rustls::Error::InvalidCertificate(_) => {
                    " (is etcd_ca_file the CA that signed etcd's certificate, for this host name?)"
                }
                rustls::Error::AlertReceived(_) => {
                    " (etcd refused the handshake: does it want a client certificate, \
                     etcd_cert_file and etcd_key_file, signed by a CA it trusts?)"
                }
                _ => "",
            };
            return EtcdError::Tls(format!("{authority}: {tls}{hint}"));
        }
        next = e.source();
    }
    EtcdError::Unreachable(format!("{authority}: {error}"))
}

/// An `{"error", "message", "code"}` answer of the JSON gateway.
fn classify(object: &serde_json::Value) -> EtcdError {
    let message = object["message"]
        .as_str()
        .or_else(|| object["error"].as_str())
        .map_or_else(|| object["error"].to_string(), str::to_owned);
    classify_text(&message, int(&object["code"]))
}

/// Sorts an error message of etcd (with its gRPC code when known) into
/// what the caller can act on, with a hint for the settings involved.
fn classify_text(message: &str, code: Option<i64>) -> EtcdError {
    if code == Some(16) || message.contains("invalid auth token") {
        EtcdError::TokenRejected(message.to_owned())
    } else if message.contains("user name is empty") {
        EtcdError::Auth(format!(
            "{message} (etcd has auth enabled: set etcd_user and etcd_password_file)"
        ))
    } else if message.contains("permission denied") {
        EtcdError::Auth(format!(
            "{message} (with etcd's auth enabled, set etcd_user and etcd_password_file; \
             the user needs read-write permission on the cluster prefix)"
        ))
    } else if message.contains("authentication is not enabled") {
        EtcdError::Auth(format!(
            "{message} (etcd_user is set but etcd has auth disabled: enable it, or remove etcd_user)"
        ))
    } else if message.contains("authentication failed") {
        EtcdError::Auth(message.to_owned())
    } else if message.contains("CommonName of client") {
        EtcdError::Tls(format!(
            "{message} (with auth enabled, etcd's JSON gateway refuses a client certificate \
             that has a Common Name: issue etcd_cert_file without one)"
        ))
    } else {
        EtcdError::Refused(message.to_owned())
    }
}

/// The end of the range of every key starting with `prefix`: the prefix
/// with its last byte below 0xff incremented (etcd's `GetPrefixRangeEnd`).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte 0xff (or empty): the whole keyspace, `\0`.
    vec![0]
}

// Base64 (RFC 4648, standard alphabet, padded) for the JSON gateway's
// bytes fields. Forty lines here rather than a dependency: this is its
// only use, and the encoding is fixed.

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Encodes bytes as padded standard base64.
pub fn b64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes padded (or unpadded) standard base64; `None` if it is not.
pub fn unb64(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut n = 0u32;
    let mut bits = 0;
    for c in text.bytes() {
        let v = ALPHABET.iter().position(|a| *a == c)? as u32;
        n = n << 6 | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((n >> bits & 0xff) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for (raw, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("/rpcgate/groups/canary", "L3JwY2dhdGUvZ3JvdXBzL2NhbmFyeQ=="),
        ] {
            assert_eq!(b64(raw.as_bytes()), encoded);
            assert_eq!(unb64(encoded).unwrap(), raw.as_bytes());
        }
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(unb64(&b64(&all)).unwrap(), all);
        assert_eq!(unb64("not base64!"), None);
    }

    #[test]
    fn prefix_ends_and_authorities() {
        assert_eq!(prefix_end(b"/a"), b"/b");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b""), b"\0");
        let plain = endpoint("http://127.0.0.1:2379").unwrap();
        assert_eq!(plain.authority, "127.0.0.1:2379");
        assert!(plain.tls_name.is_none());
        assert_eq!(endpoint("http://etcd").unwrap().authority, "etcd:2379");
        let secure = endpoint("https://[::1]").unwrap();
        assert_eq!(secure.authority, "[::1]:2379");
        assert!(secure.tls_name.is_some());
        assert!(endpoint("etcd:2379").is_err());
        assert!(endpoint("ftp://etcd:2379").is_err());
        assert!(is_loopback("127.0.0.2:2379"));
        assert!(is_loopback("[::1]:2379"));
        assert!(is_loopback("LOCALHOST:1"));
        assert!(!is_loopback("10.0.0.1:2379"));
        assert!(!is_loopback("etcd:2379"));
    }
}

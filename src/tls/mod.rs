//! TLS termination: owns the HTTPS listener's certificates (chosen by SNI,
//! with a default), their hot reload (SIGHUP or a changed file, swapped
//! atomically, a bad pair refused with the old one kept), the rustls server
//! config (TLS 1.2 and 1.3, ALPN h2 and http/1.1, session tickets, optional
//! client certificates) and the accept loop with its handshake timeout.
//! After the handshake a connection is served like a plain one
//! ([`crate::http::serve_connection`]).

mod subject;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use hyper::header::HeaderValue;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use self::subject::subject;
use crate::config::{CertificateConfig, TlsConfig};
use crate::http::Handler;

/// Sessions remembered for resumption by id (tickets need no server state).
const SESSION_CACHE: usize = 4096;

/// A TLS setup failure: which file, and why.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {reason}", file.display())]
pub struct TlsError {
    /// The file at fault (or the listener's first certificate).
    pub file: PathBuf,
    /// What is wrong with it.
    pub reason: String,
}

impl TlsError {
    fn new(file: &Path, reason: impl Into<String>) -> Self {
        Self {
            file: file.to_owned(),
            reason: reason.into(),
        }
    }
}

/// The loaded certificates: by exact name, by wildcard suffix, and the
/// default.
#[derive(Debug)]
struct Loaded {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` is stored as `example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

/// The certificates of one HTTPS listener. It answers rustls' question
/// "which certificate for this hello" and can be reloaded while serving:
/// each handshake reads the current set once, so a reload changes only
/// handshakes that start after it.
#[derive(Debug)]
pub struct CertStore {
    sources: RwLock<Vec<CertificateConfig>>,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<Loaded>>,
}

impl CertStore {
    /// Loads every pair; fails on the first unreadable file, bad PEM, or a
    /// key that does not match its certificate.
    pub fn load(sources: &[CertificateConfig]) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let loaded = load_all(sources, &provider)?;
        Ok(Self {
            sources: RwLock::new(sources.to_vec()),
            provider,
            current: RwLock::new(Arc::new(loaded)),
        })
    }

    /// Loads the files again and swaps them in at once, or keeps the
    /// current set and returns why not.
    pub fn reload(&self) -> Result<(), TlsError> {
        let sources = self
            .sources
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        self.replace(&sources)
    }

    /// Loads a new list of pairs (a config reload) and swaps it in at once,
    /// or keeps the current list and set and returns why not.
    pub fn replace(&self, sources: &[CertificateConfig]) -> Result<(), TlsError> {
        let mut current_sources = self.sources.write().unwrap_or_else(PoisonError::into_inner);
        let loaded = load_all(sources, &self.provider)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(loaded);
        *current_sources = sources.to_vec();
        Ok(())
    }

    /// Every file the certificates come from.
    pub fn files(&self) -> Vec<PathBuf> {
        self.sources
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .flat_map(|s| [s.cert.clone(), s.key.clone()])
            .collect()
    }

    fn snapshot(&self) -> Arc<Loaded> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let loaded = self.snapshot();
        let Some(name) = hello.server_name() else {
            return Some(Arc::clone(&loaded.default));
        };
        let name = name.to_ascii_lowercase();
        let found = loaded.exact.get(&name).or_else(|| {
            name.split_once('.')
                .and_then(|(_, parent)| loaded.wildcard.get(parent))
        });
        Some(Arc::clone(found.unwrap_or(&loaded.default)))
    }
}

fn load_all(sources: &[CertificateConfig], provider: &CryptoProvider) -> Result<Loaded, TlsError> {
    let mut exact = HashMap::new();
    let mut wildcard = HashMap::new();
    let mut default = None;
    for source in sources {
        let key = Arc::new(load_pair(source, provider)?);
        default.get_or_insert_with(|| Arc::clone(&key));
        for name in &source.names {
            match name.strip_prefix("*.") {
                Some(parent) => wildcard.insert(parent.to_owned(), Arc::clone(&key)),
                None => exact.insert(name.clone(), Arc::clone(&key)),
            };
        }
    }
    let default = default
        .ok_or_else(|| TlsError::new(Path::new("tls.certificates"), "no certificate configured"))?;
    Ok(Loaded {
        exact,
        wildcard,
        default,
    })
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::new(path, format!("cannot read: {e}")))
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain = CertificateDer::pem_slice_iter(&read(path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::new(path, format!("bad PEM: {e}")))?;
    if chain.is_empty() {
        return Err(TlsError::new(path, "no certificate in the file"));
    }
    Ok(chain)
}

fn load_pair(
    source: &CertificateConfig,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let chain = load_certs(&source.cert)?;
    let key = PrivateKeyDer::from_pem_slice(&read(&source.key)?)
        .map_err(|e| TlsError::new(&source.key, format!("no usable private key: {e}")))?;
    CertifiedKey::from_der(chain, key, provider).map_err(|e| {
        TlsError::new(
            &source.key,
            format!("does not go with {}: {e}", source.cert.display()),
        )
    })
}

/// The certificates and rustls config of a listener: every pair loaded
/// (see [`CertStore::load`]); TLS 1.2 and 1.3 with the provider's default
/// (safe) cipher suites, ALPN h2 then http/1.1, resumption by tickets and
/// by session id, client certificates required when `client_ca` is set.
pub fn server_config(tls: &TlsConfig) -> Result<(Arc<CertStore>, ServerConfig), TlsError> {
    let store = Arc::new(CertStore::load(&tls.certificates)?);
    let provider = Arc::clone(&store.provider);
    let first = tls
        .certificates
        .first()
        .map_or_else(|| PathBuf::from("tls"), |c| c.cert.clone());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::new(&first, e.to_string()))?;
    let builder = match &tls.client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in load_certs(ca)? {
                roots
                    .add(cert)
                    .map_err(|e| TlsError::new(ca, format!("not a CA certificate: {e}")))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::new(ca, e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let resolver: Arc<dyn ResolvesServerCert> = store.clone();
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.ticketer =
        rustls::crypto::ring::Ticketer::new().map_err(|e| TlsError::new(&first, e.to_string()))?;
    config.session_storage = rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE);
    Ok((store, config))
}

/// Reloads `store` whenever one of its files changes on disk (checked every
/// `poll`), until `shutdown`. A failed reload is logged and the old
/// certificates stay; the same files are tried again when they change.
pub async fn watch_files(
    store: Arc<CertStore>,
    poll: std::time::Duration,
    shutdown: CancellationToken,
) {
    let stamps = |store: &CertStore| -> Vec<Option<SystemTime>> {
        store
            .files()
            .iter()
            .map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
            .collect()
    };
    let mut seen = stamps(&store);
    loop {
        tokio::select! {
            () = tokio::time::sleep(poll) => {}
            () = shutdown.cancelled() => return,
        }
        let now = stamps(&store);
        if now != seen {
            seen = now;
            reload_logged(&store, "a certificate file changed");
        }
    }
}

/// Reloads `store`, logging the outcome; `why` says what asked for it.
pub fn reload_logged(store: &CertStore, why: &str) -> bool {
    match store.reload() {
        Ok(()) => {
            tracing::info!(why, "TLS certificates reloaded");
            true
        }
        Err(e) => {
            tracing::error!(why, error = %e, "TLS certificates refused; the previous ones stay in service");
            false
        }
    }
}

/// Accepts HTTPS connections until `shutdown` through the one accept path
/// ([`crate::http::accept::serve_with`]): each gets `handshake_timeout`
/// for its PROXY header (when required) and its handshake together, then
/// is served by `handler` with the verified client subject (mTLS) in the
/// configured header.
pub async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    handler: Arc<Handler>,
    tls: Arc<TlsConfig>,
    connections: Arc<crate::http::ConnectionLimit>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let proxy_protocol = tls.proxy_protocol;
    let handshake = Arc::new(TlsHandshake { acceptor, tls });
    crate::http::accept::serve_with(
        listener,
        proxy_protocol,
        handshake,
        handler,
        connections,
        shutdown,
        tracker,
    )
    .await;
}

/// The TLS handshake of an HTTPS listener, and the verified client
/// subject it gives.
struct TlsHandshake {
    acceptor: TlsAcceptor,
    tls: Arc<TlsConfig>,
}

impl crate::http::accept::Handshake<TcpStream> for TlsHandshake {
    const NAME: &'static str = "https";

    fn timeout(&self) -> Option<Duration> {
        Some(self.tls.handshake_timeout)
    }

    async fn serve(
        &self,
        stream: crate::prefixed::Prefixed<TcpStream>,
        client: SocketAddr,
        handler: Arc<Handler>,
        connections: Arc<crate::http::ConnectionLimit>,
        shutdown: CancellationToken,
        deadline: tokio::time::Instant,
    ) {
        let stream = match tokio::time::timeout_at(deadline, self.acceptor.accept(stream)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!("TLS handshake timed out");
                return;
            }
        };
        let subject = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| subject(leaf))
            .and_then(|s| HeaderValue::from_bytes(s.as_bytes()).ok());
        crate::http::serve_connection(
            stream,
            Some(client),
            handler,
            &connections,
            shutdown,
            subject,
        )
        .await;
    }
}

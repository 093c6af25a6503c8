//! The TLS listener's settings (`[tls]`).

use super::*;

/// An HTTPS listener: certificates chosen by SNI, optional client
/// certificates (mTLS). Paths are relative to the config file.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsConfig {
    /// Where HTTPS is served.
    pub listen: SocketAddr,
    /// Certificate + key pairs; the first also serves clients without SNI
    /// or with a name no pair lists.
    pub certificates: Vec<CertificateConfig>,
    /// A CA bundle (PEM): when set, clients must present a certificate it
    /// signed, and its subject is forwarded to the app.
    pub client_ca: Option<PathBuf>,
    /// The request header that carries the verified client subject.
    pub client_subject_header: String,
    /// Time allowed for a TLS handshake.
    pub handshake_timeout: Duration,
    /// How often the certificate files are checked for changes (their
    /// mtime); a change reloads them.
    pub reload_poll: Duration,
    /// Whether connections start with a PROXY protocol header, before the
    /// TLS handshake (see [`Config::proxy_protocol`]).
    pub proxy_protocol: bool,
}

/// One certificate chain and its private key (PEM files).
#[derive(Debug, Clone, PartialEq)]
pub struct CertificateConfig {
    /// The chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// Server names (SNI) it serves: exact, or `*.example.com` for one
    /// label. Empty: only as the default.
    pub names: Vec<String>,
}

impl TlsConfig {
    /// A listener on `listen` with one certificate and the defaults.
    pub fn new(listen: SocketAddr, cert: PathBuf, key: PathBuf) -> Self {
        Self {
            listen,
            certificates: vec![CertificateConfig {
                cert,
                key,
                names: Vec::new(),
            }],
            client_ca: None,
            client_subject_header: "x-client-subject".to_owned(),
            handshake_timeout: Duration::from_secs(10),
            reload_poll: Duration::from_secs(5),
            proxy_protocol: false,
        }
    }
}

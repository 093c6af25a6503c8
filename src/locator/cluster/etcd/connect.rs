//! Reaching etcd: endpoint URLs, TLS (the CA, a client certificate), and
//! the user's password file.

use super::*;

/// The client-certificate resolver of a connection that has no
/// certificate to offer: notes that the server asked for one.
#[derive(Debug, Default)]
pub(super) struct CertificateAsked(std::sync::atomic::AtomicBool);

impl CertificateAsked {
    pub(super) fn asked(&self) -> bool {
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
pub(super) trait IoStream: AsyncRead + AsyncWrite + Send + Unpin + std::fmt::Debug {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + std::fmt::Debug> IoStream for T {}

/// `http://host:port` or `https://host:port` → the endpoint (port 2379
/// when none is given).
pub(super) fn endpoint(url: &str) -> Result<Endpoint, String> {
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
pub(super) fn is_loopback(authority: &str) -> bool {
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
pub(super) fn read_secret(path: &Path) -> Result<String, String> {
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
pub(super) fn client_tls(
    ca: &Path,
    security: &EtcdSecurity,
) -> Result<rustls::ClientConfig, EtcdSetupError> {
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

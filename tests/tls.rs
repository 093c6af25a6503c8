//! The HTTPS listener with certificates generated here (rcgen): HTTP/1.1
//! and HTTP/2 chosen by ALPN; SNI picks the certificate, with a default;
//! a changed file swaps the certificate for new handshakes while an open
//! connection keeps working; a bad or half-written pair is refused and the
//! old one kept; mTLS forwards the verified subject and refuses clients
//! without a good certificate; a silent client is cut at the handshake
//! timeout.

#![allow(clippy::unwrap_used, clippy::expect_used)] // in tests a failed unwrap is a failed test

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rpcgate::app::demo;
use rpcgate::config::{CertificateConfig, Config, TlsConfig};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// A test CA and a directory for the PEM files.
struct Pki {
    dir: PathBuf,
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate and its key, as PEM.
struct Leaf {
    cert_pem: String,
    key_pem: String,
}

impl Leaf {
    fn der(&self) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(self.cert_pem.as_bytes()).unwrap()
    }
}

impl Pki {
    fn new(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("rpcgate-tls-{}-{test}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{test} CA"));
        let ca_pem = params.self_signed(&key).unwrap().pem();
        Self {
            dir,
            ca_pem,
            issuer: Issuer::new(params, key),
        }
    }

    fn leaf(&self, names: &[&str], common_name: &str) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Tests");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Writes `leaf` as NAME.pem + NAME.key and returns the config pair.
    fn install(&self, name: &str, leaf: &Leaf, sni: &[&str]) -> CertificateConfig {
        CertificateConfig {
            cert: self.write(&format!("{name}.pem"), &leaf.cert_pem),
            key: self.write(&format!("{name}.key"), &leaf.key_pem),
            names: sni.iter().map(|n| (*n).to_owned()).collect(),
        }
    }
}

fn tls_config(certificates: Vec<CertificateConfig>) -> TlsConfig {
    let first = certificates[0].clone();
    let mut tls = TlsConfig::new("127.0.0.1:0".parse().unwrap(), first.cert, first.key);
    tls.certificates = certificates;
    tls.reload_poll = Duration::from_millis(20);
    tls
}

fn gateway_config(tls: TlsConfig) -> Config {
    let mut config = Config::default();
    config.pool.size = 2;
    config.tls = Some(tls);
    config
}

/// A locator, the `hello` demo app, and a gateway with `tls` in front.
async fn hello_cluster(tls: TlsConfig) -> support::Cluster {
    support::cluster(
        "",
        vec![demo::build("hello", None).unwrap()],
        gateway_config(tls),
    )
    .await
}

/// A TLS client trusting `ca_pem`, offering `alpn`, sending `name` as SNI
/// (an IP address sends none), with an optional client certificate.
async fn connect(
    addr: SocketAddr,
    name: &str,
    alpn: &[&[u8]],
    ca_pem: &str,
    client: Option<&Leaf>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    handshake(tcp, name, alpn, ca_pem, client).await
}

/// [`connect`] over a connection already made.
async fn handshake(
    tcp: TcpStream,
    name: &str,
    alpn: &[&[u8]],
    ca_pem: &str,
    client: Option<&Leaf>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let mut config = match client {
        Some(leaf) => builder
            .with_client_auth_cert(
                vec![leaf.der()],
                PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(name.to_owned()).unwrap(), tcp)
        .await
}

fn served_cert(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}

async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .unwrap_or_else(|_| panic!("{what} within 20 s"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h1_and_h2_by_alpn_and_sni_picks_the_certificate() {
    let pki = Pki::new("sni");
    let a = pki.leaf(&["a.test", "127.0.0.1"], "a");
    let b = pki.leaf(&["b.test", "x.b.test"], "b");
    let tls = tls_config(vec![
        pki.install("a", &a, &["a.test"]),
        pki.install("b", &b, &["b.test", "*.b.test"]),
    ]);
    let c = hello_cluster(tls).await;
    let addr = c.gateway.tls_addr.unwrap();

    // HTTP/2 when the client offers h2.
    let stream = connect(addr, "a.test", &[b"h2", b"http/1.1"], &pki.ca_pem, None)
        .await
        .unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    assert_eq!(served_cert(&stream), a.der());
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let response = sender
        .send_request(support::request(
            "GET",
            "https://a.test/hello/http/",
            &[],
            "",
        ))
        .await
        .unwrap();
    assert_eq!(response.version(), hyper::Version::HTTP_2);
    let got = support::got(response).await;
    assert_eq!((got.status, &got.body[..]), (200, demo::HELLO));

    // HTTP/1.1 when it offers only that.
    let stream = connect(addr, "b.test", &[b"http/1.1"], &pki.ca_pem, None)
        .await
        .unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(served_cert(&stream), b.der(), "SNI b.test");
    let mut sender = support::h1_over(stream).await;
    let response = sender
        .send_request(support::request("GET", "/hello/http/", &[], ""))
        .await
        .unwrap();
    assert_eq!(response.version(), hyper::Version::HTTP_11);
    assert_eq!(support::got(response).await.status, 200);

    // A wildcard name, and the default for no SNI (an IP address).
    let stream = connect(addr, "x.b.test", &[], &pki.ca_pem, None)
        .await
        .unwrap();
    assert_eq!(served_cert(&stream), b.der(), "*.b.test");
    let stream = connect(addr, "127.0.0.1", &[], &pki.ca_pem, None)
        .await
        .unwrap();
    assert_eq!(served_cert(&stream), a.der(), "no SNI: the first pair");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_file_swaps_the_certificate_and_a_bad_pair_is_refused() {
    let pki = Pki::new("reload");
    let old = pki.leaf(&["a.test"], "old");
    let tls = tls_config(vec![pki.install("a", &old, &["a.test"])]);
    let c = hello_cluster(tls).await;
    let addr = c.gateway.tls_addr.unwrap();
    let store = c.gateway.certificates.clone().unwrap();

    // A connection made with the old certificate...
    let stream = connect(addr, "a.test", &[b"http/1.1"], &pki.ca_pem, None)
        .await
        .unwrap();
    assert_eq!(served_cert(&stream), old.der());
    let mut kept = support::h1_over(stream).await;

    // ...the files change on disk (the watcher polls their mtime)...
    let new = pki.leaf(&["a.test"], "new");
    pki.install("a", &new, &["a.test"]);
    bounded("the new certificate in a new handshake", async {
        loop {
            let stream = connect(addr, "a.test", &[], &pki.ca_pem, None)
                .await
                .unwrap();
            if served_cert(&stream) == new.der() {
                break;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    // ...and the old connection keeps working.
    let response = kept
        .send_request(support::request("GET", "/hello/http/", &[], ""))
        .await
        .unwrap();
    assert_eq!(support::got(response).await.status, 200);

    // A key that does not go with its certificate is refused; the pair in
    // service stays.
    let stranger = pki.leaf(&["a.test"], "stranger");
    pki.write("a.key", &stranger.key_pem);
    let refused = store.reload().unwrap_err();
    assert!(refused.file.ends_with("a.key"), "{refused}");
    assert!(refused.reason.contains("does not go with"), "{refused}");
    let stream = connect(addr, "a.test", &[], &pki.ca_pem, None)
        .await
        .unwrap();
    assert_eq!(served_cert(&stream), new.der());

    // So is a half-written certificate file.
    pki.write("a.key", &new.key_pem);
    pki.write("a.pem", &new.cert_pem[..new.cert_pem.len() / 2]);
    let refused = store.reload().unwrap_err();
    assert!(refused.file.ends_with("a.pem"), "{refused}");
    let stream = connect(addr, "a.test", &[], &pki.ca_pem, None)
        .await
        .unwrap();
    assert_eq!(served_cert(&stream), new.der());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_forwards_the_verified_subject_and_refuses_other_clients() {
    let pki = Pki::new("mtls");
    let server = pki.leaf(&["a.test"], "server");
    let mut tls = tls_config(vec![pki.install("a", &server, &[])]);
    tls.client_ca = Some(pki.write("ca.pem", &pki.ca_pem));
    let whoami = support::header_echo("whoami", "x-client-subject");
    let c = support::cluster("", vec![whoami], gateway_config(tls)).await;
    let addr = c.gateway.tls_addr.unwrap();

    // A good client certificate: its subject reaches the app, and a forged
    // header from the client is replaced.
    let client = pki.leaf(&["client.test"], "client-1");
    let stream = connect(addr, "a.test", &[b"http/1.1"], &pki.ca_pem, Some(&client))
        .await
        .unwrap();
    let mut sender = support::h1_over(stream).await;
    let response = sender
        .send_request(support::request(
            "GET",
            "/whoami/http/",
            &[("x-client-subject", "CN=admin")],
            "",
        ))
        .await
        .unwrap();
    let got = support::got(response).await;
    assert_eq!(got.status, 200);
    // RFC 4514 order (last RDN first), as `openssl x509 -nameopt RFC2253`
    // prints it for this certificate.
    assert_eq!(&got.body[..], b"O=Tests,CN=client-1");

    // No certificate, or one from another CA: no request gets through.
    let other = Pki::new("mtls-other");
    let stranger = other.leaf(&["client.test"], "stranger");
    for client in [None, Some(&stranger)] {
        let refused = async {
            let stream = connect(addr, "a.test", &[b"http/1.1"], &pki.ca_pem, client).await?;
            // TLS 1.3 reports client-auth failure after the handshake.
            let mut sender = support::h1_over(stream).await;
            sender
                .send_request(support::request("GET", "/whoami/http/", &[], ""))
                .await
                .map_err(std::io::Error::other)
        }
        .await;
        assert!(
            refused.is_err(),
            "a client with {:?} got through",
            client.map(|_| "a stranger's certificate")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_is_cut_at_the_handshake_timeout() {
    let pki = Pki::new("timeout");
    let server = pki.leaf(&["a.test"], "server");
    let mut tls = tls_config(vec![pki.install("a", &server, &[])]);
    tls.handshake_timeout = Duration::from_millis(200);
    let c = support::cluster("", vec![], gateway_config(tls)).await;
    let mut silent = TcpStream::connect(c.gateway.tls_addr.unwrap())
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    let read = bounded(
        "the server to close the silent connection",
        silent.read(&mut buf),
    )
    .await;
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_protocol_header_before_the_handshake_names_the_client() {
    let pki = Pki::new("proxy");
    let server = pki.leaf(&["a.test"], "server");
    let mut tls = tls_config(vec![pki.install("a", &server, &[])]);
    tls.proxy_protocol = true;
    let app = support::header_echo("whoami", "x-real-ip");
    let c = support::cluster("", vec![app], gateway_config(tls)).await;
    let addr = c.gateway.tls_addr.unwrap();

    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(
        &mut tcp,
        b"PROXY TCP4 198.51.100.20 10.0.0.1 4711 443\r\n",
    )
    .await
    .unwrap();
    let stream = handshake(tcp, "a.test", &[b"h2"], &pki.ca_pem, None)
        .await
        .unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let response = sender
        .send_request(support::request("GET", "/whoami/http/", &[], ""))
        .await
        .unwrap();
    let got = support::got(response).await;
    assert_eq!((got.status, &got.body[..]), (200, &b"198.51.100.20"[..]));

    // Without the header, the handshake never completes.
    assert!(
        bounded(
            "the refused handshake",
            connect(addr, "a.test", &[b"h2"], &pki.ca_pem, None)
        )
        .await
        .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_reload_applies_a_new_certificate_list_or_refuses_a_bad_one() {
    let pki = Pki::new("relist");
    let a = pki.leaf(&["a.test"], "a");
    let tls = tls_config(vec![pki.install("a", &a, &["a.test"])]);
    let c = hello_cluster(tls).await;
    let addr = c.gateway.tls_addr.unwrap();
    let stream = connect(addr, "b.test", &[], &pki.ca_pem, None).await;
    assert!(
        stream.is_err(),
        "b.test is not served yet (a.test's certificate)"
    );

    // The reloaded config lists a second pair, for b.test: new handshakes
    // get it, and nothing needs a restart.
    let b = pki.leaf(&["b.test"], "b");
    let mut config = (*c.gateway.config()).clone();
    let mut listed = config.tls.clone().unwrap();
    listed.certificates.push(pki.install("b", &b, &["b.test"]));
    config.tls = Some(listed.clone());
    assert_eq!(
        c.gateway.reload(config.clone()).unwrap(),
        Vec::<&str>::new()
    );
    let stream = connect(addr, "b.test", &[], &pki.ca_pem, None)
        .await
        .unwrap();
    assert_eq!(served_cert(&stream), b.der());

    // A list whose new pair does not match is refused whole: b.test keeps
    // its certificate, and the running config keeps its list.
    let other = pki.leaf(&["c.test"], "c");
    let mut broken = listed;
    broken.certificates.push(CertificateConfig {
        cert: pki.write("c.pem", &other.cert_pem),
        key: pki.write("c.key", &a.key_pem),
        names: vec!["c.test".to_owned()],
    });
    config.tls = Some(broken);
    assert!(c.gateway.reload(config).is_err());
    let stream = connect(addr, "b.test", &[], &pki.ca_pem, None)
        .await
        .unwrap();
    assert_eq!(served_cert(&stream), b.der());
    assert_eq!(
        c.gateway.config().tls.as_ref().unwrap().certificates.len(),
        2
    );
}

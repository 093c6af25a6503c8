//! TLS handshake cost with the gateway's own server config
//! (`rpcgate::tls::server_config`: ring, TLS 1.3, tickets): a full
//! handshake and a resumed one (a ticket from an earlier handshake), both
//! sides in memory on one core, so the figure is CPU per handshake with no
//! network in it. Handshakes per second per core ≈ 1 / time.
//!
//! `cargo bench --bench tls`

#![allow(missing_docs)] // criterion's macros generate undocumented items
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed bench setup should abort loudly

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use rcgen::{CertificateParams, KeyPair};
use rpcgate::config::TlsConfig;
use rpcgate::tls::server_config;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, ServerConnection};

/// Server config from a fresh self-signed certificate, and a client
/// config that trusts it.
fn configs() -> (Arc<rustls::ServerConfig>, ClientConfig) {
    let dir = std::env::temp_dir().join(format!("rpcgate-bench-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["bench.test".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(dir.join("c.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("k.pem"), key.serialize_pem()).unwrap();
    let tls = TlsConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        dir.join("c.pem"),
        dir.join("k.pem"),
    );
    let server = Arc::new(server_config(&tls).unwrap().1);
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(cert.pem().as_bytes()).unwrap())
        .unwrap();
    let client =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    (server, client)
}

/// One complete handshake between fresh connections, in memory.
fn handshake(server: &Arc<rustls::ServerConfig>, client: &Arc<ClientConfig>) -> bool {
    let name = ServerName::try_from("bench.test").unwrap();
    let mut c = ClientConnection::new(Arc::clone(client), name).unwrap();
    let mut s = ServerConnection::new(Arc::clone(server)).unwrap();
    let mut buf = Vec::with_capacity(8192);
    while c.is_handshaking() || s.is_handshaking() {
        buf.clear();
        while c.wants_write() {
            c.write_tls(&mut buf).unwrap();
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            s.read_tls(&mut rd).unwrap();
        }
        s.process_new_packets().unwrap();
        buf.clear();
        while s.wants_write() {
            s.write_tls(&mut buf).unwrap();
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            c.read_tls(&mut rd).unwrap();
        }
        c.process_new_packets().unwrap();
    }
    c.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
}

fn handshakes(c: &mut Criterion) {
    let (server, client) = configs();
    let mut group = c.benchmark_group("tls_handshake");
    // Full: the client keeps no sessions.
    let mut full = client.clone();
    full.resumption = rustls::client::Resumption::disabled();
    let full = Arc::new(full);
    assert!(!handshake(&server, &full));
    group.bench_function("full", |b| b.iter(|| handshake(&server, &full)));
    // Resumed: each handshake uses a ticket from the one before.
    let resuming = Arc::new(client);
    handshake(&server, &resuming);
    assert!(
        handshake(&server, &resuming),
        "the second handshake resumes"
    );
    group.bench_function("resumed", |b| b.iter(|| handshake(&server, &resuming)));
    group.finish();
}

criterion_group!(benches, handshakes);
criterion_main!(benches);

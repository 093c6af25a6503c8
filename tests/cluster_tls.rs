//! Locators on a real etcd that speaks only TLS, wants a client
//! certificate (`--client-cert-auth`) and has auth enabled (user root):
//! certificates made here with rcgen, etcd started by `support::etcd`
//! (the tests fail if the `etcd` binary is missing). With the right CA,
//! client certificate and password, publishes and routing groups go from
//! one locator to another; a wrong CA, a missing client certificate, a bad
//! password and a world-readable password file each stop `rpcgate
//! locator` with one line naming etcd and what failed; a token that etcd
//! no longer accepts (revoked, or expired after `--auth-token-ttl`) is
//! traded for a new one without the session failing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // in tests a failed unwrap is a failed test

mod support;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair,
};
use rpcgate::locator::RunningLocator;
use rpcgate::locator::cluster::{EtcdClient, EtcdError};
use rpcgate::proto::locator::ResolveReply;
use serde_json::json;
use support::child::bounded;
use support::etcd::{Etcd, EtcdOptions, EtcdTls};
use tokio::process::Command;

const PASSWORD: &str = "s3cret-root";

/// A CA, etcd's server certificate and a client certificate, as files.
struct Pki {
    dir: PathBuf,
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

fn ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, format!("{name} CA"));
    let pem = params.self_signed(&key).unwrap().pem();
    (pem, Issuer::new(params, key))
}

/// A leaf certificate and its key, as PEM.
fn leaf(
    issuer: &Issuer<'static, KeyPair>,
    names: &[&str],
    common_name: Option<&str>,
    usages: Vec<ExtendedKeyUsagePurpose>,
) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let mut params = CertificateParams::new(names).unwrap();
    // rcgen's default subject has a Common Name; etcd's JSON gateway
    // refuses a client certificate with one while auth is enabled.
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "rpcgate tests");
    if let Some(cn) = common_name {
        params.distinguished_name.push(DnType::CommonName, cn);
    }
    params.extended_key_usages = usages;
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// A private file (mode 0600) holding `text`.
fn write_secret(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = write(dir, name, text);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

impl Pki {
    fn new(test: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("rpcgate-cluster-tls-{}-{test}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (ca_pem, issuer) = ca(test);
        // The server certificate also allows client auth: etcd's JSON
        // gateway presents it to etcd's own gRPC side.
        let (server_cert, server_key) = leaf(
            &issuer,
            &["127.0.0.1", "localhost"],
            Some("etcd-server"),
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        );
        let (client_cert, client_key) = leaf(
            &issuer,
            &[],
            None,
            vec![ExtendedKeyUsagePurpose::ClientAuth],
        );
        Self {
            ca: write(&dir, "ca.pem", &ca_pem),
            server_cert: write(&dir, "server.pem", &server_cert),
            server_key: write_secret(&dir, "server.key", &server_key),
            client_cert: write(&dir, "client.pem", &client_cert),
            client_key: write_secret(&dir, "client.key", &client_key),
            dir,
        }
    }
}

/// An etcd on TLS with `--client-cert-auth`, then auth enabled for root
/// (through the JSON gateway, as an operator would with etcdctl).
async fn secured_etcd(test: &str, auth_token_ttl: Option<u32>) -> (Etcd, Pki) {
    let pki = Pki::new(test);
    let options = EtcdOptions {
        tls: Some(EtcdTls {
            cert: pki.server_cert.clone(),
            key: pki.server_key.clone(),
            ca: pki.ca.clone(),
            client_cert: pki.client_cert.clone(),
            client_key: pki.client_key.clone(),
        }),
        auth_token_ttl,
    };
    let mut etcd = Etcd::start_with(test, options).await;
    let admin = etcd.client();
    for (path, body) in [
        (
            "/v3/auth/user/add",
            json!({"name": "root", "password": PASSWORD}),
        ),
        ("/v3/auth/role/add", json!({"name": "root"})),
        (
            "/v3/auth/user/grant",
            json!({"user": "root", "role": "root"}),
        ),
        ("/v3/auth/enable", json!({})),
    ] {
        admin
            .post(path, &body)
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
    }
    etcd.security.user = Some("root".into());
    etcd.security.password_file = Some(write_secret(&pki.dir, "root.password", PASSWORD));
    // Auth is really on: without a user etcd refuses (as "permission
    // denied": without a token, etcd takes the gateway's certificate
    // name, which is no user).
    match admin.check("/test/").await {
        Err(EtcdError::Auth(reason)) => assert!(reason.contains("permission denied"), "{reason}"),
        other => panic!("etcd without a user: {other:?}"),
    }
    (etcd, pki)
}

/// What a locator's `[cluster]` gets: the CA, the client pair, the
/// password file; `None` leaves the key out.
struct Creds {
    ca: Option<PathBuf>,
    cert: Option<(PathBuf, PathBuf)>,
    password_file: Option<PathBuf>,
}

impl Creds {
    fn all(etcd: &Etcd) -> Self {
        let s = &etcd.security;
        Self {
            ca: s.ca_file.clone(),
            cert: Some((s.cert_file.clone().unwrap(), s.key_file.clone().unwrap())),
            password_file: s.password_file.clone(),
        }
    }
}

fn cluster_toml(etcd: &Etcd, extra: &str, lease_ttl_ms: u64, creds: &Creds) -> String {
    let mut toml = format!(
        "{extra}\n[cluster]\netcd = [\"{}\"]\nprefix = \"/test\"\nlease_ttl_ms = {lease_ttl_ms}\n",
        etcd.url
    );
    if let Some(ca) = &creds.ca {
        toml += &format!("etcd_ca_file = {:?}\n", ca.display().to_string());
    }
    if let Some((cert, key)) = &creds.cert {
        toml += &format!("etcd_cert_file = {:?}\n", cert.display().to_string());
        toml += &format!("etcd_key_file = {:?}\n", key.display().to_string());
    }
    if let Some(file) = &creds.password_file {
        toml += "etcd_user = \"root\"\n";
        toml += &format!("etcd_password_file = {:?}\n", file.display().to_string());
    }
    toml
}

/// A locator in this process with every credential.
async fn locator(etcd: &Etcd, uuid: &str, lease_ttl_ms: u64) -> RunningLocator {
    let toml = cluster_toml(
        etcd,
        &format!("uuid = \"{uuid}\""),
        lease_ttl_ms,
        &Creds::all(etcd),
    );
    support::start_locator(support::locator_config(&toml)).await
}

async fn until_connected(locator: &RunningLocator) {
    let mut status = locator.cluster().unwrap().watch_status();
    bounded("store connected", async {
        status.wait_for(|s| s.connected).await.unwrap();
    })
    .await;
}

async fn until_service(locator: &RunningLocator, name: &str) {
    let registry = Arc::clone(locator.registry());
    let mut changes = registry.watch_services();
    bounded(&format!("`{name}` seen"), async {
        changes
            .wait_for(|_| registry.has_service(name))
            .await
            .unwrap();
    })
    .await;
}

async fn until_group(locator: &RunningLocator, name: &str, weights: &BTreeMap<String, u32>) {
    let registry = Arc::clone(locator.registry());
    let mut dump = registry.watch_dump();
    bounded(&format!("group `{name}` = {weights:?}"), async {
        dump.wait_for(|_| registry.groups().get(name) == Some(weights))
            .await
            .unwrap();
    })
    .await;
}

fn weights(v1: u32, v2: u32) -> BTreeMap<String, u32> {
    BTreeMap::from([("svc-v1".to_owned(), v1), ("svc-v2".to_owned(), v2)])
}

#[tokio::test]
async fn publishes_and_groups_cross_a_tls_etcd_with_auth() {
    let (etcd, _pki) = secured_etcd("share", None).await;
    let a = locator(&etcd, "locator-a", 2000).await;
    let b = locator(&etcd, "locator-b", 2000).await;
    until_connected(&a).await;
    until_connected(&b).await;

    // A publish on A resolves on B.
    let _publications = support::publish_members(a.addr, &[("svc-v1", 7001)]).await;
    until_service(&b, "svc-v1").await;
    let (handle, _conn) = support::connect(b.addr, Default::default()).await;
    let reply: ResolveReply = support::resolve(&handle, "svc-v1", None).await.unwrap();
    assert_eq!(reply.endpoints[0].port, 7001);

    // Weights written through A's admin API reach B's registry.
    let (status, body) = support::http(
        a.admin_addr.unwrap(),
        "PUT",
        "/groups/canary",
        r#"{"svc-v1": 3, "svc-v2": 1}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    until_group(&b, "canary", &weights(3, 1)).await;

    // And what they wrote is in etcd, under the prefix, read with root.
    let (_, kvs) = etcd.client().range_prefix("/test/groups/").await.unwrap();
    assert_eq!(kvs.len(), 1);
    assert_eq!(kvs[0].key, "/test/groups/canary");
    a.shutdown().await;
    b.shutdown().await;
}

/// `rpcgate locator` on `toml`: it must exit non-zero with one line on
/// stderr; that line.
async fn locator_refuses(dir: &Path, toml: &str) -> String {
    let file = write(dir, "locator.toml", toml);
    let child = Command::new(env!("CARGO_BIN_EXE_rpcgate"))
        .args(["--log-level", "error", "locator"])
        .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .arg("--config")
        .arg(&file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let output = bounded("the locator's exit", child.wait_with_output())
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    assert!(!output.status.success(), "the locator started: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.starts_with("rpcgate: "), "{stderr}");
    stderr
}

#[tokio::test]
async fn a_wrong_ca_stops_the_locator_with_a_clear_line() {
    let (etcd, pki) = secured_etcd("wrong-ca", None).await;
    let (other_ca, _) = ca("other");
    let mut creds = Creds::all(&etcd);
    creds.ca = Some(write(&pki.dir, "other-ca.pem", &other_ca));
    let line = locator_refuses(&pki.dir, &cluster_toml(&etcd, "", 2000, &creds)).await;
    println!("{line}");
    assert!(line.contains(&format!("etcd at {}", etcd.url)), "{line}");
    assert!(line.contains("etcd TLS failed"), "{line}");
    assert!(line.contains("UnknownIssuer"), "{line}");
    assert!(line.contains("etcd_ca_file"), "{line}");
}

#[tokio::test]
async fn a_missing_client_certificate_stops_the_locator_with_a_clear_line() {
    let (etcd, pki) = secured_etcd("no-client-cert", None).await;
    let mut creds = Creds::all(&etcd);
    creds.cert = None;
    let line = locator_refuses(&pki.dir, &cluster_toml(&etcd, "", 2000, &creds)).await;
    println!("{line}");
    assert!(line.contains(&format!("etcd at {}", etcd.url)), "{line}");
    assert!(line.contains("etcd TLS failed"), "{line}");
    assert!(line.contains("client certificate"), "{line}");
    assert!(line.contains("etcd_cert_file"), "{line}");
}

#[tokio::test]
async fn a_bad_password_stops_the_locator_with_a_clear_line() {
    let (etcd, pki) = secured_etcd("bad-password", None).await;
    let mut creds = Creds::all(&etcd);
    creds.password_file = Some(write_secret(&pki.dir, "wrong.password", "not-it\n"));
    let line = locator_refuses(&pki.dir, &cluster_toml(&etcd, "", 2000, &creds)).await;
    println!("{line}");
    assert!(line.contains(&format!("etcd at {}", etcd.url)), "{line}");
    assert!(line.contains("etcd auth failed"), "{line}");
    assert!(line.contains("authenticating as `root`"), "{line}");
    assert!(line.contains("invalid user ID or password"), "{line}");
}

#[tokio::test]
async fn a_world_readable_password_file_is_refused() {
    let (etcd, pki) = secured_etcd("readable-password", None).await;
    let creds = Creds::all(&etcd);
    let file = creds.password_file.clone().unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let line = locator_refuses(&pki.dir, &cluster_toml(&etcd, "", 2000, &creds)).await;
    println!("{line}");
    assert!(line.contains("cluster.etcd_password_file"), "{line}");
    assert!(line.contains(&file.display().to_string()), "{line}");
    assert!(line.contains("readable by every user"), "{line}");
}

/// Writes weights through `locator`'s store handle (what the admin API
/// does) and checks that they were written with one new token and no
/// failed session.
async fn write_renews_the_token(etcd: &Etcd, locator: &RunningLocator, before: u64) {
    let cluster = locator.cluster().unwrap();
    cluster.put_group("canary", &weights(1, 1)).await.unwrap();
    assert_eq!(cluster.client().authentications(), before + 1);
    assert_eq!(cluster.status().failures, 0, "{:?}", cluster.status());
    let (_, kvs) = etcd.client().range_prefix("/test/groups/").await.unwrap();
    assert_eq!(kvs.len(), 1);
}

#[tokio::test]
async fn a_revoked_token_is_traded_for_a_new_one() {
    let (etcd, _pki) = secured_etcd("revoked-token", None).await;
    let a = locator(&etcd, "locator-a", 2000).await;
    until_connected(&a).await;
    let client: &EtcdClient = a.cluster().unwrap().client();
    let before = client.authentications();
    assert!(before >= 1);
    // Setting root's password (to the same one) revokes every token of
    // root: the locator's next call is answered "invalid auth token".
    etcd.client()
        .post(
            "/v3/auth/user/changepw",
            &json!({"name": "root", "password": PASSWORD}),
        )
        .await
        .unwrap();
    write_renews_the_token(&etcd, &a, before).await;
    a.shutdown().await;
}

#[tokio::test]
async fn an_expired_token_is_traded_for_a_new_one() {
    // etcd forgets a simple token after `--auth-token-ttl` without use
    // (checked every second). A lease of 30 s keeps the locator's
    // keepalives 10 s apart; those do not use the token anyway.
    let ttl = 1;
    let (etcd, _pki) = secured_etcd("expired-token", Some(ttl)).await;
    let a = locator(&etcd, "locator-a", 30_000).await;
    until_connected(&a).await;
    let before = a.cluster().unwrap().client().authentications();
    // The expiry is what is under test: let the TTL pass, plus etcd's
    // one-second sweep, twice over.
    tokio::time::sleep(Duration::from_secs(2 * (u64::from(ttl) + 1))).await;
    write_renews_the_token(&etcd, &a, before).await;
    a.shutdown().await;
}

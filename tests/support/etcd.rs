//! A real `etcd` (Debian's `etcd-server`) as a child process on 127.0.0.1,
//! with free ports and a temporary data dir, killed on drop. Without the
//! binary the test fails with a message saying how to install it.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use std::net::SocketAddr;

use rpcgate::locator::EtcdSecurity;
use rpcgate::locator::cluster::EtcdClient;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A running (or stopped) etcd.
pub struct Etcd {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT` (`https://` with [`EtcdOptions::tls`]).
    pub url: String,
    peer_url: String,
    dir: PathBuf,
    options: EtcdOptions,
    /// What [`Self::client`] uses (and the readiness check): the CA and
    /// client certificate of [`EtcdOptions::tls`], and a user once the
    /// test has enabled auth.
    pub security: EtcdSecurity,
}

/// Server TLS for etcd's client port: `--cert-file`, `--key-file`,
/// `--trusted-ca-file` and `--client-cert-auth` (clients need a
/// certificate signed by `ca`). The certificate must also allow client
/// auth: etcd's JSON gateway dials etcd's gRPC side with it.
#[derive(Clone, Default)]
pub struct EtcdTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
    /// The client certificate and key the readiness check offers.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

/// How to start etcd.
#[derive(Clone, Default)]
pub struct EtcdOptions {
    pub tls: Option<EtcdTls>,
    /// `--auth-token-ttl` in seconds (etcd's default: 300).
    pub auth_token_ttl: Option<u32>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Etcd {
    /// Starts etcd and returns once it answers a read.
    pub async fn start(name: &str) -> Self {
        Self::start_with(name, EtcdOptions::default()).await
    }

    /// Starts etcd with `options` and returns once it answers a read.
    pub async fn start_with(name: &str, options: EtcdOptions) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "rpcgate-etcd-{name}-{}-{}",
            std::process::id(),
            free_port()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let scheme = if options.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let security = match &options.tls {
            None => EtcdSecurity::default(),
            Some(tls) => EtcdSecurity {
                ca_file: Some(tls.ca.clone()),
                cert_file: Some(tls.client_cert.clone()),
                key_file: Some(tls.client_key.clone()),
                ..EtcdSecurity::default()
            },
        };
        let mut etcd = Self {
            child: None,
            url: format!("{scheme}://127.0.0.1:{}", free_port()),
            peer_url: format!("http://127.0.0.1:{}", free_port()),
            dir,
            options,
            security,
        };
        etcd.restart().await;
        etcd
    }

    /// Starts etcd again on the same ports and data dir (after [`Self::kill`]).
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "etcd is running");
        let mut command = Command::new("etcd");
        if let Some(tls) = &self.options.tls {
            command
                .arg("--cert-file")
                .arg(&tls.cert)
                .arg("--key-file")
                .arg(&tls.key)
                .arg("--trusted-ca-file")
                .arg(&tls.ca)
                .arg("--client-cert-auth");
        }
        if let Some(ttl) = self.options.auth_token_ttl {
            command.args(["--auth-token-ttl", &ttl.to_string()]);
        }
        let spawned = command
            .arg("--name")
            .arg("test")
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .args(["--listen-client-urls", &self.url])
            .args(["--advertise-client-urls", &self.url])
            .args(["--listen-peer-urls", &self.peer_url])
            .args(["--initial-advertise-peer-urls", &self.peer_url])
            .args(["--initial-cluster", &format!("test={}", self.peer_url)])
            .args(["--log-level", "error"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "the cluster tests need a real etcd: `etcd` is not on PATH. \
                 Install it (Debian/Ubuntu: `apt-get install -y etcd-server`); \
                 .ci/run does this."
            ),
            Err(e) => panic!("cannot start etcd: {e}"),
        };
        self.child = Some(child);
        let client = self.client();
        for _ in 0..200 {
            if client.is_healthy().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("etcd at {} did not answer within 10 s", self.url);
    }

    /// A client for it.
    pub fn client(&self) -> EtcdClient {
        EtcdClient::with_security(std::slice::from_ref(&self.url), &self.security).unwrap()
    }

    /// Kills it (SIGKILL) and waits for the exit; the data dir stays.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `rpcgate locator` as a child process in the cluster on `etcd` (prefix
/// `/test`, lease TTL 2 s), with `extra` TOML before `[cluster]`; returns
/// it with its locator and admin addresses.
pub async fn locator_process(
    etcd: &Etcd,
    name: &str,
    extra: &str,
) -> (Child, SocketAddr, SocketAddr) {
    let dir = std::env::temp_dir().join(format!("rpcgate-cluster-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("locator.toml");
    let toml = format!(
        "{extra}\n[cluster]\netcd = [\"http://127.0.0.1:9\"]\nprefix = \"/test\"\nlease_ttl_ms = 2000\n"
    );
    std::fs::write(&file, toml).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_rpcgate"))
        .args(["--log-level", "error", "locator"])
        .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .arg("--config")
        .arg(&file)
        // The flag overrides the file's endpoints and keeps its TTL.
        .args(["--etcd", &etcd.url])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (addr, admin) = super::child::bounded("the locator's listening lines", async {
        let mut addr = None;
        loop {
            let line = lines.next_line().await.unwrap().expect("locator exited");
            if let Some(a) = line.strip_prefix("locator listening on ") {
                addr = Some(a.parse().unwrap());
            } else if let Some(a) = line.strip_prefix("admin listening on ") {
                break (addr.unwrap(), a.parse().unwrap());
            }
        }
    })
    .await;
    (child, addr, admin)
}

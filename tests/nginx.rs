//! `config/nginx.conf` in front of a real gateway, with a real nginx: the
//! client's address arrives at the app, and nginx's 413 is JSON. nginx is
//! installed with apt when missing (as CI and the dev machines run as
//! root); where it cannot be, the test says so and skips.

#![allow(clippy::unwrap_used, clippy::expect_used)] // in tests a failed unwrap is a failed test

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use rpcgate::config::Config;
use rpcgate::http::Cidr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

const NGINX: &str = "/usr/sbin/nginx";

/// nginx, installed with apt if it is missing; `None` (with the reason
/// printed) where that is impossible.
async fn nginx() -> Option<&'static str> {
    if Path::new(NGINX).exists() {
        return Some(NGINX);
    }
    eprintln!("nginx is missing: installing it with apt-get (nginx-light)");
    let install =
        "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light";
    let installed = tokio::time::timeout(
        Duration::from_secs(300),
        Command::new("sh")
            .args(["-c", install])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status(),
    )
    .await;
    if Path::new(NGINX).exists() {
        return Some(NGINX);
    }
    eprintln!("SKIPPED: nginx could not be installed ({installed:?}); the nginx test did not run");
    None
}

/// One request from `source` (a loopback address), read to the end.
async fn request_from(source: &str, to: SocketAddr, request: &str) -> String {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let mut stream = socket.connect(to).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut response))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_real_nginx_the_client_address_arrives_and_413_is_json() {
    let Some(nginx) = nginx().await else {
        return;
    };
    let mut config = Config::default();
    config.pool.size = 1;
    config.request.trusted_proxies = vec![Cidr::parse("127.0.0.1").unwrap()];
    let c = support::cluster(
        "",
        vec![support::header_echo("whoami", "x-real-ip")],
        config,
    )
    .await;

    // The example file, pointed at this gateway and a free port, with a
    // small body limit so the 413 path is easy to reach.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = std::env::temp_dir().join(format!("rpcgate-nginx-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    let example =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/nginx.conf"))
            .unwrap();
    let conf = example
        .replace(
            "server 127.0.0.1:8080;",
            &format!("server {};", c.gateway.addr),
        )
        .replace(
            "listen 127.0.0.1:8000;",
            &format!("listen 127.0.0.1:{port};"),
        )
        .replace("client_max_body_size 10m;", "client_max_body_size 1k;")
        .replace("worker_processes auto;", "worker_processes 1;");
    assert_ne!(conf, example, "the example's addresses were found");
    let conf_path = dir.join("nginx.conf");
    std::fs::write(&conf_path, conf).unwrap();
    // One process (`master_process off`): killing it leaves no worker
    // behind, holding the test's inherited file descriptors.
    let globals = format!(
        "daemon off; master_process off; pid {0}/nginx.pid; error_log {0}/logs/error.log;",
        dir.display()
    );
    let mut server = Command::new(nginx)
        .arg("-p")
        .arg(&dir)
        .arg("-c")
        .arg(&conf_path)
        .args(["-g", &globals])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let front: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // Readiness: nginx accepts connections.
    tokio::time::timeout(Duration::from_secs(20), async {
        while tokio::net::TcpStream::connect(front).await.is_err() {
            if let Ok(Some(status)) = server.try_wait() {
                let mut err = String::new();
                server
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .await
                    .ok();
                panic!("nginx exited with {status}: {err}");
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("nginx listening within 20 s");

    // A client on 127.0.0.3: nginx (trusted, on 127.0.0.1) reports it.
    let response = request_from(
        "127.0.0.3",
        front,
        "GET /whoami/http/ HTTP/1.1\r\nHost: example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let (_, body) = response.split_once("\r\n\r\n").unwrap();
    // Chunked: the size line, the address, the last chunk.
    assert!(body.lines().any(|l| l == "127.0.0.3"), "{response}");

    // Over nginx's body limit: its 413 is JSON, like rpcgate's.
    let body = "x".repeat(4096);
    let response = request_from(
        "127.0.0.3",
        front,
        &format!(
            "POST /whoami/http/ HTTP/1.1\r\nHost: example\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    let (head, json) = response.split_once("\r\n\r\n").unwrap();
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    let json: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(json["error"]["status"], 413);
    assert_eq!(json["error"]["kind"], "body_too_large");
    server.kill().await.ok();
}

//! The load of `benches/chaos.sh` and `benches/soak.sh`: N keep-alive
//! HTTP/1.1 connections send GETs of one path for a bounded time, at an
//! optional total rate, and the tally is printed as one JSON line: requests
//! sent, answers by status class, requests that failed on an open
//! connection (reset, closed mid-answer), connects refused, and requests
//! that hung (no whole answer within the bound), the slowest answer, and
//! the answers by exact status other than 200. Loopback only by intent;
//! it stops by itself.
//!
//! `chaos_load ADDR PATH [--conns N] [--secs S] [--rate PER_SEC]
//!  [--timeout-ms MS] [--local-ip IP]`

#![allow(clippy::unwrap_used, clippy::expect_used)] // a load tool: fail loudly on bad arguments

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

/// The tally, shared by the connections.
#[derive(Default)]
struct Tally {
    sent: AtomicU64,
    by_class: [AtomicU64; 5],
    failed: AtomicU64,
    refused: AtomicU64,
    hung: AtomicU64,
    max_ms: AtomicU64,
    /// Answers by exact status, other than 200.
    codes: std::sync::Mutex<std::collections::BTreeMap<u16, u64>>,
}

struct Args {
    addr: SocketAddr,
    path: String,
    conns: usize,
    secs: u64,
    rate: Option<f64>,
    timeout: Duration,
    local_ip: Option<IpAddr>,
}

fn args() -> Args {
    let mut it = std::env::args().skip(1);
    let addr = it.next().expect("ADDR").parse().expect("ADDR is ip:port");
    let path = it.next().expect("PATH");
    let mut args = Args {
        addr,
        path,
        conns: 32,
        secs: 10,
        rate: None,
        timeout: Duration::from_secs(5),
        local_ip: None,
    };
    while let Some(flag) = it.next() {
        let value = it.next().expect("a flag's value");
        match flag.as_str() {
            "--conns" => args.conns = value.parse().expect("--conns N"),
            "--secs" => args.secs = value.parse().expect("--secs S"),
            "--rate" => args.rate = Some(value.parse().expect("--rate PER_SEC")),
            "--timeout-ms" => {
                args.timeout = Duration::from_millis(value.parse().expect("--timeout-ms MS"));
            }
            "--local-ip" => args.local_ip = Some(value.parse().expect("--local-ip IP")),
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(args.conns > 0 && args.conns <= 10_000, "--conns 1..10000");
    assert!(args.secs <= 3_600, "--secs at most an hour");
    args
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

/// A connection, or `None` when the connect failed (counted).
async fn connect(args: &Args, tally: &Tally) -> Option<Sender> {
    let connecting = async {
        let stream = match args.local_ip {
            Some(ip) => {
                let socket = TcpSocket::new_v4()?;
                socket.bind(SocketAddr::new(ip, 0))?;
                socket.connect(args.addr).await?
            }
            None => TcpStream::connect(args.addr).await?,
        };
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(conn);
        Ok::<_, std::io::Error>(sender)
    };
    match tokio::time::timeout(args.timeout, connecting).await {
        Ok(Ok(sender)) => Some(sender),
        Ok(Err(_)) => {
            tally.refused.fetch_add(1, Ordering::Relaxed);
            None
        }
        Err(_) => {
            tally.hung.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// What one request came to.
enum Outcome {
    Status(u16),
    Failed,
    Hung,
}

async fn one(sender: &mut Sender, args: &Args) -> Outcome {
    let request = hyper::Request::get(args.path.as_str())
        .header("host", "chaos")
        .body(Empty::new())
        .expect("a valid request");
    let exchange = async {
        sender.ready().await?;
        let response = sender.send_request(request).await?;
        let status = response.status().as_u16();
        response.into_body().collect().await?;
        Ok::<_, hyper::Error>(status)
    };
    match tokio::time::timeout(args.timeout, exchange).await {
        Ok(Ok(status)) => Outcome::Status(status),
        Ok(Err(_)) => Outcome::Failed,
        Err(_) => Outcome::Hung,
    }
}

async fn worker(args: Arc<Args>, tally: Arc<Tally>, until: Instant) {
    // Each connection's share of the rate, as a fixed period.
    let mut pace = args.rate.map(|rate| {
        let period = Duration::from_secs_f64(args.conns as f64 / rate.max(0.001));
        let mut every = tokio::time::interval(period);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every
    });
    let mut sender: Option<Sender> = None;
    while Instant::now() < until {
        if let Some(pace) = &mut pace
            && tokio::time::timeout_at(until, pace.tick()).await.is_err()
        {
            break;
        }
        let mut current = match sender.take() {
            Some(current) if !current.is_closed() => current,
            _ => match connect(&args, &tally).await {
                Some(fresh) => fresh,
                None => {
                    // Refused: pace the reconnects (a stopped gateway
                    // must not turn this into a busy loop).
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        tally.sent.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        match one(&mut current, &args).await {
            Outcome::Status(status) => {
                let class = usize::from(status / 100).clamp(1, 5) - 1;
                tally.by_class[class].fetch_add(1, Ordering::Relaxed);
                if status != 200 {
                    *tally.codes.lock().unwrap().entry(status).or_default() += 1;
                }
                sender = Some(current);
            }
            Outcome::Failed => {
                tally.failed.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Hung => {
                tally.hung.fetch_add(1, Ordering::Relaxed);
            }
        }
        let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        tally.max_ms.fetch_max(ms, Ordering::Relaxed);
    }
}

fn main() {
    let args = Arc::new(args());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let tally = Arc::new(Tally::default());
    runtime.block_on(async {
        let until = Instant::now() + Duration::from_secs(args.secs);
        let workers: Vec<_> = (0..args.conns)
            .map(|_| tokio::spawn(worker(Arc::clone(&args), Arc::clone(&tally), until)))
            .collect();
        for w in workers {
            w.await.unwrap();
        }
    });
    let get = |n: &AtomicU64| n.load(Ordering::Relaxed);
    let codes: Vec<String> = tally
        .codes
        .lock()
        .unwrap()
        .iter()
        .map(|(code, n)| format!("\"{code}\":{n}"))
        .collect();
    println!(
        "{{\"sent\":{},\"1xx\":{},\"2xx\":{},\"3xx\":{},\"4xx\":{},\"5xx\":{},\"failed\":{},\"refused\":{},\"hung\":{},\"max_ms\":{},\"codes\":{{{}}}}}",
        get(&tally.sent),
        get(&tally.by_class[0]),
        get(&tally.by_class[1]),
        get(&tally.by_class[2]),
        get(&tally.by_class[3]),
        get(&tally.by_class[4]),
        get(&tally.failed),
        get(&tally.refused),
        get(&tally.hung),
        get(&tally.max_ms),
        codes.join(","),
    );
    // Connections' tasks may still be open: the runtime drops them.
    runtime.shutdown_timeout(Duration::from_millis(100));
}

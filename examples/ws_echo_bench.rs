//! WebSocket echo load: a plain tokio-tungstenite echo server, and a client
//! driver that measures echoed messages per second against any echo URL
//! (the plain server, or rpcgate in front of the `chat` demo, whose rooms
//! echo to their only member). `benches/ws_load.sh` runs both side by side.
//!
//! ```text
//! ws_echo_bench server 127.0.0.1:18600
//! ws_echo_bench client 'ws://127.0.0.1:18600/r/{i}' [CONNECTIONS] [SECONDS] [SIZE] [WINDOW]
//! ```
//!
//! `{i}` in the URL becomes the connection's number (a room of its own).
//! Each connection keeps WINDOW messages in flight (default 16) for
//! SECONDS (default 5); the client prints `messages_per_sec N`. Loopback
//! only, bounded in time.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("server") => server(args.get(1).map_or("127.0.0.1:18600", String::as_str)).await,
        Some("client") => {
            let url = args.get(1).ok_or("client needs a URL")?.clone();
            let number = |i: usize, default: u64| -> Result<u64, Error> {
                Ok(args
                    .get(i)
                    .map(|a| a.parse())
                    .transpose()?
                    .unwrap_or(default))
            };
            client(
                url,
                number(2, 50)? as usize,
                Duration::from_secs(number(3, 5)?),
                number(4, 64)? as usize,
                number(5, 16)? as usize,
            )
            .await
        }
        _ => Err(
            "usage: ws_echo_bench server ADDR | client URL [CONNECTIONS] [SECONDS] [SIZE] [WINDOW]"
                .into(),
        ),
    }
}

/// Echoes every data message back on its connection.
async fn server(addr: &str) -> Result<(), Error> {
    let listener = TcpListener::bind(addr).await?;
    println!("listening {}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        tokio::spawn(async move {
            let Ok(ws) = tokio_tungstenite::accept_async(stream).await else {
                return;
            };
            let (mut sink, mut stream) = ws.split();
            while let Some(Ok(message)) = stream.next().await {
                if (message.is_text() || message.is_binary()) && sink.send(message).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// Runs `connections` echo loops for `duration`; prints the rate.
async fn client(
    url: String,
    connections: usize,
    duration: Duration,
    size: usize,
    window: usize,
) -> Result<(), Error> {
    let echoed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut sockets = Vec::with_capacity(connections);
    for i in 0..connections {
        let (ws, _) = tokio_tungstenite::connect_async(url.replace("{i}", &i.to_string())).await?;
        sockets.push(ws);
    }
    let payload = "x".repeat(size);
    let started = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for ws in sockets {
        let (echoed, stop, payload) = (Arc::clone(&echoed), Arc::clone(&stop), payload.clone());
        tasks.push(tokio::spawn(async move {
            let (mut sink, mut stream) = ws.split();
            let mut in_flight = 0;
            loop {
                while in_flight < window && !stop.load(Ordering::Relaxed) {
                    if sink.feed(Message::text(payload.as_str())).await.is_err() {
                        return;
                    }
                    in_flight += 1;
                }
                if sink.flush().await.is_err() || in_flight == 0 {
                    break;
                }
                match tokio::time::timeout(Duration::from_secs(5), stream.next()).await {
                    Ok(Some(Ok(m))) if m.is_text() => {
                        in_flight -= 1;
                        if !stop.load(Ordering::Relaxed) {
                            echoed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(Some(Ok(_))) => {}
                    _ => return,
                }
            }
            let _ = sink.send(Message::Close(None)).await;
        }));
    }
    tokio::time::sleep(duration).await;
    let counted = echoed.load(Ordering::Relaxed);
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    }
    println!(
        "messages_per_sec {:.0}",
        counted as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}

//! The admin listener's `/ui` page in a real headless Chromium: the
//! standalone default under load to `canary` (weights 3:1) shows the
//! group, both members and their shares of traffic within 5 points of
//! 75% and 25%, read from the rendered DOM; it says "reconnecting" while
//! the gateway is down and comes back by itself after a restart.
//!
//! Set `RPCGATE_UI_SCREENSHOT=FILE.png` to save what the page showed
//! under load (docs/img/ui.png is taken so).

#![allow(clippy::unwrap_used, clippy::expect_used)] // in tests a failed unwrap is a failed test

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;
use support::browser::Browser;
use support::standalone::{Ports, Standalone};
use tokio_util::sync::CancellationToken;

/// What the page shows for the canary group: the `%` text of each
/// member's traffic and weight cells, once both traffic cells have one.
const CANARY: &str = r#"(() => {
  const g = document.querySelector('[data-group="canary"]');
  if (!g) return null;
  const cell = (m, kind) => {
    const n = g.querySelector(`tr[data-member="${m}"] td.${kind} .num`);
    return n ? n.textContent : null;
  };
  const got = {
    title: g.querySelector("h3").textContent,
    v1: cell("echo-v1", "traffic"), v2: cell("echo-v2", "traffic"),
    w1: cell("echo-v1", "weight"), w2: cell("echo-v2", "weight"),
    state1: g.querySelector('tr[data-member="echo-v1"] .state').textContent,
    status: document.getElementById("status").textContent,
  };
  return got.v1 && got.v2 && got.v1.endsWith("%") && got.v2.endsWith("%") ? got : null;
})()"#;

fn percent(value: &Value) -> f64 {
    let text = value.as_str().unwrap();
    text.trim_end_matches('%').parse().unwrap()
}

/// Sends GET /canary/http/ over `connections` keep-alive connections
/// until `stop`; counts the answers.
fn load(
    gateway: std::net::SocketAddr,
    connections: usize,
    stop: &CancellationToken,
) -> Arc<AtomicU64> {
    let answered = Arc::new(AtomicU64::new(0));
    for _ in 0..connections {
        let (stop, answered) = (stop.clone(), Arc::clone(&answered));
        tokio::spawn(async move {
            let mut client = support::h1(gateway).await;
            while !stop.is_cancelled() {
                let request = support::request("GET", "/canary/http/", &[], "");
                let Ok(response) = client.send_request(request).await else {
                    break;
                };
                let got = support::got(response).await;
                assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
                answered.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    answered
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ui_shows_canary_shares_against_weights_and_survives_a_restart() {
    let ports = Ports::free();
    let gateway = Standalone::start(ports).await;
    let stop = CancellationToken::new();
    let answered = load(gateway.http, 4, &stop);

    let browser = Browser::launch().await;
    let page = browser
        .open(&format!("http://{}/ui", gateway.admin), None)
        .await;
    // Shares over the gateway's window (5 s): wait until both members have
    // one, then until they are within 5 points of their weights.
    let seen = page.wait_for("the canary group with shares", CANARY).await;
    assert_eq!(seen["status"], "live", "{seen}");
    assert!(
        seen["title"].as_str().unwrap().starts_with("canary"),
        "{seen}"
    );
    assert_eq!(seen["w1"], "75.0%", "echo-v1's weight share: {seen}");
    assert_eq!(seen["w2"], "25.0%", "echo-v2's weight share: {seen}");
    let close_enough = format!(
        "(() => {{ const g = {CANARY}; if (!g) return null; \
         const v1 = parseFloat(g.v1), v2 = parseFloat(g.v2); \
         return Math.abs(v1 - 75) <= 5 && Math.abs(v2 - 25) <= 5 ? g : null; }})()"
    );
    let seen = page
        .wait_for(
            "traffic shares within 5 points of 75% and 25%",
            &close_enough,
        )
        .await;
    let (v1, v2) = (percent(&seen["v1"]), percent(&seen["v2"]));
    assert!(
        (v1 - 75.0).abs() <= 5.0 && (v2 - 25.0).abs() <= 5.0,
        "{seen}"
    );
    assert!(
        answered.load(Ordering::Relaxed) > 0,
        "the load was answered"
    );
    // The other panels rendered from the same document.
    let services = page
        .wait_for(
            "the services panel with canary's rate",
            r#"(() => { const r = document.querySelector('tr[data-service="canary"]');
                 return r && /\d/.test(r.children[1].textContent) ? r.innerText : null; })()"#,
        )
        .await;
    assert!(services.as_str().unwrap().contains("canary"), "{services}");
    let pools = page
        .eval(r#"document.querySelector('tr[data-pool="echo-v1"]')?.innerText"#)
        .await;
    assert!(pools.as_str().unwrap_or("").contains("live"), "{pools}");

    if let Ok(file) = std::env::var("RPCGATE_UI_SCREENSHOT") {
        std::fs::write(&file, page.screenshot().await).unwrap();
    }

    // The gateway goes away: the page says so, then comes back by itself.
    stop.cancel();
    gateway.kill().await;
    page.wait_for(
        "\"reconnecting\" while the gateway is down",
        r#"document.getElementById("status").textContent.startsWith("reconnecting")"#,
    )
    .await;
    let again = Standalone::start(ports).await;
    page.wait_for(
        "\"live\" again after the restart",
        r#"document.getElementById("status").textContent === "live" &&
           !!document.querySelector('[data-group="canary"] tr[data-member="echo-v2"]')"#,
    )
    .await;
    // The icon is inline: no request for /favicon.ico went unanswered.
    assert_eq!(browser.responses_with_status(404), Vec::<String>::new());
    drop(again);
}

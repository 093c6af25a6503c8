//! A real Chromium, headless, driven over the DevTools protocol (CDP).
//!
//! Why a hand-written client of ~150 lines instead of `chromiumoxide` or
//! `headless_chrome`: the tests need five commands (open a context, open a
//! page, evaluate, screenshot, read network events), and CDP is JSON over
//! a WebSocket, for which the dev-dependencies already have
//! `tokio-tungstenite` and `serde_json`. `chromiumoxide` generates
//! bindings for the whole protocol (a long build on 2 cores, tens of
//! crates), and `headless_chrome` brings its own blocking stack
//! (`tungstenite` threads, `ureq`, `anyhow`...). Nothing new is built.
//!
//! The browser is Debian's `chromium` (`.ci/run` installs it), or the
//! program named by `RPCGATE_CHROMIUM`. If it cannot start, the test
//! fails with a message saying so.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>;
type Writer = futures_util::stream::SplitSink<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    Message,
>;

/// How long the browser may take to start, and a page to get where a test
/// waits for it: generous, the machine may be busy.
pub const PATIENCE: Duration = Duration::from_secs(45);

/// A headless Chromium; killed (and its profile removed) when dropped.
pub struct Browser {
    child: Child,
    profile: PathBuf,
    writer: tokio::sync::Mutex<Writer>,
    pending: Pending,
    next_id: AtomicU64,
    /// Every event received (method, params and session), in order.
    events: Arc<Mutex<Vec<Value>>>,
}

/// One tab, attached with its own CDP session.
pub struct Page<'a> {
    browser: &'a Browser,
    session: String,
}

impl Browser {
    /// Starts Chromium headless and connects to its DevTools endpoint.
    pub async fn launch() -> Self {
        static PROFILES: AtomicU64 = AtomicU64::new(0);
        let program = std::env::var("RPCGATE_CHROMIUM").unwrap_or_else(|_| "chromium".into());
        let profile = std::env::temp_dir().join(format!(
            "rpcgate-chromium-{}-{}",
            std::process::id(),
            PROFILES.fetch_add(1, Ordering::Relaxed)
        ));
        let mut child = Command::new(&program)
            .args([
                "--headless",
                // Tests run as root in CI containers, where the sandbox
                // cannot start.
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--window-size=1280,1100",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start Chromium (`{program}`): {e}. These tests need a real \
                     browser: install Debian's `chromium` package (.ci/run does), or set \
                     RPCGATE_CHROMIUM to one"
                )
            });
        let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut said = Vec::new();
        let endpoint = tokio::time::timeout(PATIENCE, async {
            while let Ok(Some(line)) = stderr.next_line().await {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    return Some(url.trim().to_owned());
                }
                said.push(line);
            }
            None
        })
        .await;
        let endpoint = match endpoint {
            Ok(Some(url)) => url,
            outcome => panic!(
                "Chromium (`{program}`) did not start its DevTools endpoint ({}); it said:\n{}",
                if outcome.is_err() {
                    "timed out"
                } else {
                    "it exited"
                },
                said.join("\n")
            ),
        };
        // Keep draining its stderr, so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = stderr.next_line().await {} });
        let (socket, _) = tokio_tungstenite::connect_async(&endpoint)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to Chromium's DevTools at {endpoint}: {e}"));
        let (writer, mut reader) = socket.split();
        let pending: Pending = Arc::default();
        let events: Arc<Mutex<Vec<Value>>> = Arc::default();
        let (pending_in, events_in) = (Arc::clone(&pending), Arc::clone(&events));
        tokio::spawn(async move {
            while let Some(Ok(message)) = reader.next().await {
                let Message::Text(text) = message else {
                    continue;
                };
                let Ok(value) = serde_json::from_str::<Value>(&text) else {
                    continue;
                };
                match value.get("id").and_then(Value::as_u64) {
                    Some(id) => {
                        if let Some(reply) = pending_in.lock().unwrap().remove(&id) {
                            let _ = reply.send(value);
                        }
                    }
                    None => events_in.lock().unwrap().push(value),
                }
            }
        });
        Self {
            child,
            profile,
            writer: tokio::sync::Mutex::new(writer),
            pending,
            next_id: AtomicU64::new(1),
            events,
        }
    }

    /// Sends `method` with `params` (to `session`, or the browser) and
    /// returns its result; panics on a protocol error.
    pub async fn call(&self, session: Option<&str>, method: &str, params: Value) -> Value {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut command = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            command["sessionId"] = json!(session);
        }
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap().insert(id, tx);
        self.writer
            .lock()
            .await
            .send(Message::text(command.to_string()))
            .await
            .unwrap_or_else(|e| panic!("Chromium's DevTools connection failed: {e}"));
        let reply = tokio::time::timeout(PATIENCE, rx)
            .await
            .unwrap_or_else(|_| panic!("Chromium did not answer {method} within {PATIENCE:?}"))
            .unwrap_or_else(|_| panic!("Chromium went away during {method}"));
        if let Some(error) = reply.get("error") {
            panic!("{method} failed: {error}");
        }
        reply["result"].clone()
    }

    /// A new browser context: its own cookies and cache, like another
    /// browser profile.
    pub async fn context(&self) -> String {
        let made = self
            .call(None, "Target.createBrowserContext", json!({}))
            .await;
        made["browserContextId"].as_str().unwrap().to_owned()
    }

    /// Opens `url` in a new tab (in `context`, if given), with network
    /// events on.
    pub async fn open(&self, url: &str, context: Option<&str>) -> Page<'_> {
        let mut params = json!({"url": "about:blank"});
        if let Some(context) = context {
            params["browserContextId"] = json!(context);
        }
        let target = self.call(None, "Target.createTarget", params).await;
        let attached = self
            .call(
                None,
                "Target.attachToTarget",
                json!({"targetId": target["targetId"], "flatten": true}),
            )
            .await;
        let page = Page {
            browser: self,
            session: attached["sessionId"].as_str().unwrap().to_owned(),
        };
        page.call("Network.enable", json!({})).await;
        page.call("Page.enable", json!({})).await;
        page.call("Page.navigate", json!({"url": url})).await;
        page
    }

    /// The HTTP responses with status `status` that any page received.
    pub fn responses_with_status(&self, status: u64) -> Vec<String> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e["method"] == "Network.responseReceived")
            .filter(|e| e["params"]["response"]["status"].as_u64() == Some(status))
            .map(|e| {
                e["params"]["response"]["url"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned()
            })
            .collect()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

impl Page<'_> {
    /// Sends `method` to this tab.
    pub async fn call(&self, method: &str, params: Value) -> Value {
        self.browser.call(Some(&self.session), method, params).await
    }

    /// Evaluates `expression` in the page (awaiting a promise) and returns
    /// its value; panics if it throws.
    pub async fn eval(&self, expression: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        if let Some(thrown) = result.get("exceptionDetails") {
            panic!("`{expression}` threw in the page: {thrown}");
        }
        result["result"]["value"].clone()
    }

    /// Evaluates `expression` until it returns something other than
    /// `null`/`false` (re-checked every 100 ms, the page's own state being
    /// what is waited on), within [`PATIENCE`]; panics naming `what` and
    /// showing the page's text past that.
    pub async fn wait_for(&self, what: &str, expression: &str) -> Value {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let value = self.eval(expression).await;
            if !(value.is_null() || value == Value::Bool(false)) {
                return value;
            }
            if tokio::time::Instant::now() > deadline {
                let text = self.text().await;
                panic!("{what}: not seen within {PATIENCE:?}; the page shows:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The page's visible text.
    pub async fn text(&self) -> String {
        let value = self
            .eval("document.body ? document.body.innerText : ''")
            .await;
        value.as_str().unwrap_or_default().to_owned()
    }

    /// A PNG of the page as rendered (its whole height).
    pub async fn screenshot(&self) -> Vec<u8> {
        let shot = self
            .call(
                "Page.captureScreenshot",
                json!({"format": "png", "captureBeyondViewport": true}),
            )
            .await;
        base64_decode(shot["data"].as_str().unwrap())
    }
}

/// Standard base64 (CDP's encoding of binary results).
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let bytes: Vec<u8> = text.bytes().filter(|c| *c != b'=').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= u32::from(value(*c)) << (18 - 6 * i);
        }
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

//! Every row of the error table, produced for real: the `fail` app, a slow
//! app past its deadline, a backend that breaks the protocol or dies, a
//! locator that does not know the name, an overloaded app.

#![allow(clippy::unwrap_used, clippy::expect_used)] // in tests a failed unwrap is a failed test

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use rpcgate::app::{AppBuilder, HttpRequest, HttpResponse, Response, demo};
use rpcgate::config::Config;
use rpcgate::proto::{ErrorCode, RemoteError};

fn small() -> Config {
    let mut config = Config::default();
    config.pool.size = 2;
    config
}

fn assert_error(got: &support::Got, status: u16, kind: &str) {
    assert_eq!(got.status, status, "{:?}", got.body);
    assert_eq!(got.header("x-error-generated-by"), Some("rpcgate"));
    assert_eq!(got.header("content-type"), Some("application/json"));
    let json = got.json();
    assert_eq!(json["error"]["status"], status);
    assert_eq!(json["error"]["kind"], kind);
    let id = got.header("x-request-id").unwrap();
    assert_eq!(id.len(), 16);
    assert_eq!(json["error"]["request_id"], id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_errors_are_400_and_404() {
    let c = support::cluster("", vec![demo::build("echo", None).unwrap()], small()).await;
    let addr = c.gateway.addr;
    let got = support::send(addr, "GET", "/x", &[("x-cocaine-service", "echo")], "").await;
    assert_error(&got, 400, "bad_route");
    let got = support::send(
        addr,
        "GET",
        "/echo/http/",
        &[("x-request-id", "0xnothex")],
        "",
    )
    .await;
    assert_error(&got, 400, "bad_request_id");
    assert_error(
        &support::send(addr, "GET", "/", &[], "").await,
        404,
        "no_route",
    );
    assert_error(
        &support::send(addr, "GET", "//http/x", &[], "").await,
        404,
        "no_route",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_segments_are_400_and_never_reach_an_app() {
    let seen = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&seen);
    let app =
        AppBuilder::new("echo").on_http("http", move |_req: HttpRequest, res: HttpResponse| {
            counted.fetch_add(1, Ordering::SeqCst);
            async move {
                res.respond(200, vec![], "ok").await.ok();
                Ok(())
            }
        });
    let c = support::cluster("", vec![app], small()).await;
    let addr = c.gateway.addr;
    for path in [
        "/echo/../echo/http/",
        "/echo/http/../../../config",
        "/echo/http/%2e%2E/x",
        "/echo/http/./x?y=1",
    ] {
        let got = support::send(addr, "GET", path, &[], "").await;
        assert_error(&got, 400, "bad_path");
    }
    let routed = [("x-cocaine-service", "echo"), ("x-cocaine-event", "http")];
    let got = support::send(addr, "GET", "/a/%2e./b", &routed, "").await;
    assert_error(&got, 400, "bad_path");
    // The same app is reached by a clean path (the responses above came
    // first, on their own connections).
    let got = support::send(addr, "GET", "/echo/http/a..b/?p=../x", &[], "").await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    assert_eq!(seen.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_over_the_limit_is_413_and_never_reaches_the_app() {
    let seen = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&seen);
    let app = AppBuilder::new("count").on("http", move |_req, res: Response| {
        counted.fetch_add(1, Ordering::SeqCst);
        async move {
            res.close().await.ok();
            Ok(())
        }
    });
    let mut config = small();
    config.request.body_limit = 1024;
    let c = support::cluster("", vec![app], config).await;
    let big = "x".repeat(2048);
    let got = support::send(c.gateway.addr, "POST", "/count/http/", &[], &big).await;
    assert_error(&got, 413, "body_too_large");
    assert_eq!(
        seen.load(Ordering::SeqCst),
        0,
        "nothing was sent to the app"
    );
}

/// Any path names a service: requests for made-up names are 503 and leave
/// nothing behind (no pool, no task re-resolving it, no metric series per
/// name), so a client cannot grow the gateway with them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_service_names_leave_no_pools_behind() {
    let c = support::cluster("", vec![demo::build("hello", None).unwrap()], small()).await;
    assert_eq!(
        support::send(c.gateway.addr, "GET", "/hello/http/", &[], "")
            .await
            .status,
        200
    );
    let before = c.gateway.pools().all().len();
    for i in 0..50 {
        let got = support::send(
            c.gateway.addr,
            "GET",
            &format!("/made-up-{i}/http/"),
            &[],
            "",
        )
        .await;
        assert_error(&got, 503, "service_not_found");
    }
    let names: Vec<String> = c
        .gateway
        .pools()
        .all()
        .iter()
        .map(|p| p.service().to_owned())
        .collect();
    assert_eq!(names.len(), before, "pools left: {names:?}");
    // A name that becomes known later is served: it resolves afresh.
    let again = support::send(c.gateway.addr, "GET", "/made-up-0/http/", &[], "").await;
    assert_error(&again, 503, "service_not_found");
    assert_eq!(
        support::send(c.gateway.addr, "GET", "/hello/http/", &[], "")
            .await
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_service_and_no_connection_are_503() {
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let toml = format!("[services.dead]\nendpoints = [\"{dead}\"]\n");
    let c = support::cluster(&toml, vec![], small()).await;
    let got = support::send(c.gateway.addr, "GET", "/nope/http/", &[], "").await;
    assert_error(&got, 503, "service_not_found");
    let got = support::send(
        c.gateway.addr,
        "GET",
        "/dead/http/",
        &[("x-request-timeout", "300")],
        "",
    )
    .await;
    assert_error(&got, 503, "no_connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_full_after_the_retries_is_503_with_retry_after() {
    let attempts = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&attempts);
    let app = AppBuilder::new("busy").on("http", move |_req, _res| {
        counted.fetch_add(1, Ordering::SeqCst);
        async move { Err(RemoteError::new(ErrorCode::QUEUE_IS_FULL, "queue is full")) }
    });
    let c = support::cluster("", vec![app], small()).await;
    let got = support::send(c.gateway.addr, "GET", "/busy/http/", &[], "").await;
    assert_error(&got, 503, "overloaded");
    assert_eq!(got.header("retry-after"), Some("1"));
    assert_eq!(attempts.load(Ordering::SeqCst), 3, "the default 3 attempts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_full_is_retried_and_succeeds() {
    let attempts = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&attempts);
    // The `request_timeout` each attempt carried.
    let timeouts = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = Arc::clone(&timeouts);
    let app = AppBuilder::new("flaky").on("http", move |req, res: Response| {
        let n = counted.fetch_add(1, Ordering::SeqCst);
        seen.lock().unwrap().push(req.headers.request_timeout());
        async move {
            if n == 0 {
                return Err(RemoteError::new(ErrorCode::QUEUE_IS_FULL, "queue is full"));
            }
            let meta = rpcgate::proto::http::ResponseMeta {
                status: 200,
                headers: vec![],
            };
            res.write(meta.to_bytes()).await.ok();
            res.write("second time lucky").await.ok();
            res.close().await.ok();
            Ok(())
        }
    });
    let mut config = small();
    // The pause before the retry is at least half of this.
    config.retry.backoff = std::time::Duration::from_millis(100);
    let c = support::cluster("", vec![app], config).await;
    let got = support::send(c.gateway.addr, "GET", "/flaky/http/", &[], "").await;
    assert_eq!(got.status, 200);
    assert_eq!(&got.body[..], b"second time lucky");
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
    // The retry carries what is left of the deadline.
    let timeouts = timeouts.lock().unwrap().clone();
    let [Some(first), Some(retry)] = timeouts[..] else {
        panic!("both attempts carry request_timeout: {timeouts:?}");
    };
    assert_eq!(
        first,
        std::time::Duration::from_secs(30),
        "the default timeout"
    );
    assert!(
        retry <= first - std::time::Duration::from_millis(50),
        "{retry:?} after a pause of at least 50 ms"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deadline_is_504() {
    let c = support::cluster("", vec![demo::build("slow", None).unwrap()], small()).await;
    let got = support::send(
        c.gateway.addr,
        "GET",
        "/slow/http/?delay_ms=5000",
        &[("x-request-timeout", "200")],
        "",
    )
    .await;
    assert_error(&got, 504, "deadline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_errors_are_500_with_category_code_and_message() {
    let c = support::cluster("", vec![demo::build("fail", None).unwrap()], small()).await;
    let got = support::send(
        c.gateway.addr,
        "GET",
        "/fail/http/?category=43&code=7&message=boom",
        &[],
        "",
    )
    .await;
    assert_error(&got, 500, "app_error");
    let json = got.json();
    assert_eq!(json["error"]["category"], "app");
    assert_eq!(json["error"]["code"], 7);
    assert_eq!(json["error"]["message"], "[7]: boom");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_breaks_are_502() {
    let closer = AppBuilder::new("closer").on("http", |_req, res: Response| async move {
        res.close().await.ok();
        Ok(())
    });
    let garbage = AppBuilder::new("garbage").on("http", |_req, res: Response| async move {
        res.write(Bytes::from_static(b"\xc1 not a meta")).await.ok();
        res.close().await.ok();
        Ok(())
    });
    // A backend that sends a corrupt frame, and one that dies mid-request.
    let corrupt = support::Peer::bind().await;
    let dying = support::Peer::bind().await;
    let toml = format!(
        "[services.corrupt]\nendpoints = [\"{}\"]\n[services.dying]\nendpoints = [\"{}\"]\n",
        corrupt.addr, dying.addr
    );
    tokio::spawn(async move {
        loop {
            let mut conn = corrupt.accept().await;
            tokio::spawn(async move {
                while let Some(frame) = conn.next_frame().await {
                    if frame.ty == 0 && frame.chunk().is_ok_and(|c| c.len() > 8) {
                        conn.send_raw(b"\x94\x01\x00\x91\x00\xff\xff").await;
                    }
                }
            });
        }
    });
    tokio::spawn(async move {
        loop {
            let mut conn = dying.accept().await;
            tokio::spawn(async move {
                // Read the enqueue and the request, then vanish.
                conn.next_frame().await;
                conn.next_frame().await;
                drop(conn);
            });
        }
    });
    let c = support::cluster(&toml, vec![closer, garbage], small()).await;
    let addr = c.gateway.addr;
    let got = support::send(addr, "GET", "/closer/http/", &[], "").await;
    assert_error(&got, 502, "bad_gateway");
    assert!(
        got.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("before sending the response meta")
    );
    let got = support::send(addr, "GET", "/garbage/http/", &[], "").await;
    assert_error(&got, 502, "bad_gateway");
    assert!(
        got.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("meta")
    );
    let got = support::send(addr, "GET", "/corrupt/http/", &[], "").await;
    assert_error(&got, 502, "bad_gateway");
    let got = support::send(addr, "GET", "/dying/http/", &[], "").await;
    assert_error(&got, 502, "bad_gateway");
}

/// An app that answers "queue is full" to every request, but holds the
/// first `held` of them until all have arrived, so their failures reach
/// the gateway together. Returns the app and its attempt counter.
fn full_after_all_arrive(name: &str, held: usize) -> (AppBuilder, Arc<AtomicUsize>) {
    let attempts = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&attempts);
    let all_in = Arc::new(tokio::sync::Barrier::new(held));
    let app = AppBuilder::new(name)
        .concurrency(held * 4)
        .on("http", move |_req, _res| {
            let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
            let all_in = Arc::clone(&all_in);
            async move {
                if n <= held {
                    all_in.wait().await;
                }
                Err(RemoteError::new(ErrorCode::QUEUE_IS_FULL, "queue is full"))
            }
        });
    (app, attempts)
}

async fn concurrent_overloads(config: Config, requests: usize) -> usize {
    let (app, attempts) = full_after_all_arrive("full", requests);
    let c = support::cluster("", vec![app], config).await;
    let addr = c.gateway.addr;
    let sends: Vec<_> = (0..requests)
        .map(|_| {
            tokio::spawn(async move { support::send(addr, "GET", "/full/http/", &[], "").await })
        })
        .collect();
    for send in sends {
        assert_error(&send.await.unwrap(), 503, "overloaded");
    }
    attempts.load(Ordering::SeqCst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_budget_limits_retries_across_requests() {
    const REQUESTS: usize = 8;
    // A generous budget: every request makes its 3 attempts.
    let mut config = small();
    config.retry.backoff = std::time::Duration::from_millis(1);
    assert_eq!(concurrent_overloads(config, REQUESTS).await, REQUESTS * 3);
    // A budget of one request in retry at a time (floor 1, no share): the
    // eight fail together, one of them retries (twice, on one token), the
    // others answer after their first attempt. The long backoff keeps the
    // token taken while the others fail.
    let mut config = small();
    config.retry.budget_share = 0.0;
    config.retry.budget_floor = 1;
    config.retry.backoff = std::time::Duration::from_millis(300);
    assert_eq!(concurrent_overloads(config, REQUESTS).await, REQUESTS + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_timeout_overrides_the_default_and_a_header_only_shortens_it() {
    let mut config = small();
    config.request.timeout = std::time::Duration::from_secs(20);
    config.services.insert(
        "slow".into(),
        rpcgate::config::ServiceConfig {
            timeout: Some(std::time::Duration::from_millis(300)),
            ..Default::default()
        },
    );
    let c = support::cluster("", vec![demo::build("slow", None).unwrap()], config).await;
    let addr = c.gateway.addr;
    // A request the slow app will not answer in time: 504, and the
    // deadline it ran under.
    let deadline = |headers: &'static [(&'static str, &'static str)]| async move {
        let got = support::send(addr, "GET", "/slow/http/?delay_ms=10000", headers, "").await;
        assert_error(&got, 504, "deadline");
        got.json()["error"]["message"].as_str().unwrap().to_owned()
    };
    // The service's 300 ms applies, not the 20 s default...
    let message = deadline(&[]).await;
    assert!(message.contains("300ms"), "{message}");
    // ...a longer header does not extend it...
    let message = deadline(&[("x-request-timeout", "15000")]).await;
    assert!(message.contains("300ms"), "{message}");
    // ...and a shorter one shortens it.
    let message = deadline(&[("x-request-timeout", "100")]).await;
    assert!(message.contains("100ms"), "{message}");
}

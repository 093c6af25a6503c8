//! Unit tests of the WebSocket session's pieces.
use super::*;

fn request(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (n, v) in pairs {
        map.append(*n, HeaderValue::from_static(v));
    }
    map
}

const UPGRADE: [(&str, &str); 4] = [
    ("upgrade", "websocket"),
    ("connection", "keep-alive, Upgrade"),
    ("sec-websocket-version", "13"),
    ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
];

#[test]
fn recognises_an_upgrade_request() {
    let headers = request(&UPGRADE);
    assert_eq!(
        upgrade_key(&Method::GET, Version::HTTP_11, &headers).unwrap(),
        "dGhlIHNhbXBsZSBub25jZQ=="
    );
    assert!(upgrade_key(&Method::POST, Version::HTTP_11, &headers).is_none());
    assert!(upgrade_key(&Method::GET, Version::HTTP_2, &headers).is_none());
    assert!(upgrade_key(&Method::GET, Version::HTTP_10, &headers).is_none());
    for (missing, pair) in UPGRADE.iter().enumerate() {
        let mut pairs = UPGRADE.to_vec();
        pairs.remove(missing);
        assert!(
            upgrade_key(&Method::GET, Version::HTTP_11, &request(&pairs)).is_none(),
            "without {pair:?}"
        );
    }
    let mut old = UPGRADE.to_vec();
    old[2] = ("sec-websocket-version", "8");
    assert!(upgrade_key(&Method::GET, Version::HTTP_11, &request(&old)).is_none());
}

#[tokio::test(start_paused = true)]
async fn the_rate_bucket_allows_a_seconds_burst_then_the_rate() {
    let mut bucket = Bucket::new(10);
    assert!((0..10).all(|_| bucket.take()));
    assert!(!bucket.take());
    tokio::time::advance(Duration::from_millis(100)).await;
    assert!(bucket.take());
    assert!(!bucket.take());
}

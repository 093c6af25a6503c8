//! `examples/embed.rs` (built by `cargo test`) runs and succeeds: the
//! gateway mounted as a tower Service in another hyper server, applying
//! the listeners' client-header rules to the peer the embedder gives it
//! (a forged `X-Client-Subject` never reaches the app; `X-Real-IP` is the
//! peer's address unless the peer is a trusted proxy), and serving the way
//! the listeners do: a server-sent event stream, the compression layer,
//! and the observer's metrics.

#![allow(clippy::unwrap_used, clippy::expect_used)] // in tests a failed unwrap is a failed test

#[test]
fn the_embed_example_serves_a_request() {
    // Tests run from target/<profile>/deps; examples are built beside it.
    let deps = std::env::current_exe().unwrap();
    let example = deps
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join("embed");
    assert!(example.exists(), "{} not built", example.display());
    let out = std::process::Command::new(&example).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.trim().lines().collect();
    assert_eq!(
        lines[..3],
        [
            "200 OK Hello, World!",
            "client: x-real-ip=127.0.0.1 x-client-subject=",
            "trusted proxy: x-real-ip=203.0.113.7 x-client-subject=",
        ]
    );
    assert!(lines[3].starts_with("sse: id: "), "{stdout}");
    assert_eq!(lines[4], "compressed: 200 OK gzip", "{stdout}");
    assert_eq!(lines[5], "metrics: hello counted yes", "{stdout}");
}

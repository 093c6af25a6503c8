//! `rpcgate --config FILE` as a child process: started from config text,
//! ready once it prints its listening line, signalled with `kill`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// Awaits `f` for at most 20 s, panicking with `what` past that.
pub async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .unwrap_or_else(|_| panic!("{what} within 20 s"))
}

/// A running gateway process.
pub struct GatewayChild {
    pub child: Child,
    pub http: SocketAddr,
    pub admin: Option<SocketAddr>,
    /// Its stdout after the banner (reload outcomes come here).
    pub lines: Lines<BufReader<ChildStdout>>,
    /// The config file it was started with.
    pub file: PathBuf,
}

impl GatewayChild {
    /// Writes `config` to a file named after `name` and starts the gateway
    /// on it, with `args` after `--config FILE`; returns once it listens.
    pub async fn start(name: &str, config: &str, args: &[&str]) -> Self {
        Self::start_with_env(name, config, args, &[]).await
    }

    /// [`Self::start`] with environment variables `env` set.
    pub async fn start_with_env(
        name: &str,
        config: &str,
        args: &[&str],
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Self {
        let dir = std::env::temp_dir().join(format!("rpcgate-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("rpcgate.toml");
        std::fs::write(&file, config).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_rpcgate"))
            .arg("--config")
            .arg(&file)
            .args(["--log-level", "error"])
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut admin = None;
        // Readiness: the http line is printed last, once everything listens.
        let http = loop {
            let line = bounded("the banner", lines.next_line())
                .await
                .unwrap()
                .unwrap();
            if let Some(a) = line.strip_prefix("rpcgate admin on http://") {
                admin = Some(a.parse().unwrap());
            }
            if let Some(h) = line.strip_prefix("rpcgate listening on http://") {
                break h.parse().unwrap();
            }
        };
        Self {
            child,
            http,
            admin,
            lines,
            file,
        }
    }

    /// Sends `signal` (`TERM`, `HUP`...).
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().unwrap().to_string();
        let sent = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap();
        assert!(sent.success());
    }

    /// Waits (bounded) for the process to exit; panics unless it exits 0,
    /// with its stderr.
    pub async fn exits_cleanly(&mut self) {
        let status = bounded("the gateway to exit", self.child.wait())
            .await
            .unwrap();
        if !status.success() {
            let mut stderr = String::new();
            if let Some(mut pipe) = self.child.stderr.take() {
                let _ = tokio::io::AsyncReadExt::read_to_string(&mut pipe, &mut stderr).await;
            }
            panic!("the gateway exited with {status}: {stderr}");
        }
    }

    /// Replaces the config file with `config`, sends SIGHUP, and returns
    /// the line the gateway prints about it.
    pub async fn reload(&mut self, config: &str) -> String {
        std::fs::write(&self.file, config).unwrap();
        self.signal("HUP");
        bounded("the reload outcome", self.lines.next_line())
            .await
            .unwrap()
            .unwrap()
    }
}

/// `rpcgate demo-app NAME [--app-version VERSION]` as a child process on
/// `listen`, publishing through `locators` (tried in order); returns once
/// it prints its address (it publishes right after). Killed when dropped.
pub async fn demo_app(
    name: &str,
    version: Option<&str>,
    listen: &str,
    locators: &[SocketAddr],
) -> (Child, SocketAddr) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_rpcgate"));
    command.args(["demo-app", name, "--listen", listen]);
    if let Some(version) = version {
        command.args(["--app-version", version]);
    }
    for locator in locators {
        command.args(["--locator", &locator.to_string()]);
    }
    let mut child = command
        .args(["--log-level", "error"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the rpcgate binary runs as a demo app");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = bounded("the app's listening line", async {
        loop {
            let line = lines.next_line().await.unwrap().expect("a listening line");
            if let Some((_, addr)) = line.split_once(" listening on ") {
                break addr.trim().parse().unwrap();
            }
        }
    })
    .await;
    (child, addr)
}

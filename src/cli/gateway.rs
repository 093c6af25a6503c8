//! The gateway: with `--config`, against a real cluster and reloaded on
//! SIGHUP; without, the standalone default and its start-up banner.

use std::net::SocketAddr;
use std::path::PathBuf;

use rpcgate::config::Config;
use rpcgate::gateway::{RunningGateway, Standalone};
use rpcgate::systemd;

use super::signals::{Signal, Signals, announce_reload};

/// The gateway's address flags; they override the file, on start and on
/// every reload.
pub(crate) struct GatewayFlags {
    pub(crate) listen: Option<SocketAddr>,
    pub(crate) admin: Option<SocketAddr>,
    pub(crate) locators: Vec<SocketAddr>,
    pub(crate) pool_size: Option<u16>,
    pub(crate) otlp_endpoint: Option<String>,
    /// Standalone: the embedded locator's admin address.
    pub(crate) locator_admin: Option<SocketAddr>,
    /// Standalone: the admin token file.
    pub(crate) admin_token_file: Option<PathBuf>,
}

impl GatewayFlags {
    fn apply(&self, config: &mut Config, from_file: bool) {
        if self.otlp_endpoint.is_some() {
            config.tracing.otlp_endpoint.clone_from(&self.otlp_endpoint);
        }
        if let Some(size) = self.pool_size {
            config.pool.size = usize::from(size);
        }
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        if self.admin.is_some() {
            config.admin = self.admin;
        }
        // Standalone, the first `--locator` is where the embedded one listens.
        if from_file && !self.locators.is_empty() {
            config.locators.clone_from(&self.locators);
        }
    }
}

/// SIGHUP in `--config` mode: reads the file again and applies it.
fn reload_gateway(gateway: &RunningGateway, path: &std::path::Path, flags: &GatewayFlags) {
    announce_reload(
        Config::load(path)
            .map_err(|e| e.to_string())
            .and_then(|mut config| {
                flags.apply(&mut config, true);
                gateway.reload(config)
            }),
    );
}

pub(crate) async fn run_gateway(file: Option<PathBuf>, flags: GatewayFlags) -> Result<(), String> {
    rpcgate::metrics::install_prometheus()?;
    let mut config = match &file {
        Some(path) => Config::load(path).map_err(|e| e.to_string())?,
        None => Config::default(),
    };
    flags.apply(&mut config, file.is_some());
    if file.is_some() && (flags.locator_admin.is_some() || flags.admin_token_file.is_some()) {
        return Err("--locator-admin and --admin-token-file are for the standalone default; with --config, set admin_token_file in the file".into());
    }
    if let Some(path) = &file {
        let listen = config.listen;
        let (gateway, locator) = RunningGateway::start_remote(config)
            .await
            .map_err(|e| format!("cannot start the gateway on {listen}: {e}"))?;
        // Before announcing readiness: a SIGHUP sent right after it must
        // find its handler (the default action would end the process).
        let mut signals = Signals::new(true)?;
        if let Some(tls) = gateway.tls_addr {
            println!("rpcgate listening on https://{tls}");
        }
        if let Some(admin) = gateway.admin_addr {
            println!("rpcgate admin on http://{admin}");
        }
        // Printed last: the line a supervisor or test waits for.
        println!("rpcgate listening on http://{}", gateway.addr);
        systemd::notify(systemd::State::Ready);
        while let Signal::Reload = signals.next().await {
            systemd::notify(systemd::State::Reloading);
            reload_gateway(&gateway, path, &flags);
            systemd::notify(systemd::State::Ready);
        }
        systemd::notify(systemd::State::Stopping);
        let report = gateway.shutdown().await;
        locator.shutdown().await;
        return shutdown_outcome(report);
    }
    let locator_addr = flags
        .locators
        .first()
        .copied()
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 10053)));
    let token_file = match flags.admin_token_file.clone() {
        Some(file) => file,
        None => rpcgate::gateway::standalone_token_path()
            .ok_or("$HOME is not set: give --admin-token-file")?,
    };
    let token = rpcgate::gateway::standalone_token(&token_file)?;
    let locator_admin = flags
        .locator_admin
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 10054)));
    let standalone =
        Standalone::start_admin(config, locator_addr, Some(locator_admin), Some(token))
            .await
            .map_err(|e| format!("cannot start the standalone gateway: {e}"))?;
    let http = standalone.gateway.addr;
    let mut signals = Signals::new(false)?;
    println!(
        "rpcgate {} standalone: gateway http://{http}",
        env!("CARGO_PKG_VERSION")
    );
    if let Some(admin) = standalone.gateway.admin_addr {
        println!("  admin   http://{admin}  (/ping /health /ready /metrics /pools /config)");
    }
    println!(
        "  locator {}  (routing group `canary`: echo-v1 weight 3, echo-v2 weight 1)",
        standalone.locator.addr
    );
    let locator_admin = standalone.locator.admin_addr;
    if let Some(admin) = locator_admin {
        println!("  locator admin http://{admin}  (GET /groups, PUT /groups/NAME)");
    }
    // `~/...` when under $HOME, as the README's curl line writes it.
    let token_shown = std::env::var_os("HOME")
        .and_then(|home| {
            token_file
                .strip_prefix(home)
                .ok()
                .map(|p| format!("~/{}", p.display()))
        })
        .unwrap_or_else(|| token_file.display().to_string());
    println!(
        "  token   {}  (admin writes: Authorization: Bearer TOKEN)",
        token_file.display()
    );
    println!(
        "  apps    {}",
        standalone
            .apps
            .iter()
            .map(|a| a.name())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!();
    println!("Try:");
    println!("  curl -i http://{http}/hello/http/");
    println!("  curl -s http://{http}/echo/http/some/path?x=1 -d 'hello'");
    println!("  curl -N http://{http}/stream/http/?chunks=5&delay_ms=300");
    println!("  curl -i http://{http}/slow/http/?delay_ms=2000");
    println!(
        "  curl -N 'http://{http}/ticker/http/?interval_ms=500'   # server-sent events, the app's clock"
    );
    println!(
        "  head -c 5000000 /dev/urandom | curl -T - -X POST http://{http}/upload/http/   # a streamed upload"
    );
    println!(
        "  websocat ws://{http}/chat/http/rooms/lobby   # WebSocket chat: every message to everyone in the room"
    );
    println!("  open http://{http}/chat/http/ in two tabs   # the chat room and the SSE ticker");
    if let Some(admin) = standalone.gateway.admin_addr {
        println!("  open http://{admin}/ui   # live rates, shares against weights, errors");
    }
    println!("  curl -i 'http://{http}/fail/http/?category=43&code=7&message=boom'");
    println!(
        "  curl -si http://{http}/canary/http/ | grep -i x-app-version   # v1 exactly 3 in 4 times"
    );
    println!(
        "  curl -si -H 'X-Cocaine-Sticky: user-42' http://{http}/canary/http/ | grep -i x-app-version   # always the same version"
    );
    if let Some(admin) = standalone.gateway.admin_addr {
        println!(
            "  curl -s http://{admin}/pools; curl -s http://{admin}/metrics | grep canary   # the split per version"
        );
    }
    if let Some(admin) = locator_admin {
        println!(
            "  curl -s -X PUT -H \"Authorization: Bearer $(cat {token_shown})\" http://{admin}/groups/canary -d '{{\"echo-v1\": 1, \"echo-v2\": 1}}'"
        );
    }
    println!(
        "  curl -i -H 'X-Cocaine-Service: echo' -H 'X-Cocaine-Event: http' http://{http}/any/uri"
    );
    println!("  curl --http2-prior-knowledge -i http://{http}/hello/http/");
    println!("Ctrl-C stops it.");
    systemd::notify(systemd::State::Ready);
    signals.next().await;
    systemd::notify(systemd::State::Stopping);
    shutdown_outcome(standalone.shutdown().await)
}

/// Exit 0 after a clean shutdown; otherwise one line saying what was cut.
fn shutdown_outcome(report: rpcgate::gateway::ShutdownReport) -> Result<(), String> {
    if report.is_clean() {
        return Ok(());
    }
    Err(format!(
        "shutdown deadline passed: cut {} request(s) on {} connection(s){}",
        report.cut_requests,
        report.cut_connections,
        if report.backends_cut {
            "; backend connections abandoned"
        } else {
            ""
        }
    ))
}

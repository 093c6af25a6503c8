//! The `rpcgate` binary: parses the command line, installs logging, and
//! runs the library's components until a signal stops them.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use rpcgate::app::demo;
use rpcgate::config::Config;
use rpcgate::gateway::{RunningGateway, Standalone};
use rpcgate::locator::{LocatorConfig, RunningLocator};
use rpcgate::systemd;
use tokio::signal::unix::{SignalKind, signal};

/// The binary uses mimalloc; the library leaves the allocator to its host.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// rpcgate: an HTTP to Cocaine v12 msgpack-RPC gateway, with its own
/// locator and demo apps.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Log level: error, warn, info, debug or trace.
    #[arg(long, global = true, default_value = "info", env = "RPCGATE_LOG")]
    log_level: tracing::Level,

    /// Run against a real cluster with this config file (TOML; every key is
    /// documented in config/rpcgate.toml). Without it, rpcgate runs the
    /// standalone default: gateway, embedded locator and demo apps.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// HTTP listen address; overrides `listen`. [default: 127.0.0.1:8080]
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Admin listen address; overrides `admin`. [default: 127.0.0.1:9090]
    #[arg(long, value_name = "ADDR")]
    admin: Option<SocketAddr>,
    /// Locator to use (repeat for several); overrides `locators`. In
    /// standalone mode, where the embedded locator listens.
    /// [default: 127.0.0.1:10053]
    #[arg(long = "locator", value_name = "ADDR")]
    locators: Vec<SocketAddr>,
    /// Connections kept per service; overrides `pool.size`. [default: 32]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pool_size: Option<u16>,
    /// Export OpenTelemetry spans to this OTLP/HTTP collector
    /// (`http://host:port[/path]`); overrides `tracing.otlp_endpoint`.
    /// Needs a restart to change. [default: off]
    #[arg(long, value_name = "URL", value_parser = rpcgate::config::otlp_endpoint)]
    otlp_endpoint: Option<String>,
    /// Standalone only: where the embedded locator's admin API listens
    /// (GET/PUT /groups...). [default: 127.0.0.1:10054]
    #[arg(long, value_name = "ADDR")]
    locator_admin: Option<SocketAddr>,
    /// Standalone only: the token file both admin APIs' writes need as
    /// `Authorization: Bearer TOKEN`. [default: $HOME/.rpcgate/admin.token,
    /// created if missing]
    #[arg(long, value_name = "FILE")]
    admin_token_file: Option<PathBuf>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a Cocaine locator (PROTOCOL.md §3): resolve, publish, routing
    /// groups. SIGHUP reloads the config file; SIGTERM or SIGINT stops it.
    Locator(LocatorArgs),
    /// Run one of the demo apps (echo, hello, stream, slow, fail, ticker) and publish
    /// it to a locator. SIGTERM or SIGINT stops it gracefully.
    DemoApp(DemoAppArgs),
    /// Ask a locator where a service or routing group resolves; with
    /// --count, how the picks split over many resolves.
    Resolve(ResolveArgs),
    /// Step a routing group's weights towards a canary member, judging
    /// each step on what the gateways saw; promote it (exit 0) or roll it
    /// back (exit 1). Bad input exits 2. See docs/rollout.md.
    Rollout(rpcgate::rollout::RolloutArgs),
    /// Validate a gateway config file; exit non-zero with the reason.
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
struct ResolveArgs {
    /// The service or routing-group name.
    name: String,
    /// The locator to ask.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:10053")]
    locator: SocketAddr,
    /// A seed for a consistent routing-group pick (as `X-Cocaine-Sticky`).
    #[arg(long)]
    seed: Option<String>,
    /// Resolve this many times and print how the endpoints split.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    count: u32,
}

#[derive(Debug, clap::Args)]
struct LocatorArgs {
    /// The config file (TOML; every key is documented in config/locator.toml).
    /// Without one the locator starts empty: apps publish themselves.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to serve the locator protocol on; overrides `listen`.
    /// [default: 127.0.0.1:10053]
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Address of the admin HTTP API (weights, reload); overrides `admin`.
    /// Off loopback it needs an admin token.
    #[arg(long, value_name = "ADDR")]
    admin: Option<SocketAddr>,
    /// File holding the token that admin writes (PUT, POST, DELETE) need
    /// as `Authorization: Bearer TOKEN`; overrides `admin_token_file`. Must
    /// not be readable by everyone.
    #[arg(long, value_name = "FILE")]
    admin_token_file: Option<PathBuf>,
    /// The uuid `uuid()` reports; overrides `uuid`. [default: random]
    #[arg(long)]
    uuid: Option<String>,
    /// An etcd endpoint (http:// or https://host:port) to share services and routing
    /// groups with other locators through; repeat for several. Overrides
    /// `cluster.etcd` (the rest of `[cluster]` keeps its file values or
    /// defaults).
    #[arg(long = "etcd", value_name = "URL")]
    etcd: Vec<String>,
    /// The CA (PEM) that etcd's certificate must chain to, for https://
    /// endpoints; overrides `cluster.etcd_ca_file`.
    #[arg(long, value_name = "FILE")]
    etcd_ca_file: Option<PathBuf>,
    /// A client certificate (PEM) for etcd's --client-cert-auth; overrides
    /// `cluster.etcd_cert_file`. Needs --etcd-key-file.
    #[arg(long, value_name = "FILE")]
    etcd_cert_file: Option<PathBuf>,
    /// The client certificate's key (PEM); overrides `cluster.etcd_key_file`.
    #[arg(long, value_name = "FILE")]
    etcd_key_file: Option<PathBuf>,
    /// The etcd user to authenticate as; overrides `cluster.etcd_user`.
    /// Needs --etcd-password-file.
    #[arg(long, value_name = "NAME")]
    etcd_user: Option<String>,
    /// The file holding the etcd user's password (not world-readable);
    /// overrides `cluster.etcd_password_file`.
    #[arg(long, value_name = "FILE")]
    etcd_password_file: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct DemoAppArgs {
    /// Which app: echo, hello, stream, slow, fail, ticker, upload or chat.
    #[arg(value_parser = demo::NAMES)]
    name: String,
    /// Address to serve the app protocol on (port 0 picks a free one).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Locator to publish to; repeat for several, tried in order. Without
    /// one the app is not published.
    #[arg(long, value_name = "ADDR")]
    locator: Vec<SocketAddr>,
    /// A version tag: the app is published as NAME-TAG and answers with an
    /// `X-App-Version: TAG` header (run echo twice, with v1 and v2, to see
    /// traffic shift between versions of a routing group).
    #[arg(long = "app-version", value_name = "TAG")]
    app_version: Option<String>,
    /// Requests served at once; past it, "queue is full".
    #[arg(long, default_value_t = rpcgate::app::DEFAULT_CONCURRENCY)]
    concurrency: usize,
    /// The IP published to the locator. [default: the listen IP, or
    /// 127.0.0.1 when listening on an unspecified address]
    #[arg(long, value_name = "IP")]
    advertise: Option<IpAddr>,
}

/// Task polls between two looks at the I/O and timer drivers (tokio's
/// default is 61). The gateway's tasks poll for microseconds, so looking
/// less often saves epoll calls and driver work without delaying events
/// noticeably: measured side by side under `benches/load.sh`'s load, 128
/// gave +3% requests per second (256 and 1024 about the same, 16 -13%).
const EVENT_INTERVAL: u32 = 128;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                print!("{e}");
                return ExitCode::SUCCESS;
            }
            let text = e.to_string();
            let line = text.lines().next().unwrap_or("invalid arguments");
            eprintln!("rpcgate: {}", line.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };
    {
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::util::SubscriberInitExt;
        // h2 warns once per hostile HTTP/2 connection (rapid reset, stray
        // PING acks): a flood of them would flood the log. The gateway logs
        // those closes itself, rate-limited; h2's errors still show.
        let quiet_h2 = tracing_subscriber::filter::Targets::new()
            .with_target("h2", tracing_subscriber::filter::LevelFilter::ERROR)
            .with_default(tracing_subscriber::filter::LevelFilter::TRACE);
        // The level can change live: `PUT /log-level` on the admin API.
        let (level, handle) = tracing_subscriber::reload::Layer::new(
            tracing_subscriber::filter::LevelFilter::from_level(cli.log_level),
        );
        tracing_subscriber::registry()
            .with(level)
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                    .with_writer(std::io::stderr),
            )
            .with(quiet_h2)
            .init();
        rpcgate::admin::set_log_level_control(Box::new(move |wanted| {
            if let Some(wanted) = wanted {
                let level: tracing_subscriber::filter::LevelFilter =
                    wanted.parse().map_err(|_| {
                        format!(
                            "`{wanted}` is not a log level (error, warn, info, debug, trace, off)"
                        )
                    })?;
                handle.reload(level).map_err(|e| e.to_string())?;
                tracing::warn!(%level, "log level changed through the admin API");
            }
            handle
                .clone_current()
                .map(|level| level.to_string().to_ascii_lowercase())
                .ok_or_else(|| "the log level is not available".to_owned())
        }));
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .event_interval(EVENT_INTERVAL)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("rpcgate: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Some(Command::Locator(args)) => run_locator(args).await,
            Some(Command::DemoApp(args)) => run_demo_app(args).await,
            Some(Command::Resolve(args)) => run_resolve(args).await,
            Some(Command::Rollout(args)) => std::process::exit(rpcgate::rollout::run(args).await),
            Some(Command::CheckConfig { file }) => {
                let config = Config::load(&file).map_err(|e| e.to_string())?;
                if let Some(tls) = &config.tls {
                    // The certificates must load too (and the client CA).
                    rpcgate::tls::server_config(tls).map_err(|e| e.to_string())?;
                }
                println!("{}: ok", file.display());
                Ok(())
            }
            None => {
                let flags = GatewayFlags {
                    listen: cli.listen,
                    admin: cli.admin,
                    locators: cli.locators,
                    pool_size: cli.pool_size,
                    otlp_endpoint: cli.otlp_endpoint,
                    locator_admin: cli.locator_admin,
                    admin_token_file: cli.admin_token_file,
                };
                run_gateway(cli.config, flags).await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("rpcgate: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run_locator(args: LocatorArgs) -> Result<(), String> {
    let mut config = match &args.config {
        Some(path) => LocatorConfig::load(path).map_err(|e| e.to_string())?,
        None => LocatorConfig::default(),
    };
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if args.admin.is_some() {
        config.admin = args.admin;
    }
    if let Some(file) = &args.admin_token_file {
        config.admin_token = Some(
            rpcgate::admin::Token::load(file).map_err(|e| format!("--admin-token-file: {e}"))?,
        );
    }
    if let Some(reason) = config.admin_exposure() {
        return Err(format!("locator admin: {reason}"));
    }
    if args.uuid.is_some() {
        config.uuid = args.uuid;
    }
    if !args.etcd.is_empty() {
        match &mut config.cluster {
            Some(cluster) => cluster.etcd = args.etcd,
            None => config.cluster = Some(rpcgate::locator::ClusterConfig::new(args.etcd)),
        }
    }
    let security_flags = [
        args.etcd_ca_file.is_some(),
        args.etcd_cert_file.is_some(),
        args.etcd_key_file.is_some(),
        args.etcd_user.is_some(),
        args.etcd_password_file.is_some(),
    ];
    if let Some(cluster) = &mut config.cluster {
        let security = &mut cluster.security;
        security.ca_file = args.etcd_ca_file.or(security.ca_file.take());
        security.cert_file = args.etcd_cert_file.or(security.cert_file.take());
        security.key_file = args.etcd_key_file.or(security.key_file.take());
        security.user = args.etcd_user.or(security.user.take());
        security.password_file = args.etcd_password_file.or(security.password_file.take());
        check_etcd(cluster).await?;
    } else if security_flags.contains(&true) {
        return Err("the --etcd-* flags need --etcd or a [cluster] section".into());
    }
    // The admin API's /metrics (the cluster store's state among them).
    rpcgate::metrics::install_prometheus()?;
    let listen = config.listen;
    let locator = RunningLocator::start(config, args.config.clone())
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    // Before announcing readiness: a signal sent right after it must find
    // its handler (SIGHUP's default action would end the process).
    let mut signals = Signals::new(true)?;
    // Scripts and tests read these lines to find the bound ports.
    println!("locator listening on {}", locator.addr);
    if let Some(admin) = locator.admin_addr {
        println!("admin listening on {admin}");
    }
    while let Signal::Reload = signals.next().await {
        announce_reload(
            locator
                .reload()
                .map(|()| Vec::new())
                .map_err(|e| e.to_string()),
        );
    }
    locator.shutdown().await;
    Ok(())
}

/// Before serving: builds the etcd client (flags and file together) and
/// makes one read. A setting that retrying cannot fix (etcd's certificate
/// not trusted, ours refused, bad credentials, no rights) stops the
/// locator with one line; etcd merely unreachable does not (the locator
/// serves alone and keeps trying, as it does when etcd goes away later).
async fn check_etcd(cluster: &rpcgate::locator::ClusterConfig) -> Result<(), String> {
    let client =
        rpcgate::locator::cluster::EtcdClient::with_security(&cluster.etcd, &cluster.security)
            .map_err(|e| format!("{e} (or the matching --etcd flag)"))?;
    match client.check(&format!("{}/", cluster.prefix)).await {
        Ok(()) => Ok(()),
        Err(e) if e.is_misconfiguration() => {
            Err(format!("etcd at {}: {e}", cluster.etcd.join(", ")))
        }
        Err(e) => {
            tracing::warn!(error = %e, "etcd not reachable yet; serving alone and retrying");
            Ok(())
        }
    }
}

async fn run_demo_app(args: DemoAppArgs) -> Result<(), String> {
    let Some(mut app) = demo::build(&args.name, args.app_version.as_deref()) else {
        return Err(format!("unknown demo app `{}`", args.name));
    };
    app = app.concurrency(args.concurrency);
    if let Some(ip) = args.advertise {
        app = app.advertise(ip);
    }
    let running = app
        .bind(args.listen, args.locator)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let mut signals = Signals::new(false)?;
    println!("app {} listening on {}", running.name(), running.addr);
    signals.next().await;
    running.stop().await;
    Ok(())
}

async fn run_resolve(args: ResolveArgs) -> Result<(), String> {
    use rpcgate::mux::{self, Invocation, MuxConfig};
    use rpcgate::proto::locator::{ResolveReply, ResolveRequest, method};
    use rpcgate::proto::{Message, PrimitiveEvent, Protocol};
    use std::collections::BTreeMap;

    let stream = tokio::net::TcpStream::connect(args.locator)
        .await
        .map_err(|e| format!("cannot reach the locator at {}: {e}", args.locator))?;
    let (handle, connection) =
        mux::from_tcp(stream, MuxConfig::default()).map_err(|e| e.to_string())?;
    tokio::spawn(connection.run());
    let request = ResolveRequest {
        name: args.name.clone(),
        seed: args.seed.map(Into::into),
    };
    let mut split: BTreeMap<String, u32> = BTreeMap::new();
    for _ in 0..args.count {
        let invocation = Invocation::new(
            Message::new(method::RESOLVE, request.to_args()),
            Protocol::Terminal,
            Protocol::Primitive,
        );
        let mut channel = handle.open(invocation).await.map_err(|e| e.to_string())?;
        let frame = match channel.receiver.recv().await {
            Some(Ok(frame)) => frame,
            Some(Err(e)) => return Err(format!("locator connection failed: {e}")),
            None => return Err("the locator sent no reply".into()),
        };
        let reply = match frame.primitive_event().map_err(|e| e.to_string())? {
            PrimitiveEvent::Value(args) => {
                ResolveReply::decode_args(&args).map_err(|e| e.to_string())?
            }
            PrimitiveEvent::Error(e) => return Err(format!("`{}`: {e}", args.name)),
        };
        let endpoints: Vec<_> = reply
            .endpoints
            .iter()
            .map(|e| format!("{}:{}", e.host, e.port))
            .collect();
        *split.entry(endpoints.join(",")).or_default() += 1;
    }
    for (endpoints, n) in &split {
        if args.count == 1 {
            println!("{endpoints}");
        } else {
            println!(
                "{endpoints} {n} ({:.1}%)",
                f64::from(*n) * 100.0 / f64::from(args.count)
            );
        }
    }
    Ok(())
}

/// What a signal asks the process to do.
enum Signal {
    /// SIGTERM or SIGINT.
    Stop,
    /// SIGHUP (only when asked for: otherwise SIGHUP keeps its default).
    Reload,
}

/// The signals a long-running command listens to, registered once so none
/// is lost between two waits.
struct Signals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
    hangup: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new(reload: bool) -> Result<Self, String> {
        let listen = |kind| signal(kind).map_err(|e| e.to_string());
        Ok(Self {
            terminate: listen(SignalKind::terminate())?,
            interrupt: listen(SignalKind::interrupt())?,
            hangup: if reload {
                Some(listen(SignalKind::hangup())?)
            } else {
                None
            },
        })
    }

    async fn next(&mut self) -> Signal {
        let hangup = async {
            match &mut self.hangup {
                Some(hangup) => hangup.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = self.terminate.recv() => Signal::Stop,
            _ = self.interrupt.recv() => Signal::Stop,
            _ = hangup => Signal::Reload,
        }
    }
}

/// The gateway's address flags; they override the file, on start and on
/// every reload.
struct GatewayFlags {
    listen: Option<SocketAddr>,
    admin: Option<SocketAddr>,
    locators: Vec<SocketAddr>,
    pool_size: Option<u16>,
    otlp_endpoint: Option<String>,
    /// Standalone: the embedded locator's admin address.
    locator_admin: Option<SocketAddr>,
    /// Standalone: the admin token file.
    admin_token_file: Option<PathBuf>,
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

/// Says what a SIGHUP reload did, in the log and as one stdout line that
/// scripts and tests read: reloaded, reloaded but these keys need a
/// restart, or refused with the reason (the running config stays).
fn announce_reload(outcome: Result<Vec<&'static str>, String>) {
    match outcome {
        Ok(restart) if restart.is_empty() => {
            tracing::info!("config reloaded");
            println!("config reloaded");
        }
        Ok(restart) => {
            let keys = restart.join(", ");
            tracing::warn!(keys, "config reloaded; these keys need a restart to apply");
            println!("config reloaded; needs a restart to apply: {keys}");
        }
        Err(e) => {
            tracing::error!(error = %e, "config refused; keeping the running config");
            println!("config refused: {e}");
        }
    }
}

async fn run_gateway(file: Option<PathBuf>, flags: GatewayFlags) -> Result<(), String> {
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

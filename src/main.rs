//! The `rpcgate` binary: parses the command line, installs logging, and
//! runs the library's components until a signal stops them.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use rpcgate::app::demo;
use rpcgate::locator::{LocatorConfig, RunningLocator};
use tokio::signal::unix::{SignalKind, signal};

/// rpcgate: an HTTP to Cocaine v12 msgpack-RPC gateway, with its own
/// locator and demo apps.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Log level: error, warn, info, debug or trace.
    #[arg(long, global = true, default_value = "info", env = "RPCGATE_LOG")]
    log_level: tracing::Level,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a Cocaine locator (PROTOCOL.md §3): resolve, publish, routing
    /// groups. SIGHUP reloads the config file; SIGTERM or SIGINT stops it.
    Locator(LocatorArgs),
    /// Run one of the demo apps (echo, hello, stream, slow, fail) and publish
    /// it to a locator. SIGTERM or SIGINT stops it gracefully.
    DemoApp(DemoAppArgs),
    /// Ask a locator where a service or routing group resolves; with
    /// --count, how the picks split over many resolves.
    Resolve(ResolveArgs),
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
    #[arg(long, value_name = "ADDR")]
    admin: Option<SocketAddr>,
    /// The uuid `uuid()` reports; overrides `uuid`. [default: random]
    #[arg(long)]
    uuid: Option<String>,
}

#[derive(Debug, clap::Args)]
struct DemoAppArgs {
    /// Which app: echo, hello, stream, slow or fail.
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
    tracing_subscriber::fmt()
        .with_max_level(cli.log_level)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
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
            None => {
                println!(
                    "rpcgate {}: the gateway and standalone mode are not built yet.\n\
                     Available now: `rpcgate locator` and `rpcgate demo-app` (see --help).",
                    env!("CARGO_PKG_VERSION")
                );
                Ok(())
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
    if args.uuid.is_some() {
        config.uuid = args.uuid;
    }
    let listen = config.listen;
    let locator = RunningLocator::start(config, args.config.clone())
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    // Scripts and tests read these lines to find the bound ports.
    println!("locator listening on {}", locator.addr);
    if let Some(admin) = locator.admin_addr {
        println!("admin listening on {admin}");
    }
    let mut hangup = signal(SignalKind::hangup()).map_err(|e| e.to_string())?;
    let mut terminate = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    loop {
        tokio::select! {
            _ = hangup.recv() => match locator.reload() {
                Ok(()) => println!("config reloaded"),
                Err(e) => {
                    tracing::error!(error = %e, "config refused; keeping the running state");
                    println!("config refused: {e}");
                }
            },
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    locator.shutdown().await;
    Ok(())
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
    println!("app {} listening on {}", running.name(), running.addr);
    let mut terminate = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
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

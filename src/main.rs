//! The `rpcgate` binary: parses the command line, installs logging, and
//! runs the library's components until a signal stops them. Each command's
//! running (flags merged over files, signals, reloads, the start-up lines)
//! is in the binary-only [`cli`] modules.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use rpcgate::config::Config;

use crate::cli::demo_app::{DemoAppArgs, run_demo_app};
use crate::cli::gateway::{GatewayFlags, run_gateway};
use crate::cli::locator::{LocatorArgs, run_locator};
use crate::cli::resolve::{ResolveArgs, run_resolve};

mod cli;

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
    cli::logging::install(cli.log_level);
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

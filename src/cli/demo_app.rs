//! `rpcgate demo-app`: one demo app, published to a locator.

use std::net::{IpAddr, SocketAddr};

use rpcgate::app::demo;

use super::signals::Signals;

#[derive(Debug, clap::Args)]
pub(crate) struct DemoAppArgs {
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

pub(crate) async fn run_demo_app(args: DemoAppArgs) -> Result<(), String> {
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

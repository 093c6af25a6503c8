//! `rpcgate resolve`: where a locator resolves a name, and how the picks
//! split over many resolves.

use std::net::SocketAddr;

#[derive(Debug, clap::Args)]
pub(crate) struct ResolveArgs {
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

pub(crate) async fn run_resolve(args: ResolveArgs) -> Result<(), String> {
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

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
    let split =
        rpcgate::locator::client::resolve_split(args.locator, &args.name, args.seed, args.count)
            .await
            .map_err(|e| e.to_string())?;
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

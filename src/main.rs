//! The `rpcgate` binary: parses the command line and runs the library.

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("--version" | "-V") => {
            println!("rpcgate {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Some("--help" | "-h") | None => {
            println!(
                "rpcgate {}: HTTP to Cocaine v12 gateway.\n\n\
                 This build ships the protocol core (proto + mux) only; the \
                 gateway, locator and demo apps come with the next issues.",
                env!("CARGO_PKG_VERSION")
            );
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("rpcgate: unknown argument `{other}` (try --help)");
            ExitCode::from(2)
        }
    }
}

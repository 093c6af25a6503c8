//! `rpcgate locator`: a Cocaine locator, its flags merged over its config
//! file, reloaded on SIGHUP.

use std::net::SocketAddr;
use std::path::PathBuf;

use rpcgate::locator::{LocatorConfig, RunningLocator};

use super::signals::{Signal, Signals, announce_reload};

#[derive(Debug, clap::Args)]
pub(crate) struct LocatorArgs {
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

pub(crate) async fn run_locator(args: LocatorArgs) -> Result<(), String> {
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

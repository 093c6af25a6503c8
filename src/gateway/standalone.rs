//! The standalone mode: everything `rpcgate` runs with no config (a
//! locator with its admin API, the demo apps and the gateway, all on
//! loopback), and its admin token.

use std::net::SocketAddr;

use super::{RunningGateway, ShutdownReport};
use crate::app::{RunningApp, demo};
use crate::config::Config;
use crate::locator::{LocatorConfig, RemoteLocator, RunningLocator};

/// Everything `rpcgate` runs with no config: a locator, the demo apps, and
/// the gateway, all on loopback.
#[derive(Debug)]
pub struct Standalone {
    /// The gateway.
    pub gateway: RunningGateway,
    /// The embedded locator.
    pub locator: RunningLocator,
    /// The demo apps.
    pub apps: Vec<RunningApp>,
    client: RemoteLocator,
}

/// The non-app methods JSON-RPC may call in the standalone mode: the
/// locator's read-only ones.
pub const STANDALONE_JSONRPC_ALLOW: [&str; 3] =
    ["locator.resolve", "locator.uuid", "locator.cluster"];

/// The routing group the standalone mode runs: echo-v1 (3) and echo-v2 (1).
pub const CANARY: &str = "[groups.canary]\necho-v1 = 3\necho-v2 = 1\n";

impl Standalone {
    /// Starts the embedded locator on `locator_addr`, the demo apps (and
    /// echo-v1/echo-v2 behind the `canary` group), then the gateway. The
    /// embedded locator serves no admin API (see [`Standalone::start_admin`]).
    pub async fn start(config: Config, locator_addr: SocketAddr) -> std::io::Result<Self> {
        Self::start_admin(config, locator_addr, None, None).await
    }

    /// As [`Standalone::start`], with the embedded locator's admin API on
    /// `locator_admin` (if given) and `token` needed by the writes of both
    /// admin APIs, the gateway's and the locator's (the binary's default).
    pub async fn start_admin(
        mut config: Config,
        locator_addr: SocketAddr,
        locator_admin: Option<SocketAddr>,
        token: Option<crate::admin::Token>,
    ) -> std::io::Result<Self> {
        let mut locator_config = LocatorConfig::parse(CANARY, std::path::Path::new("<standalone>"))
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        locator_config.listen = locator_addr;
        locator_config.admin = locator_admin;
        locator_config.admin_token.clone_from(&token);
        if token.is_some() {
            config.admin_token = token;
        }
        let locator = RunningLocator::start(locator_config, None).await?;
        let mut apps = Vec::new();
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        for (name, version) in demo::NAMES
            .iter()
            .map(|n| (*n, None))
            .chain([("echo", Some("v1")), ("echo", Some("v2"))])
        {
            let Some(app) = demo::build(name, version) else {
                continue;
            };
            let app = app.bind(any, vec![locator.addr]).await?;
            app.published().await;
            apps.push(app);
        }
        config.locators = vec![locator.addr];
        // The `upload` demo reads its body as it streams in.
        config
            .services
            .entry("upload".to_owned())
            .or_default()
            .stream_request_body = true;
        // The README's JSON-RPC example asks the locator; only its
        // read-only methods, never `publish` or `routing`.
        config.jsonrpc.allow.extend(
            STANDALONE_JSONRPC_ALLOW
                .iter()
                .map(|method| (*method).to_owned()),
        );
        let (gateway, client) = RunningGateway::start_remote(config).await?;
        Ok(Self {
            gateway,
            locator,
            apps,
            client,
        })
    }

    /// Stops the gateway, then the apps, then the locator.
    pub async fn shutdown(self) -> ShutdownReport {
        let report = self.gateway.shutdown().await;
        self.client.shutdown().await;
        for app in self.apps {
            app.stop().await;
        }
        self.locator.shutdown().await;
        report
    }
}

/// The standalone's admin token file: `$HOME/.rpcgate/admin.token`.
pub fn standalone_token_path() -> Option<std::path::PathBuf> {
    std::env::var_os("HOME")
        .filter(|home| !home.is_empty())
        .map(|home| {
            std::path::PathBuf::from(home)
                .join(".rpcgate")
                .join("admin.token")
        })
}

/// The standalone's admin token: read from `file` if it exists (it must be
/// private, see [`crate::admin::Token::load`]); otherwise created there (its
/// directory 0700 if new, the file 0600) holding 32 random bytes,
/// hex-encoded.
///
/// # Errors
///
/// The file cannot be created or read, or it is readable by everyone.
pub fn standalone_token(file: &std::path::Path) -> Result<crate::admin::Token, String> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if !file.exists() {
        if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let mut secret = [0u8; 32];
        rand::Rng::fill(&mut rand::rng(), &mut secret[..]);
        let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
        let created = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(file)
            .and_then(|mut f| f.write_all(format!("{hex}\n").as_bytes()));
        match created {
            Ok(()) => {}
            // Another process created it first: use that one.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("cannot create {}: {e}", file.display())),
        }
    }
    crate::admin::Token::load(file).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_standalone_token_is_created_private_then_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("rpcgate-sa-token-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let file = dir.join(".rpcgate").join("admin.token");
        let first = standalone_token(&file).unwrap();
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.join(".rpcgate")), 0o700);
        assert_eq!(mode(&file), 0o600);
        assert_eq!(std::fs::read_to_string(&file).unwrap().trim().len(), 64);
        assert_eq!(standalone_token(&file).unwrap(), first, "reused");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(
            standalone_token(&file).is_err(),
            "refused when readable by everyone"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
